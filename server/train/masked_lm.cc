// Masked-LM masking (see masked_lm.h).
#include "server/train/masked_lm.h"

#include <ATen/ATen.h>
#include <ATen/TensorIndexing.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

namespace freezetune::train {
namespace {

// splitmix64 finaliser: decorrelates (seed, row) pairs.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from 53 bits; platform-independent (no std distributions).
double Uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

MlmMasker::MlmMasker(const model::WordPieceTokenizer& tokenizer, MlmMaskingOptions options)
    : options_(options), vocab_size_(tokenizer.vocab_size()) {
  const auto& tokens = tokenizer.tokens();
  special_.assign(tokens.size(), 0);
  continuation_.assign(tokens.size(), 0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == "[MASK]") mask_id_ = static_cast<int64_t>(i);
    if (tokens[i].rfind("##", 0) == 0) continuation_[i] = 1;
  }
  for (int32_t id : {tokenizer.cls_id(), tokenizer.sep_id(), tokenizer.pad_id()}) {
    special_[static_cast<size_t>(id)] = 1;
  }
}

torch::Tensor MlmMasker::Apply(data::Batch& batch, uint64_t seed) const {
  torch::Tensor ids = batch.input_ids.to(at::kLong).contiguous();
  torch::Tensor mask = batch.attention_mask.to(at::kLong).contiguous();
  const int64_t b = ids.size(0), t = ids.size(1);
  torch::Tensor labels = at::full({b, t}, kNotPredicted, at::kLong);
  auto id = ids.accessor<int64_t, 2>();
  auto attend = mask.accessor<int64_t, 2>();
  auto label = labels.accessor<int64_t, 2>();
  const double p = options_.probability;
  for (int64_t r = 0; r < b; ++r) {
    std::mt19937_64 rng(Mix(seed ^ Mix(static_cast<uint64_t>(batch.indices[static_cast<size_t>(r)]))));
    std::vector<int64_t> candidates;
    for (int64_t j = 0; j < t; ++j) {
      const int64_t v = id[r][j];
      if (attend[r][j] == 0 || v < 0 || v >= static_cast<int64_t>(special_.size()) || special_[v]) {
        continue;
      }
      candidates.push_back(j);
    }
    if (candidates.empty()) continue;
    std::vector<int64_t> selected;
    if (!options_.whole_word) {
      for (int64_t j : candidates) {
        if (Uniform(rng) < p) selected.push_back(j);
      }
    } else {
      // Words: a candidate that is not a "##" piece starts one; pieces join
      // the word of the candidate right before them.
      std::vector<std::vector<int64_t>> words;
      for (size_t k = 0; k < candidates.size(); ++k) {
        const int64_t j = candidates[k];
        const bool joins = continuation_[id[r][j]] && !words.empty() && k > 0 &&
                           candidates[k - 1] == j - 1;
        if (joins) {
          words.back().push_back(j);
        } else {
          words.push_back({j});
        }
      }
      for (size_t i = words.size(); i > 1; --i) std::swap(words[i - 1], words[rng() % i]);
      const size_t budget = std::max<size_t>(
          1, static_cast<size_t>(std::llround(p * static_cast<double>(candidates.size()))));
      for (const auto& w : words) {
        if (selected.size() >= budget) break;
        if (selected.size() + w.size() > budget) continue;
        selected.insert(selected.end(), w.begin(), w.end());
      }
    }
    if (selected.empty()) selected.push_back(candidates[rng() % candidates.size()]);
    for (int64_t j : selected) {
      label[r][j] = id[r][j];
      const double u = Uniform(rng);
      if (u < 0.8) {
        id[r][j] = mask_id_;
      } else if (u < 0.9) {
        id[r][j] = static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab_size_));
      }
    }
  }
  batch.input_ids = ids;
  return labels;
}

MaskedLmOutput MaskedLmLoss(model::BertForSequenceClassification& model, const torch::Tensor& hidden,
                            const torch::Tensor& labels, bool count_correct) {
  const torch::Tensor selected = labels.ne(kNotPredicted);
  const torch::Tensor targets = labels.masked_select(selected);
  // [N, H]: the rows of the predicted positions.
  const torch::Tensor rows = hidden.index({selected});
  const torch::Tensor logits = model->MaskedLmLogits(rows);
  MaskedLmOutput out;
  out.tokens = targets.numel();
  out.loss = at::cross_entropy_loss(logits, targets);
  if (count_correct) out.correct = logits.argmax(-1).eq(targets).sum().item<int64_t>();
  return out;
}

uint64_t TrainMaskSeed(int64_t seed, int epoch) {
  return Mix(static_cast<uint64_t>(seed) ^ Mix(0x6d6c6d00ULL + static_cast<uint64_t>(epoch)));
}

uint64_t EvalMaskSeed(int64_t seed) { return Mix(static_cast<uint64_t>(seed) ^ 0xe7a1e7a1e7a1ULL); }

}  // namespace freezetune::train
