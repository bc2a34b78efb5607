// The element loop of FusedAdamWStep (fused_adamw.h), compiled once per
// instruction set (fused_adamw_kernel_{default,avx2,avx512}.cc include
// fused_adamw_kernel.inc with their own -m flags and at::vec's
// CPU_CAPABILITY), so that at::vec::Vectorized<float> is 16, 8 or 4 lanes
// wide. fused_adamw.cc picks one at run time from the CPU's features.
//
// These translation units hold nothing but the loop: no static data, no
// other inline code of ours (see ATen's "Do not compile initializers with
// AVX" note), so nothing compiled for AVX-512 can run on a CPU without it.
#ifndef FREEZETUNE_SERVER_TRAIN_FUSED_ADAMW_KERNEL_H_
#define FREEZETUNE_SERVER_TRAIN_FUSED_ADAMW_KERNEL_H_

#include <cstdint>

namespace freezetune::train::adamw_kernel {

// The step's scalars, already rounded to float as ATen rounds a double
// Scalar for a float tensor op.
struct Scalars {
  bool decay = false;        // weight decay on (then p *= decay_factor first)
  float decay_factor = 1.0f; // 1 - lr * weight_decay
  float beta1 = 0.9f;
  float one_minus_beta1 = 0.1f;
  float beta2 = 0.999f;
  float one_minus_beta2 = 0.001f;
  float bias_correction2_sqrt = 1.0f;  // sqrt(1 - beta2^step)
  float eps = 1e-8f;
  float neg_step_size = 0.0f;          // -lr / (1 - beta1^step)
};

// p, m, v updated in place over [0, n) from g.
using Fn = void (*)(const Scalars& s, float* p, const float* g, float* m, float* v, int64_t n);

void UpdateDefault(const Scalars& s, float* p, const float* g, float* m, float* v, int64_t n);
void UpdateAvx2(const Scalars& s, float* p, const float* g, float* m, float* v, int64_t n);
void UpdateAvx512(const Scalars& s, float* p, const float* g, float* m, float* v, int64_t n);

}  // namespace freezetune::train::adamw_kernel

#endif  // FREEZETUNE_SERVER_TRAIN_FUSED_ADAMW_KERNEL_H_
