// The job's task (TaskSpec): sequence classification (with its label space)
// or masked-LM continued pretraining, and what each implies for the model
// head, the datasets and the metrics.
//
// Thread safety: pure functions.
#ifndef FREEZETUNE_SERVER_TRAIN_TASK_H_
#define FREEZETUNE_SERVER_TRAIN_TASK_H_

#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/data/dataset.h"
#include "server/model/bert_config.h"
#include "server/train/masked_lm.h"

namespace freezetune::train {

bool IsMaskedLm(const v1::TaskSpec& task);
// kMaskedLm for a masked-LM task, else kSequenceClassification.
model::BertHead HeadFor(const v1::TaskSpec& task);

// Checks the task fields (prefix `field`, e.g. "job.task"): a known type; for
// masked LM, no num_labels or label_names and a mask_probability in (0, 1);
// and that `selection_metric` (as given; empty is the default) suits the
// task: a masked-LM job selects by "loss" or "accuracy". INVALID_ARGUMENT
// naming the field.
absl::Status ValidateTask(const v1::TaskSpec& task, std::string_view selection_metric,
                          std::string_view field);

// The label space: unlabelled for masked LM, else from the task and the
// training examples (data::ResolveLabelSpace).
absl::StatusOr<data::LabelSpace> ResolveTaskLabels(const v1::TaskSpec& task,
                                                   const std::vector<data::RawExample>& train,
                                                   std::string_view field);

// The masking of a masked-LM task, defaults applied.
MlmMaskingOptions MaskingOptions(const v1::TaskSpec& task);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_TASK_H_
