#include "server/model/dropout_mask.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/DistributionsHelper.h>

// at::parallel_for runs in parallel only where this file is built with
// OpenMP (freezetune_aten_parallel, cmake/FreezetuneTargets.cmake).
#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "build with OpenMP (freezetune_aten_parallel): at::parallel_for would run on one thread"
#endif

namespace freezetune::model {
namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;

// SplitMix64's output function (Steele, Lea, Flood 2014): the i-th output of
// a SplitMix64 stream seeded with `key` is Mix(key + (i + 1) * kGamma).
inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Elements per parallel chunk: the fill is a few ns per element.
constexpr int64_t kGrain = 1 << 15;

}  // namespace

bool DropoutMaskSupports(const at::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == at::kFloat && x.layout() == at::kStrided;
}

void FillDropoutMask(float* out, int64_t n, uint64_t key, double p) {
  // Dropped when a uniform 32-bit draw is below p * 2^32 (kept with
  // probability 1 - p to within 2^-32); p == 1 drops everything.
  const uint64_t threshold =
      p >= 1.0 ? (uint64_t{1} << 32) : static_cast<uint64_t>(std::llround(p * 4294967296.0));
  const float scale = p >= 1.0 ? 0.0f : 1.0f / static_cast<float>(1.0 - p);
  // Pairs of elements share one 64-bit output; a chunk starts on an even
  // element, so element i always reads output i / 2 whatever the chunking.
  const int64_t pairs = (n + 1) / 2;
  at::parallel_for(0, pairs, kGrain / 2, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const uint64_t r = Mix(key + static_cast<uint64_t>(j + 1) * kGamma);
      const int64_t i = 2 * j;
      out[i] = (r & 0xFFFFFFFFULL) < threshold ? 0.0f : scale;
      if (i + 1 < n) out[i + 1] = (r >> 32) < threshold ? 0.0f : scale;
    }
  });
}

at::Tensor DropoutMask(const at::Tensor& x, double p, c10::optional<at::Generator> generator) {
  TORCH_CHECK(DropoutMaskSupports(x), "DropoutMask: a CPU float tensor, got ", x.toString());
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "DropoutMask: p must be in [0, 1], got ", p);
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  uint64_t key;
  {
    std::lock_guard<std::mutex> lock(gen->mutex_);
    key = gen->random64();
  }
  at::Tensor mask = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  FillDropoutMask(mask.data_ptr<float>(), mask.numel(), key, p);
  return mask;
}

}  // namespace freezetune::model
