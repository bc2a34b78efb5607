// Hyperparameter defaults and validation (see hyperparameters.h).
#include "server/train/hyperparameters.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace freezetune::train {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Error(std::string_view field, std::string_view name, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(AV(field), ".", AV(name), ": ", AV(reason)));
}

// Checks a non-optional int field where 0 means default: v == 0 or v in [lo, hi].
absl::Status CheckIntOrDefault(std::string_view field, std::string_view name, int64_t v,
                               int64_t lo, int64_t hi) {
  if (v == 0 || (v >= lo && v <= hi)) return absl::OkStatus();
  return Error(field, name, absl::StrCat("must be in [", lo, ", ", hi, "] (got ", v, ")"));
}

}  // namespace

ResolvedHyperparameters WithDefaults(const v1::Hyperparameters& h, bool regression) {
  ResolvedHyperparameters r;
  if (h.has_epochs()) r.epochs = h.epochs();
  if (h.batch_size() > 0) r.batch_size = h.batch_size();
  if (h.learning_rate() > 0) r.learning_rate = h.learning_rate();
  if (h.has_weight_decay()) r.weight_decay = h.weight_decay();
  r.warmup_ratio = h.warmup_ratio();
  if (h.max_seq_length() > 0) r.max_seq_length = h.max_seq_length();
  if (h.has_seed()) r.seed = h.seed();
  if (h.log_every_steps() > 0) r.log_every_steps = h.log_every_steps();
  r.eval_every_steps = h.eval_every_steps() > 0 ? h.eval_every_steps() : 0;
  r.lr_schedule =
      h.lr_schedule() == v1::LR_SCHEDULE_UNSPECIFIED ? v1::LR_SCHEDULE_LINEAR : h.lr_schedule();
  if (h.has_max_grad_norm()) r.max_grad_norm = h.max_grad_norm();
  if (h.gradient_accumulation_steps() > 0) {
    r.gradient_accumulation_steps = h.gradient_accumulation_steps();
  }
  r.checkpoint_every_steps = h.checkpoint_every_steps() > 0 ? h.checkpoint_every_steps() : 0;
  r.early_stopping_patience = h.early_stopping_patience() > 0 ? h.early_stopping_patience() : 0;
  r.selection_metric =
      h.selection_metric().empty() ? (regression ? "loss" : "accuracy") : h.selection_metric();
  if (h.has_validation_split()) r.validation_split = h.validation_split();
  if (h.has_length_bucketing()) r.length_bucketing = h.length_bucketing();
  if (h.has_sparse_embedding_updates()) r.sparse_embedding_updates = h.sparse_embedding_updates();
  if (h.precision() != v1::PRECISION_UNSPECIFIED) r.precision = h.precision();
  if (h.has_allow_tf32()) r.allow_tf32 = h.allow_tf32();
  return r;
}

absl::Status ValidateHyperparameters(const v1::Hyperparameters& h, bool regression,
                                     int64_t model_max_positions, const JobLimits& limits,
                                     std::string_view field) {
  if (h.has_epochs() && (h.epochs() < 1 || h.epochs() > limits.max_epochs)) {
    return Error(field, "epochs",
                 absl::StrCat("must be in [1, ", limits.max_epochs, "] (got ", h.epochs(), ")"));
  }
  FT_RETURN_IF_ERROR(
      CheckIntOrDefault(field, "batch_size", h.batch_size(), 1, limits.max_batch_size));
  const float lr = h.learning_rate();
  if (lr != 0.0f && !(lr > 0.0f && std::isfinite(lr))) {
    return Error(field, "learning_rate", absl::StrCat("must be > 0 and finite (got ", lr, ")"));
  }
  if (h.has_weight_decay() && !(h.weight_decay() >= 0.0f && std::isfinite(h.weight_decay()))) {
    return Error(field, "weight_decay",
                 absl::StrCat("must be >= 0 and finite (got ", h.weight_decay(), ")"));
  }
  if (!(h.warmup_ratio() >= 0.0f && h.warmup_ratio() < 1.0f)) {
    return Error(field, "warmup_ratio",
                 absl::StrCat("must be in [0, 1) (got ", h.warmup_ratio(), ")"));
  }
  const int64_t max_len = std::min<int64_t>(model_max_positions, limits.max_seq_length);
  if (h.max_seq_length() < 0 || h.max_seq_length() > max_len) {
    return Error(field, "max_seq_length",
                 absl::StrCat("must be in [3, ", max_len, "] (got ", h.max_seq_length(),
                              "; model max_position_embeddings ", model_max_positions,
                              ", server limit ", limits.max_seq_length, ")"));
  }
  if (h.max_seq_length() > 0 && h.max_seq_length() < 3) {
    // [CLS] + one token + [SEP] is the least that carries any text.
    return Error(field, "max_seq_length",
                 absl::StrCat("must be >= 3 (got ", h.max_seq_length(), ")"));
  }
  FT_RETURN_IF_ERROR(
      CheckIntOrDefault(field, "log_every_steps", h.log_every_steps(), 1, int64_t{1} << 31));
  FT_RETURN_IF_ERROR(
      CheckIntOrDefault(field, "eval_every_steps", h.eval_every_steps(), 1, int64_t{1} << 31));
  if (!v1::LrSchedule_IsValid(h.lr_schedule())) {
    return Error(field, "lr_schedule", absl::StrCat("unknown value ", h.lr_schedule()));
  }
  if (h.has_max_grad_norm() &&
      !(h.max_grad_norm() >= 0.0f && std::isfinite(h.max_grad_norm()))) {
    return Error(field, "max_grad_norm",
                 absl::StrCat("must be >= 0 and finite (got ", h.max_grad_norm(), ")"));
  }
  FT_RETURN_IF_ERROR(CheckIntOrDefault(field, "gradient_accumulation_steps",
                                       h.gradient_accumulation_steps(), 1, 1 << 16));
  FT_RETURN_IF_ERROR(CheckIntOrDefault(field, "checkpoint_every_steps",
                                       h.checkpoint_every_steps(), 1, int64_t{1} << 31));
  FT_RETURN_IF_ERROR(CheckIntOrDefault(field, "early_stopping_patience",
                                       h.early_stopping_patience(), 1, 1 << 20));
  if (h.has_seed() && h.seed() < 0) {
    return Error(field, "seed", absl::StrCat("must be >= 0 (got ", h.seed(), ")"));
  }
  if (!h.selection_metric().empty() && !IsKnownSelectionMetric(h.selection_metric(), regression)) {
    return Error(field, "selection_metric",
                 absl::StrCat("unknown metric \"", h.selection_metric(), "\" for ",
                              regression ? "regression (pearson, spearman, mse, loss)"
                                         : "classification (accuracy, macro_f1, mcc, loss)"));
  }
  if (!v1::Precision_IsValid(h.precision())) {
    return Error(field, "precision", absl::StrCat("unknown value ", h.precision()));
  }
  if (h.has_validation_split() &&
      !(h.validation_split() >= 0.0f && h.validation_split() <= 0.5f)) {
    return Error(field, "validation_split",
                 absl::StrCat("must be in [0, 0.5] (got ", h.validation_split(), ")"));
  }
  return absl::OkStatus();
}

int DefaultMaxSeqLength(int64_t model_max_positions, const JobLimits& limits) {
  return static_cast<int>(std::min<int64_t>(
      {int64_t{ResolvedHyperparameters{}.max_seq_length}, model_max_positions,
       int64_t{limits.max_seq_length}}));
}

int64_t StepsPerEpoch(int64_t n, const ResolvedHyperparameters& h) {
  if (n <= 0) return 0;
  const int64_t micro = (n + h.batch_size - 1) / h.batch_size;
  return (micro + h.gradient_accumulation_steps - 1) / h.gradient_accumulation_steps;
}

int64_t TotalSteps(int64_t n, const ResolvedHyperparameters& h) {
  return StepsPerEpoch(n, h) * h.epochs;
}

int64_t WarmupSteps(int64_t total_steps, const ResolvedHyperparameters& h) {
  // warmup_ratio arrives as a float (0.1f is 0.10000000149), so allow for
  // that before ceil: 0.1 of 10 steps is 1 warmup step, not 2.
  const double w = h.warmup_ratio * static_cast<double>(total_steps) - 1e-6;
  return w <= 0 ? 0 : static_cast<int64_t>(std::ceil(w));
}

bool IsKnownSelectionMetric(std::string_view m, bool regression) {
  if (m == "loss") return true;
  if (regression) return m == "pearson" || m == "spearman" || m == "mse";
  return m == "accuracy" || m == "macro_f1" || m == "mcc";
}

}  // namespace freezetune::train
