// Delta checkpoints: a job's output as only the tensors it changed, pinned to
// the base checkpoint they apply to by the SHA-256 of its files.
//
//   <dir>/delta.json         {"format": "freezetune-delta", "version": 1,
//                             "base": {"name": "<base path or URI>",
//                                      "sha256": {"config.json": "<hex>",
//                                                 "model.safetensors": "<hex>"}},
//                             "tensors": ["classifier.weight", ...]}
//   <dir>/delta.safetensors  those tensors, in the dtype of the job's full
//                            output (the base's)
//   <dir>/config.json        the result's full config (labels included)
//   vocab.txt, tokenizer_config.json, freeze_plan.json, metrics.json
//
// A delta is read together with its base: the base's model.safetensors is
// loaded and the delta's tensors are copied over it. The base's files must
// hash to the recorded values; anything else is refused before a byte of the
// base is used. The base is always a full directory: a job that starts from
// a delta and writes a delta writes the union of both deltas' tensors,
// pinned to the first delta's base.
//
// Thread safety: no shared state; concurrent calls on different directories
// are safe.
#ifndef FREEZETUNE_SERVER_MODEL_DELTA_CHECKPOINT_H_
#define FREEZETUNE_SERVER_MODEL_DELTA_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/hf_checkpoint.h"

namespace freezetune::model {

// The base files a delta pins.
inline const std::vector<std::string>& DeltaBaseFiles() {
  static const auto* files = new std::vector<std::string>{"config.json", "model.safetensors"};
  return *files;
}

struct DeltaManifest {
  std::string base_name;                      // as recorded; informational
  std::map<std::string, std::string> sha256;  // base file -> hex digest
  std::vector<std::string> tensors;
};

// True when `dir` holds a delta.json.
bool IsDeltaDir(const std::string& dir);

// Reads and validates <dir>/delta.json (INVALID_ARGUMENT naming the file).
absl::StatusOr<DeltaManifest> ReadDeltaManifest(const std::string& dir);

// Compares the base directory's files with the manifest. INVALID_ARGUMENT
// prefixed by `field` when a file is missing or its SHA-256 differs, naming
// the file, both digests and the recorded base.
absl::Status VerifyDeltaBase(const DeltaManifest& manifest, const std::string& base_dir,
                             std::string_view field);

// SaveModelDir's directory with only `changed` in delta.safetensors, plus
// delta.json pinning `base_dir` (hashed now) under `base_name`.
// INVALID_ARGUMENT when a name in `changed` is not a model parameter.
absl::Status SaveDeltaDir(const std::string& dir, BertForSequenceClassification& model,
                          const WordPieceTokenizer& tokenizer, const SaveOptions& options,
                          const std::set<std::string>& changed, const std::string& base_dir,
                          const std::string& base_name);

// The config of a delta (its own config.json) and, after VerifyDeltaBase, the
// base's tokenizer settings and stored dtype. With `base_dir` empty (a
// PlanFreeze, which needs only the shapes) the base is not read: the delta's
// own tokenizer_config.json is used and source_dtype is "F32". With a base,
// INVALID_ARGUMENT when the delta's config describes another encoder.
absl::StatusOr<ModelDirInfo> InspectDeltaDir(const std::string& dir, const std::string& base_dir,
                                             std::string_view field);

// Loads the base (LoadModelDir with `num_labels` and `head`) after
// VerifyDeltaBase and copies the delta's tensors over it; a tensor the
// delta supplies is not reported as newly initialised. delta.safetensors is
// untrusted input: its header goes through the safetensors parser, and it is
// INVALID_ARGUMENT when its tensors are not exactly those delta.json lists,
// when a tensor of the model has another shape (a head of another label
// count is skipped, as LoadModelDir does), or when the delta's config.json
// describes another encoder than the base's (only the labels may differ).
absl::StatusOr<LoadedModel> LoadDeltaModelDir(const std::string& dir, const std::string& base_dir,
                                              int64_t num_labels, BertHead head,
                                              std::string_view field);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_DELTA_CHECKPOINT_H_
