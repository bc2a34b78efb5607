// Hyperparameter defaults and range checks, in one place: the trainer, job
// validation and jobs/ (reporting total steps) all use these. Torch-free.
//
// Proto3 cannot tell an unset scalar from zero, so a zero (non-optional)
// field means "default" as freezetune.proto states; negative values and
// out-of-range optional fields are errors.
#ifndef FREEZETUNE_SERVER_TRAIN_HYPERPARAMETERS_H_
#define FREEZETUNE_SERVER_TRAIN_HYPERPARAMETERS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/train/fine_tune.h"

namespace freezetune::train {

// Hyperparameters with every default filled in.
struct ResolvedHyperparameters {
  int epochs = 3;
  int batch_size = 32;
  double learning_rate = 5e-5;
  double weight_decay = 0.01;
  double warmup_ratio = 0.0;
  int max_seq_length = 128;
  int64_t seed = 42;
  int log_every_steps = 10;
  int eval_every_steps = 0;  // 0: evaluate at epoch ends only
  v1::LrSchedule lr_schedule = v1::LR_SCHEDULE_LINEAR;
  double max_grad_norm = 1.0;  // 0 disables clipping
  int gradient_accumulation_steps = 1;
  int checkpoint_every_steps = 0;
  int early_stopping_patience = 0;  // 0 disables early stopping
  std::string selection_metric = "accuracy";
  double validation_split = 0.1;
  // Training batches grouped by length (data::PlanBatches' bucketing); false
  // gives plain seeded shuffled batches. Evaluation batches are always
  // grouped: their order does not affect the result.
  bool length_bucketing = true;
  // AdamW updates only the word-embedding rows with a gradient (CPU; see
  // FusedAdamWOptions::sparse_rows). Changes results.
  bool sparse_embedding_updates = false;
  // Mixed precision (precision.h) and TF32 on GPUs.
  v1::Precision precision = v1::PRECISION_FP32;
  bool allow_tf32 = true;
};

// Fills defaults. `regression` picks the default selection metric ("loss"
// for regression, "accuracy" otherwise). Does not validate.
ResolvedHyperparameters WithDefaults(const v1::Hyperparameters& h, bool regression);

// Range checks; errors are INVALID_ARGUMENT starting with `field` (e.g.
// "job.hyperparameters.epochs: must be in [1, 100] (got -1)").
// `model_max_positions` is the model's max_position_embeddings.
absl::Status ValidateHyperparameters(const v1::Hyperparameters& h, bool regression,
                                     int64_t model_max_positions, const JobLimits& limits,
                                     std::string_view field);

// max_seq_length when a job sets none: 128, or the model's positions or the
// server's limit when either is smaller (a model with 64 positions gets 64).
int DefaultMaxSeqLength(int64_t model_max_positions, const JobLimits& limits);

// Optimizer steps in one epoch of `num_train_examples`: micro-batches
// (ceil(n / batch_size)) grouped by gradient_accumulation_steps, a trailing
// partial group counting as a step. At least 1 for n >= 1.
int64_t StepsPerEpoch(int64_t num_train_examples, const ResolvedHyperparameters& h);
int64_t TotalSteps(int64_t num_train_examples, const ResolvedHyperparameters& h);

// Number of warmup steps: ceil(warmup_ratio * total_steps), as transformers.
int64_t WarmupSteps(int64_t total_steps, const ResolvedHyperparameters& h);

// Selection metrics valid for the task: classification "accuracy",
// "macro_f1", "mcc", "loss"; regression "pearson", "spearman", "mse", "loss".
bool IsKnownSelectionMetric(std::string_view metric, bool regression);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_HYPERPARAMETERS_H_
