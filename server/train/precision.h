// Mixed precision for the trainer: which dtype a job computes in, an autocast
// scope around the forward pass, TF32 on GPUs, and the dynamic loss scaler
// that fp16 needs.
//
// Contract of mixed precision here (as torch.autocast + GradScaler):
//  - parameters ("master weights") and the AdamW state stay float32; autocast
//    casts copies of the weights for matmuls, so frozen weights are never
//    written and stay bit-identical;
//  - the loss is computed in float32 from float32 logits;
//  - bf16 needs no loss scaling (float32's exponent range); fp16 does.
//
// Thread safety: AutocastScope changes the calling thread's autocast state
// only. ApplyTf32 changes process-wide LibTorch settings. A LossScaler is used
// from one thread.
#ifndef FREEZETUNE_SERVER_TRAIN_PRECISION_H_
#define FREEZETUNE_SERVER_TRAIN_PRECISION_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "freezetune/v1/freezetune.pb.h"

namespace freezetune::train {

// "fp32", "bf16" or "fp16" (UNSPECIFIED is fp32).
std::string PrecisionName(v1::Precision precision);
// float32, bfloat16 or float16.
torch::Dtype ComputeDtype(v1::Precision precision);

// INVALID_ARGUMENT "<field>.precision: ..." for an unknown value, and for
// fp16 unless `device` is "cuda" or "cuda:N" (LibTorch's CPU autocast
// supports bfloat16 only). `field` is the hyperparameters' path.
absl::Status ValidatePrecision(v1::Precision precision, std::string_view device,
                               std::string_view field);

// The safetensors dtype ("F32", "F16", "BF16") the output is written in:
// `requested` when set, else the input checkpoint's `source_dtype` ("F32"
// for a checkpoint of mixed dtypes).
std::string OutputDtype(v1::WeightDtype requested, const std::string& source_dtype);

// While alive, ops on the calling thread run under autocast for `device`'s
// type with `dtype`; restores the previous state (and clears autocast's
// weight-cast cache when the outermost scope ends). A no-op for float32.
class AutocastScope {
 public:
  AutocastScope(const torch::Device& device, torch::Dtype dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

// TF32 for float32 matmuls and convolutions on GPUs (cuBLAS and cuDNN).
// Process-wide; a no-op without CUDA.
void ApplyTf32(bool allow);

// Dynamic loss scaling, as torch.cuda.amp.GradScaler: multiply the loss by
// `scale` before backward; before the optimizer step, divide the gradients
// by it and check them; an overflow skips the step and halves the scale;
// `growth_interval` finite steps in a row double it. Disabled, it is the
// identity and never skips.
class LossScaler {
 public:
  struct Options {
    double init_scale = 65536.0;
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    int64_t growth_interval = 2000;
  };
  explicit LossScaler(bool enabled) : LossScaler(enabled, Options()) {}
  LossScaler(bool enabled, Options options);

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  int64_t skipped_steps() const { return skipped_; }

  // loss * scale (loss itself when disabled).
  torch::Tensor Scale(const torch::Tensor& loss) const;
  // Divides every defined gradient of `params` by the scale (when enabled)
  // and returns whether all of them are finite.
  bool UnscaleAndCheck(const std::vector<torch::Tensor>& params) const;
  // Records the outcome of a step: `finite` false counts a skipped step and
  // backs the scale off; true grows it after growth_interval in a row.
  void Update(bool finite);

 private:
  bool enabled_;
  Options options_;
  double scale_;
  int64_t good_steps_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_PRECISION_H_
