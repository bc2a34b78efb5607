// See fused_adamw.h.
#include "server/train/fused_adamw.h"

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_set>

#include "server/base/cpu_info.h"
#include "server/train/fused_adamw_kernel.h"

// at::parallel_for runs in parallel only where this file is built with
// OpenMP (freezetune_aten_parallel, cmake/FreezetuneTargets.cmake).
#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "build with OpenMP (freezetune_aten_parallel): at::parallel_for would run on one thread"
#endif

namespace freezetune::train {
namespace {

using adamw_kernel::Scalars;

struct Kernel {
  adamw_kernel::Fn fn;
  const char* name;
};

// As ATen picks its own kernels: ATEN_CPU_CAPABILITY ("default", "avx2",
// "avx512") caps the choice; otherwise the widest the CPU (and OS) supports
// among those built.
Kernel ChooseKernel() {
  const base::CpuFeatures f = base::ReadCpuInfo().features;
  const char* env = std::getenv("ATEN_CPU_CAPABILITY");
  const std::string cap = env != nullptr ? env : "";
  const bool allow512 = cap.empty() || cap == "avx512";
  const bool allow2 = allow512 || cap == "avx2";
#if FREEZETUNE_ADAMW_VECTORIZED
  if (allow512 && f.avx512_skylake() && f.fma) return {&adamw_kernel::UpdateAvx512, "avx512"};
  if (allow2 && f.avx2_fma()) return {&adamw_kernel::UpdateAvx2, "avx2"};
#else  // built without the vector kernels (server/train/CMakeLists.txt)
  (void)f;
  (void)allow2;
#endif
  return {&adamw_kernel::UpdateDefault, "default"};
}

const Kernel& TheKernel() {
  static const Kernel kernel = ChooseKernel();
  return kernel;
}

// Elements per task: big enough that a thread's share streams through
// memory, small enough that two threads split a 128-wide bias-free layer.
constexpr int64_t kGrain = 32 * 1024;

bool Fusable(const torch::Tensor& p, const torch::Tensor& grad) {
  return p.device().is_cpu() && p.scalar_type() == torch::kFloat && p.is_contiguous() &&
         grad.device().is_cpu() && grad.scalar_type() == torch::kFloat && grad.is_contiguous() &&
         !grad.is_sparse() && grad.sizes() == p.sizes();
}

// Row indices of a 2-D gradient with any non-zero element.
std::vector<int64_t> TouchedRows(const torch::Tensor& grad) {
  const int64_t rows = grad.size(0), cols = grad.size(1);
  const float* g = grad.data_ptr<float>();
  std::vector<char> touched(static_cast<size_t>(rows), 0);
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r) {
                       const float* row = g + r * cols;
                       for (int64_t c = 0; c < cols; ++c) {
                         if (row[c] != 0.0f) {
                           touched[static_cast<size_t>(r)] = 1;
                           break;
                         }
                       }
                     }
                   });
  std::vector<int64_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    if (touched[static_cast<size_t>(r)]) out.push_back(r);
  }
  return out;
}

// torch::optim::AdamW's own arithmetic, for tensors the kernel does not take.
void ReferenceUpdate(torch::Tensor& p, const torch::Tensor& grad,
                     torch::optim::AdamWParamState& state, const torch::optim::AdamWOptions& o) {
  if (o.weight_decay() != 0) p.mul_(1 - o.lr() * o.weight_decay());
  const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
  const double bc1 = 1 - std::pow(beta1, state.step());
  const double bc2 = 1 - std::pow(beta2, state.step());
  state.exp_avg().mul_(beta1).add_(grad, 1 - beta1);
  state.exp_avg_sq().mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  torch::Tensor denom = (state.exp_avg_sq().sqrt() / std::sqrt(bc2)).add_(o.eps());
  p.addcdiv_(state.exp_avg(), denom, -o.lr() / bc1);
}

}  // namespace

const char* FusedAdamWKernelName() { return TheKernel().name; }

void DropGradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (torch::Tensor& p : group.params()) p.mutable_grad() = torch::Tensor();
  }
}

void FusedAdamWStep(torch::optim::AdamW& optimizer, const FusedAdamWOptions& options) {
  for (const auto& group : optimizer.param_groups()) {
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad()) {
      optimizer.step();  // not fused; we never ask for amsgrad
      return;
    }
  }
  std::unordered_set<const void*> sparse;
  for (const torch::Tensor& t : options.sparse_rows) sparse.insert(t.unsafeGetTensorImpl());
  const adamw_kernel::Fn update = TheKernel().fn;
  torch::NoGradGuard no_grad;
  auto& states = optimizer.state();
  for (auto& group : optimizer.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (torch::Tensor& p : group.params()) {
      if (!p.grad().defined()) continue;
      const torch::Tensor& grad = p.grad();
      TORCH_CHECK(!grad.is_sparse(), "AdamW does not support sparse gradients");
      // State keyed by tensor identity, created as torch::optim::AdamW does.
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = states.find(key);
      if (it == states.end()) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = states.emplace(key, std::move(fresh)).first;
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*it->second);
      state.step(state.step() + 1);
      if (!Fusable(p, grad) || !state.exp_avg().is_contiguous() ||
          !state.exp_avg_sq().is_contiguous()) {
        ReferenceUpdate(p, grad, state, o);
        continue;
      }
      const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
      const double bc1 = 1 - std::pow(beta1, state.step());
      const double bc2 = 1 - std::pow(beta2, state.step());
      Scalars s;
      s.decay = o.weight_decay() != 0;
      s.decay_factor = static_cast<float>(1 - o.lr() * o.weight_decay());
      s.beta1 = static_cast<float>(beta1);
      s.one_minus_beta1 = static_cast<float>(1 - beta1);
      s.beta2 = static_cast<float>(beta2);
      s.one_minus_beta2 = static_cast<float>(1 - beta2);
      s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bc2));
      s.eps = static_cast<float>(o.eps());
      s.neg_step_size = static_cast<float>(-(o.lr() / bc1));
      float* pp = p.data_ptr<float>();
      const float* gp = grad.data_ptr<float>();
      float* mp = state.exp_avg().data_ptr<float>();
      float* vp = state.exp_avg_sq().data_ptr<float>();
      if (p.dim() == 2 && sparse.count(p.unsafeGetTensorImpl())) {
        const int64_t cols = p.size(1);
        const std::vector<int64_t> rows = TouchedRows(grad);
        const int64_t n = static_cast<int64_t>(rows.size());
        at::parallel_for(0, n, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                         [&](int64_t begin, int64_t end) {
                           for (int64_t i = begin; i < end; ++i) {
                             const int64_t off = rows[static_cast<size_t>(i)] * cols;
                             update(s, pp + off, gp + off, mp + off, vp + off, cols);
                           }
                         });
        continue;
      }
      at::parallel_for(0, p.numel(), kGrain, [&](int64_t begin, int64_t end) {
        update(s, pp + begin, gp + begin, mp + begin, vp + begin, end - begin);
      });
    }
  }
}

}  // namespace freezetune::train
