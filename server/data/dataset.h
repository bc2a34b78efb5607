// Dataset files -> raw examples -> label ids -> token ids.
// JSONL, RFC 4180 CSV, GLUE-style TSV (no quote processing) and TREC.
// Every malformed record is an error naming the field path, the line number
// and the reason; nothing is skipped silently. Error messages never quote
// file contents beyond the offending field name.
//
// A UTF-8 BOM is dropped; entirely blank lines (CSV: blank records) are
// ignored anywhere in the file; labels are trimmed of surrounding whitespace.
// Thread safety: the functions are pure and thread-safe.
#ifndef FREEZETUNE_SERVER_DATA_DATASET_H_
#define FREEZETUNE_SERVER_DATA_DATASET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/data/uri.h"
#include "server/model/tokenizer.h"

namespace freezetune::data {

struct RawExample {
  std::string text;
  std::optional<std::string> text_pair;
  std::string label;  // as written in the file (string or integer text)
  int64_t line = 0;   // 1-based line in the file
};

// Resolves the format (explicit, else by extension) and parses `content`.
// `field` prefixes errors, e.g. "job.train". With `labelled` false (masked-LM
// text) no label column is read (RawExample::label stays empty) and the
// plain-text format (one example per non-blank line) is allowed; with it
// true, plain text is an error naming the field.
absl::StatusOr<std::vector<RawExample>> ParseDataset(std::string_view content,
                                                     const v1::DatasetSpec& spec,
                                                     std::string_view field, bool labelled = true);

// Reads the URI (see uri.h) and parses it.
absl::StatusOr<std::vector<RawExample>> LoadDataset(const v1::DatasetSpec& spec,
                                                    const UriOptions& uris,
                                                    std::string_view field, bool labelled = true);

// Label names in id order; regression when num_labels == 1.
// Unlabelled (masked LM) when neither: no names and not regression.
struct LabelSpace {
  std::vector<std::string> names;
  bool regression = false;
  int64_t num_labels() const { return regression ? 1 : static_cast<int64_t>(names.size()); }
  bool unlabelled() const { return !regression && names.empty(); }
};

// Derives the label space from the task and the training examples (see
// TaskSpec's comments for the defaults).
absl::StatusOr<LabelSpace> ResolveLabelSpace(const v1::TaskSpec& task,
                                             const std::vector<RawExample>& train,
                                             std::string_view field);

// Labels of `examples` under `labels`, in order: ids for classification (a
// label equal to a name maps to its index; otherwise an integer label must
// lie in [0, K)), targets for regression (finite numbers), nothing for an
// unlabelled space. Errors name the line.
struct MappedLabels {
  std::vector<int64_t> ids;
  std::vector<float> targets;
};
absl::StatusOr<MappedLabels> MapLabels(const std::vector<RawExample>& examples,
                                       const LabelSpace& labels, std::string_view field);

// Tokenized examples. Classification labels are ids in `label_ids`;
// regression targets are in `targets`.
struct EncodedDataset {
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<int32_t>> type_ids;
  std::vector<int64_t> label_ids;
  std::vector<float> targets;
  int64_t size() const { return static_cast<int64_t>(ids.size()); }
};

// Maps labels (error with the line for a label outside the space) and
// tokenizes with truncation to max_length.
absl::StatusOr<EncodedDataset> EncodeDataset(const std::vector<RawExample>& examples,
                                             const LabelSpace& labels,
                                             const model::WordPieceTokenizer& tokenizer,
                                             int max_length, std::string_view field);

}  // namespace freezetune::data

#endif  // FREEZETUNE_SERVER_DATA_DATASET_H_
