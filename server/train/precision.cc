// Mixed precision (see precision.h).
#include "server/train/precision.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace freezetune::train {
namespace {

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// PyTorch 2.4 replaced the per-device autocast setters (set_enabled,
// set_cpu_enabled, set_autocast_gpu_dtype, ...) with ones taking a device
// type, and deprecated the old ones; 1.13 (Debian) has only the old ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool AutocastEnabled(bool cuda) {
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
}
void SetAutocastEnabled(bool cuda, bool on) {
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, on);
}
at::ScalarType AutocastDtype(bool cuda) {
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
}
void SetAutocastDtype(bool cuda, at::ScalarType dtype) {
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, dtype);
}
#else
bool AutocastEnabled(bool cuda) {
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void SetAutocastEnabled(bool cuda, bool on) {
  if (cuda) {
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_cpu_enabled(on);
  }
}
at::ScalarType AutocastDtype(bool cuda) {
  return cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void SetAutocastDtype(bool cuda, at::ScalarType dtype) {
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
}
#endif

}  // namespace

std::string PrecisionName(v1::Precision precision) {
  switch (precision) {
    case v1::PRECISION_BF16:
      return "bf16";
    case v1::PRECISION_FP16:
      return "fp16";
    default:
      return "fp32";
  }
}

torch::Dtype ComputeDtype(v1::Precision precision) {
  switch (precision) {
    case v1::PRECISION_BF16:
      return torch::kBFloat16;
    case v1::PRECISION_FP16:
      return torch::kHalf;
    default:
      return torch::kFloat;
  }
}

absl::Status ValidatePrecision(v1::Precision precision, std::string_view device,
                               std::string_view field) {
  if (!v1::Precision_IsValid(precision)) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(field), ".precision: unknown value ", static_cast<int>(precision)));
  }
  if (precision == v1::PRECISION_FP16 && !absl::StartsWith(AV(device), "cuda")) {
    return absl::InvalidArgumentError(absl::StrCat(
        AV(field), ".precision: fp16 runs on CUDA only (LibTorch's CPU autocast has bfloat16 ",
        "only); set job.device to \"cuda\", or use bf16 on the CPU"));
  }
  return absl::OkStatus();
}

std::string OutputDtype(v1::WeightDtype requested, const std::string& source_dtype) {
  switch (requested) {
    case v1::WEIGHT_DTYPE_F32:
      return "F32";
    case v1::WEIGHT_DTYPE_F16:
      return "F16";
    case v1::WEIGHT_DTYPE_BF16:
      return "BF16";
    default:
      break;
  }
  if (source_dtype == "F16" || source_dtype == "BF16") return source_dtype;
  return "F32";
}

AutocastScope::AutocastScope(const torch::Device& device, torch::Dtype dtype) {
  if (dtype == torch::kFloat) return;
  active_ = true;
  cuda_ = device.is_cuda();
  prev_enabled_ = AutocastEnabled(cuda_);
  prev_dtype_ = AutocastDtype(cuda_);
  SetAutocastEnabled(cuda_, true);
  SetAutocastDtype(cuda_, dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // Autocast caches the casts of leaf weights while enabled; drop them when
  // the outermost scope ends, as torch.autocast's __exit__ does.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  SetAutocastEnabled(cuda_, prev_enabled_);
  SetAutocastDtype(cuda_, prev_dtype_);
}

void ApplyTf32(bool allow) {
  // Newer LibTorch versions steer towards setFloat32Precision; the switches
  // below still exist there, and a deprecation must not fail the build.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  at::globalContext().setAllowTF32CuBLAS(allow);
  at::globalContext().setAllowTF32CuDNN(allow);
#pragma GCC diagnostic pop
}

LossScaler::LossScaler(bool enabled, Options options)
    : enabled_(enabled), options_(options), scale_(enabled ? options.init_scale : 1.0) {}

torch::Tensor LossScaler::Scale(const torch::Tensor& loss) const {
  return enabled_ ? loss * scale_ : loss;
}

bool LossScaler::UnscaleAndCheck(const std::vector<torch::Tensor>& params) const {
  torch::NoGradGuard no_grad;
  torch::Tensor all_finite;
  for (const torch::Tensor& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (enabled_) g.mul_(1.0 / scale_);
    torch::Tensor finite = g.isfinite().all();
    all_finite = all_finite.defined() ? all_finite.logical_and(finite) : finite;
  }
  // One device-to-host sync per step, not one per tensor.
  return !all_finite.defined() || all_finite.item<bool>();
}

void LossScaler::Update(bool finite) {
  if (!finite) {
    ++skipped_;
    good_steps_ = 0;
    if (enabled_) scale_ *= options_.backoff_factor;
    return;
  }
  if (!enabled_) return;
  if (++good_steps_ >= options_.growth_interval) {
    scale_ *= options_.growth_factor;
    good_steps_ = 0;
  }
}

}  // namespace freezetune::train
