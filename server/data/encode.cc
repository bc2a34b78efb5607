// EncodeDataset: label mapping plus WordPiece tokenization. Kept apart from
// dataset.cc so the readers stay free of the tokenizer library.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/data/dataset.h"

namespace freezetune::data {
namespace {
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }
}  // namespace

absl::StatusOr<EncodedDataset> EncodeDataset(const std::vector<RawExample>& examples,
                                             const LabelSpace& labels,
                                             const model::WordPieceTokenizer& tokenizer,
                                             int max_length, std::string_view field) {
  // [CLS] a [SEP] b [SEP] needs 3 slots before any text fits.
  if (max_length != 0 && max_length < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(field), ": max_length ", max_length, " is too small (0 or at least 3)"));
  }
  FT_ASSIGN_OR_RETURN(MappedLabels mapped, MapLabels(examples, labels, field));
  EncodedDataset out;
  out.ids.reserve(examples.size());
  out.type_ids.reserve(examples.size());
  for (const RawExample& ex : examples) {
    std::optional<std::string_view> pair;
    if (ex.text_pair) pair = *ex.text_pair;
    model::Encoding enc = tokenizer.Encode(ex.text, pair, max_length);
    out.ids.push_back(std::move(enc.ids));
    out.type_ids.push_back(std::move(enc.type_ids));
  }
  out.label_ids = std::move(mapped.ids);
  out.targets = std::move(mapped.targets);
  return out;
}

}  // namespace freezetune::data
