// Task kinds (see task.h).
#include "server/train/task.h"

#include "absl/strings/str_cat.h"

namespace freezetune::train {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status FieldError(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(AV(field), ": ", AV(reason)));
}

}  // namespace

bool IsMaskedLm(const v1::TaskSpec& task) { return task.type() == v1::TASK_TYPE_MASKED_LM; }

model::BertHead HeadFor(const v1::TaskSpec& task) {
  return IsMaskedLm(task) ? model::BertHead::kMaskedLm : model::BertHead::kSequenceClassification;
}

absl::Status ValidateTask(const v1::TaskSpec& task, std::string_view selection_metric,
                          std::string_view field) {
  if (!v1::TaskType_IsValid(task.type())) {
    return FieldError(absl::StrCat(AV(field), ".type"), "unknown task type");
  }
  if (!IsMaskedLm(task)) {
    if (task.has_masked_lm()) {
      return FieldError(absl::StrCat(AV(field), ".masked_lm"),
                        "only for type TASK_TYPE_MASKED_LM");
    }
    return absl::OkStatus();
  }
  if (task.num_labels() != 0 || task.label_names_size() != 0) {
    return FieldError(field, "a masked-LM task has no labels: leave num_labels and label_names unset");
  }
  if (task.masked_lm().has_mask_probability()) {
    const float p = task.masked_lm().mask_probability();
    if (!(p > 0.0f && p < 1.0f)) {
      return FieldError(absl::StrCat(AV(field), ".masked_lm.mask_probability"),
                        absl::StrCat("must be in (0, 1) (got ", p, ")"));
    }
  }
  if (!selection_metric.empty() && selection_metric != "loss" && selection_metric != "accuracy") {
    return FieldError("job.hyperparameters.selection_metric",
                      absl::StrCat("a masked-LM job selects by \"loss\" or \"accuracy\" (got \"",
                                   AV(selection_metric), "\")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<data::LabelSpace> ResolveTaskLabels(const v1::TaskSpec& task,
                                                   const std::vector<data::RawExample>& train,
                                                   std::string_view field) {
  if (IsMaskedLm(task)) return data::LabelSpace{};
  return data::ResolveLabelSpace(task, train, field);
}

MlmMaskingOptions MaskingOptions(const v1::TaskSpec& task) {
  MlmMaskingOptions out;
  if (task.masked_lm().has_mask_probability()) out.probability = task.masked_lm().mask_probability();
  out.whole_word = task.masked_lm().whole_word_masking();
  return out;
}

}  // namespace freezetune::train
