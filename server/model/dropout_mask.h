// A cheap dropout mask for CPU float tensors: one draw from the model's
// generator per call, then a counter-based hash (SplitMix64) per pair of
// elements, in parallel. Replaces bernoulli_ + div_ (a serial Mersenne
// Twister draw and a double conversion per element), which took about 9% of
// a CPU training step (tests/bench/README.md, "Where a step's time goes").
//
// The masks are NOT PyTorch's: at::dropout (torch.nn.Dropout) draws one
// Bernoulli sample per element from the generator's Mersenne Twister stream,
// this kernel hashes a counter from one draw, so the same seed gives other
// masks than PyTorch's dropout (same distribution) and training with
// dropout is not bit-equal to a PyTorch loop seeded alike. It is seeded and
// reproducible: the mask depends only on the generator's state (which
// advances by one 64-bit draw per call), the shape and p, not on the thread
// count. (Two calls' streams are one SplitMix64 sequence at offsets set by
// their random keys: two masks of n elements share a stretch with
// probability about n / 2^64.)
//
// Thread safety: takes the generator's mutex for the one draw; the fill is
// then lock-free. Callers follow torch::nn::Module's rules for the model.
#ifndef FREEZETUNE_SERVER_MODEL_DROPOUT_MASK_H_
#define FREEZETUNE_SERVER_MODEL_DROPOUT_MASK_H_

#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>

namespace freezetune::model {

// True when DropoutMask can serve `x`: a CPU float32 tensor.
bool DropoutMaskSupports(const at::Tensor& x);

// A contiguous float tensor shaped like `x`: each element is 0 with
// probability p (to within 2^-32) and 1 / (1 - p) otherwise, computed in
// float as at::dropout's mask.div_(1 - p) does. p in [0, 1]; at p == 1 every
// element is 0. `generator` unset: torch's default CPU generator. Requires
// DropoutMaskSupports(x).
at::Tensor DropoutMask(const at::Tensor& x, double p, c10::optional<at::Generator> generator);

// The fill itself, exposed for tests: element i of `out` (n elements) from
// key and i only.
void FillDropoutMask(float* out, int64_t n, uint64_t key, double p);

}  // namespace freezetune::model

#endif  // FREEZETUNE_SERVER_MODEL_DROPOUT_MASK_H_
