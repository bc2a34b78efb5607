// Loading and saving Hugging Face BERT directories:
//   config.json, model.safetensors, vocab.txt, tokenizer_config.json.
// Loads checkpoints saved with or without the "bert." prefix; a checkpoint
// without a classifier gets a fresh head, reported in `newly_initialized`.
// Saving writes every file to a temporary name and renames it, so a crash
// never leaves a half-written model.
//
// Thread safety: the functions share no state; concurrent calls are safe on
// different directories and models. Weights are copied from a read-only
// mmap of model.safetensors straight into the parameters.
#ifndef FREEZETUNE_SERVER_MODEL_HF_CHECKPOINT_H_
#define FREEZETUNE_SERVER_MODEL_HF_CHECKPOINT_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/model/bert.h"
#include "server/model/bert_config.h"
#include "server/model/tokenizer.h"

namespace freezetune::model {

// Reads <dir>/config.json and <dir>/tokenizer_config.json (do_lower_case,
// default true) and <dir>/vocab.txt, without touching the weights.
struct ModelDirInfo {
  BertConfig config;
  bool do_lower_case = true;
  std::string source_dtype;  // "F32", "F16" or "BF16" of model.safetensors
};
absl::StatusOr<ModelDirInfo> InspectModelDir(const std::string& dir);

struct LoadedModel {
  BertConfig config;
  BertForSequenceClassification model{nullptr};
  std::unique_ptr<WordPieceTokenizer> tokenizer;
  std::string source_dtype;
  // As transformers reports them: model parameters the checkpoint lacked
  // (freshly initialised) and checkpoint tensors the model did not use.
  std::vector<std::string> newly_initialized;
  std::vector<std::string> unused;
};

// Loads the directory into a model with `num_labels` outputs. The classifier
// is taken from the checkpoint only when its shape matches; otherwise it is
// freshly initialised (torch's global generator: seed it first). With
// BertHead::kMaskedLm (num_labels ignored) the model is a BertForMaskedLM:
// a checkpoint's cls.predictions.* are loaded (else initialised and listed
// in newly_initialized), a classifier or pooler in it is unused, and the
// tied cls.predictions.decoder.* are skipped.
absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir, int64_t num_labels,
                                         BertHead head = BertHead::kSequenceClassification);

struct SaveOptions {
  std::vector<std::string> label_names;  // id2label / label2id; size == num_labels
  nlohmann::json freeze_plan;            // written as freeze_plan.json when not null
  nlohmann::json metrics;                // written as metrics.json when not null
  std::string dtype = "F32";             // "F32", "F16" or "BF16"
  // Delta outputs (delta_checkpoint.h): the weights file's name, and when
  // not empty, the only parameters written to it.
  std::string weights_file = "model.safetensors";
  std::set<std::string> only_parameters;
};

// Writes a BertForSequenceClassification directory that
// transformers.AutoModelForSequenceClassification.from_pretrained loads
// unchanged (a masked-LM model: a BertForMaskedLM directory, no labels;
// label_names must be empty). Creates `dir` if needed. FAILED_PRECONDITION while the model
// carries LoRA adapters (merge them first).
absl::Status SaveModelDir(const std::string& dir, BertForSequenceClassification& model,
                          const WordPieceTokenizer& tokenizer, const SaveOptions& options);

// Pieces of SaveModelDir that other output formats (PEFT adapters, deltas)
// share.
struct LabelMaps {
  nlohmann::json id2label;  // {"0": "neg", ...}
  nlohmann::json label2id;  // {"neg": 0, ...}
};
// From label names (empty: LABEL_0..K-1); INVALID_ARGUMENT on a count that
// is not num_labels or a duplicate name.
absl::StatusOr<LabelMaps> MakeLabelMaps(const std::vector<std::string>& label_names,
                                        int64_t num_labels);
// Creates `dir` and its parents.
absl::Status CreateOutputDir(const std::string& dir);
// vocab.txt and tokenizer_config.json (do_lower_case, BertTokenizer).
absl::Status SaveTokenizerFiles(const std::string& dir, const WordPieceTokenizer& tokenizer,
                                int64_t model_max_length);
// freeze_plan.json and metrics.json, each when not null.
absl::Status SaveJsonFiles(const std::string& dir, const nlohmann::json& freeze_plan,
                           const nlohmann::json& metrics);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_HF_CHECKPOINT_H_
