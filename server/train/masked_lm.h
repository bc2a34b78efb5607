// Masked-language-model training pieces: the masking of a batch and the
// masked-token loss.
//
// Masking: which tokens of a batch are predicted and what the model sees in
// their place, as BERT pretraining (and Hugging
// Face's DataCollatorForLanguageModeling / ...ForWholeWordMask) does it:
//  - candidates: real tokens (attention mask 1) other than [CLS], [SEP] and
//    [PAD];
//  - token masking: each candidate is selected with probability p;
//    whole-word masking: words (a token and the "##" pieces after it) are
//    taken in random order while the selected tokens stay within
//    max(1, round(p * candidates));
//  - every sequence with a candidate gets at least one selected token (so
//    no batch has an empty loss);
//  - each selected token becomes [MASK] with probability 0.8, a uniformly
//    random vocabulary id with 0.1, and stays as it is with 0.1.
// Deterministic in (seed, dataset row): the draws for a row come from its
// own generator seeded by both, so a resumed run, a rerun and evaluations
// (one fixed seed) see the same masks, whatever the batch composition.
//
// Thread safety: MlmMasker is immutable after construction; Apply only
// touches the batch it is given.
#ifndef FREEZETUNE_SERVER_TRAIN_MASKED_LM_H_
#define FREEZETUNE_SERVER_TRAIN_MASKED_LM_H_

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "server/data/batching.h"
#include "server/model/bert.h"
#include "server/model/tokenizer.h"

namespace freezetune::train {

// Label value of positions that are not predicted (cross-entropy ignores it).
inline constexpr int64_t kNotPredicted = -100;

struct MlmMaskingOptions {
  double probability = 0.15;  // (0, 1)
  bool whole_word = false;
};

class MlmMasker {
 public:
  // `tokenizer` supplies [MASK], the specials and which tokens are "##"
  // continuations; it must have a [MASK] token (checked by the caller).
  MlmMasker(const model::WordPieceTokenizer& tokenizer, MlmMaskingOptions options);

  // Rewrites batch.input_ids in place and returns the labels, int64 [B, T]:
  // the original id at predicted positions, kNotPredicted elsewhere.
  torch::Tensor Apply(data::Batch& batch, uint64_t seed) const;

 private:
  MlmMaskingOptions options_;
  int64_t mask_id_ = 0;
  int64_t vocab_size_ = 0;
  std::vector<uint8_t> special_;       // by id: never selected
  std::vector<uint8_t> continuation_;  // by id: a "##" piece
};

// Cross-entropy over the predicted positions of `labels` ([B, T], from
// MlmMasker::Apply, on the device of `hidden`): the MLM head runs only on
// those rows of `hidden` [B, T, H], not on the whole sequence.
struct MaskedLmOutput {
  torch::Tensor loss;  // scalar, mean over the predicted tokens
  int64_t tokens = 0;  // predicted tokens
  int64_t correct = 0;  // of them, argmax == label (computed only when asked)
};
MaskedLmOutput MaskedLmLoss(model::BertForSequenceClassification& model, const torch::Tensor& hidden,
                            const torch::Tensor& labels, bool count_correct);

// The masking seeds: one per training epoch (a fresh draw each pass) and
// one fixed for evaluation (the same masks at every evaluation).
uint64_t TrainMaskSeed(int64_t seed, int epoch);
uint64_t EvalMaskSeed(int64_t seed);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_MASKED_LM_H_
