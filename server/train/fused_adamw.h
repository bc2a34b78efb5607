// A fused, vectorised AdamW step for CPU training.
//
// torch::optim::AdamW::step() makes about ten passes over each parameter
// with a temporary per op (mul_, add_, mul_, addcmul_, sqrt, div, add_,
// addcdiv_); on the 30,522 x 128 word embedding (90% of a small BERT's
// parameters) that was 44% of a step once the matrix multiplies were fast.
// FusedAdamWStep does the same arithmetic in one pass over parameter,
// gradient and both moments, element by element, with no temporaries,
// vectorised with at::vec (AVX-512, AVX2 or the portable fallback, chosen
// from the CPU's features like ATen's own kernels, ATEN_CPU_CAPABILITY
// honoured) and split across the intra-op threads with at::parallel_for.
//
// It is a drop-in for optimizer.step(): it reads the learning rate, betas,
// eps and weight decay of each of `optimizer`'s parameter groups (so
// no-decay groups stay exactly as they are) and keeps the moments and step
// counts in the optimizer's own AdamWParamState, so checkpoints, resume and
// optimizer rebuilds see no difference.
//
// Numerics: per element it performs the same IEEE float operations in the
// same order as ATen's kernels for torch::optim::AdamW (weight decay
// p *= 1 - lr*wd; m = m*b1 + (1-b1)*g as one fused multiply-add;
// v = v*b2 + ((1-b2)*g)*g; p += (-lr/bc1 * m) / (sqrt(v)/sqrt(bc2) + eps)).
// fused_adamw_test checks it against torch::optim::AdamW over 25 steps
// (decay and no-decay groups, changing learning rate, 1 and 2 threads):
// equal within 2 float ulps, and measured bit for bit equal (391,980 of
// 391,980 elements; AVX-512 kernel against ATen's AVX2 kernels, Zen 4). The
// 2 ulps allow for compilers that contract a scalar tail's multiply-add
// differently. The portable kernel (CPUs without AVX2, where ATen's own
// kernels also round fmadd twice) is within 4 ulps of the tensor's scale.
//
// Falls back to the reference arithmetic (the same tensor ops as
// torch::optim::AdamW) for parameters that are not dense, contiguous,
// float32 CPU tensors (e.g. CUDA, half precision), and to optimizer.step()
// when a group uses amsgrad.
//
// Optional, off by default: sparse row updates (SparseRows). For the given
// 2-D parameters (the word embedding), only rows whose gradient is not all
// zero are updated: their moments, weight decay and step. Rows that no
// example touched keep their weights and moments instead of decaying, so
// results differ from AdamW (as LazyAdam's do); the step count and bias
// correction stay per tensor.
//
// Thread safety: as optimizer.step(): one thread per optimizer.
#ifndef FREEZETUNE_SERVER_TRAIN_FUSED_ADAMW_H_
#define FREEZETUNE_SERVER_TRAIN_FUSED_ADAMW_H_

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include <vector>

namespace freezetune::train {

struct FusedAdamWOptions {
  // Parameters (by identity) updated row-sparsely; see above. Empty: none.
  std::vector<torch::Tensor> sparse_rows;
};

// One AdamW step over every parameter of `optimizer` that has a gradient.
void FusedAdamWStep(torch::optim::AdamW& optimizer, const FusedAdamWOptions& options = {});

// Sets the gradient of every parameter `optimizer` holds to undefined
// (torch.optim's zero_grad(set_to_none=True), PyTorch 2's default), where
// optimizer.zero_grad() in LibTorch 1.13 fills them with zeros. The next
// backward then stores each fresh gradient instead of adding it to a zeroed
// tensor: no zeroing pass and no accumulation pass per parameter, and the
// word embedding's dense gradient is taken over, not copied (5% + 2.5% of
// a small model's CPU step, tests/bench/README.md). Same values (0 + g ==
// g). The one difference: a parameter that got a gradient in an earlier
// step but none in this one is skipped by the AdamW step instead of being
// updated with a zero gradient. The trainer never has one: the parameters
// its loss reaches do so in every step (a masked-LM batch predicts at least
// one token per row), and the others (the pooler and classifier in a
// masked-LM run) never get a gradient, so zero_grad() left them undefined
// too.
void DropGradients(torch::optim::Optimizer& optimizer);

// Which kernel FusedAdamWStep uses on this machine: "avx512", "avx2" or
// "default".
const char* FusedAdamWKernelName();

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_FUSED_ADAMW_H_
