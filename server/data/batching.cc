// Batch planning and collation; see batching.h for the contracts.
#include "server/data/batching.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

namespace freezetune::data {
namespace {

// SplitMix64 finaliser: spreads (seed, epoch) into an independent stream seed.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Unbiased integer in [0, n) from a standard-specified engine (the
// distribution classes are implementation-defined, so not used).
uint64_t Below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % n);
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

template <typename T>
void Shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(Below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

void CutInto(const std::vector<int64_t>& order, size_t begin, size_t end, size_t batch_size,
             std::vector<std::vector<int64_t>>* out) {
  for (size_t b = begin; b < end; b += batch_size) {
    out->emplace_back(order.begin() + static_cast<std::ptrdiff_t>(b),
                      order.begin() + static_cast<std::ptrdiff_t>(std::min(end, b + batch_size)));
  }
}

}  // namespace

Batch CollateBatch(const EncodedDataset& dataset, const std::vector<int64_t>& indices,
                   int64_t pad_id) {
  if (indices.empty()) throw std::out_of_range("CollateBatch: empty batch");
  const int64_t n = dataset.size();
  size_t longest = 0;
  for (const int64_t i : indices) {
    if (i < 0 || i >= n) {
      throw std::out_of_range("CollateBatch: index " + std::to_string(i) + " outside [0, " +
                              std::to_string(n) + ")");
    }
    longest = std::max(longest, dataset.ids[static_cast<size_t>(i)].size());
  }
  const int64_t b = static_cast<int64_t>(indices.size());
  const int64_t t = static_cast<int64_t>(longest);
  Batch batch;
  batch.indices = indices;
  batch.input_ids = at::full({b, t}, pad_id, at::kLong);
  batch.token_type_ids = at::zeros({b, t}, at::kLong);
  batch.attention_mask = at::zeros({b, t}, at::kLong);
  int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  int64_t* types = batch.token_type_ids.data_ptr<int64_t>();
  int64_t* mask = batch.attention_mask.data_ptr<int64_t>();
  for (int64_t r = 0; r < b; ++r) {
    const size_t row = static_cast<size_t>(indices[static_cast<size_t>(r)]);
    const std::vector<int32_t>& src = dataset.ids[row];
    const std::vector<int32_t>* src_types =
        row < dataset.type_ids.size() ? &dataset.type_ids[row] : nullptr;
    for (size_t c = 0; c < src.size(); ++c) {
      const int64_t at = r * t + static_cast<int64_t>(c);
      ids[at] = src[c];
      types[at] = src_types != nullptr && c < src_types->size() ? (*src_types)[c] : 0;
      mask[at] = 1;
    }
    batch.tokens += static_cast<int64_t>(src.size());
  }
  if (!dataset.targets.empty()) {
    batch.labels = at::empty({b}, at::kFloat);
    float* out = batch.labels.data_ptr<float>();
    for (int64_t r = 0; r < b; ++r) {
      out[r] = dataset.targets.at(static_cast<size_t>(indices[static_cast<size_t>(r)]));
    }
  } else if (!dataset.label_ids.empty()) {
    batch.labels = at::empty({b}, at::kLong);
    int64_t* out = batch.labels.data_ptr<int64_t>();
    for (int64_t r = 0; r < b; ++r) {
      out[r] = dataset.label_ids.at(static_cast<size_t>(indices[static_cast<size_t>(r)]));
    }
  }
  return batch;
}

std::vector<std::vector<int64_t>> PlanBatches(const EncodedDataset& dataset, int64_t batch_size,
                                              uint64_t seed, int64_t epoch, bool shuffle,
                                              bool length_bucketed) {
  const size_t bs = static_cast<size_t>(std::max<int64_t>(1, batch_size));
  const size_t n = static_cast<size_t>(dataset.size());
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t{0});
  auto by_length = [&dataset](int64_t a, int64_t b) {
    return dataset.ids[static_cast<size_t>(a)].size() < dataset.ids[static_cast<size_t>(b)].size();
  };
  std::vector<std::vector<int64_t>> plan;
  plan.reserve((n + bs - 1) / bs);
  if (!shuffle) {
    if (length_bucketed) std::stable_sort(order.begin(), order.end(), by_length);
    CutInto(order, 0, n, bs, &plan);
    return plan;
  }
  std::mt19937_64 rng(Mix(seed ^ Mix(static_cast<uint64_t>(epoch))));
  Shuffle(order, rng);
  if (!length_bucketed) {
    CutInto(order, 0, n, bs, &plan);
    return plan;
  }
  const size_t chunk = bs * static_cast<size_t>(kBucketChunkBatches);
  for (size_t begin = 0; begin < n; begin += chunk) {
    const size_t end = std::min(n, begin + chunk);
    std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(begin),
                     order.begin() + static_cast<std::ptrdiff_t>(end), by_length);
    CutInto(order, begin, end, bs, &plan);
  }
  Shuffle(plan, rng);
  return plan;
}

int64_t PaddedTokens(const EncodedDataset& dataset,
                     const std::vector<std::vector<int64_t>>& plan) {
  int64_t total = 0;
  for (const std::vector<int64_t>& batch : plan) {
    size_t longest = 0;
    for (const int64_t i : batch) longest = std::max(longest, dataset.ids.at(static_cast<size_t>(i)).size());
    total += static_cast<int64_t>(batch.size() * longest);
  }
  return total;
}

}  // namespace freezetune::data
