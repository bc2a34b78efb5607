// Turning an EncodedDataset into training/eval batches: a deterministic batch
// plan (optionally shuffled and length-bucketed) and collation with dynamic
// padding to the longest example of each batch.
//
// Thread safety: pure functions; they read the dataset and share no state.
#ifndef FREEZETUNE_SERVER_DATA_BATCHING_H_
#define FREEZETUNE_SERVER_DATA_BATCHING_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "server/data/dataset.h"

namespace freezetune::data {

// One collated batch. Tensors are CPU, shape [B, T] with T the longest
// example in the batch; the caller moves them to its device.
struct Batch {
  at::Tensor input_ids;       // int64, pad positions hold the pad id
  at::Tensor token_type_ids;  // int64, 0 at pad positions
  at::Tensor attention_mask;  // int64, 1 for real tokens, 0 for padding
  // [B]: int64 class ids (classification) or float32 targets (regression);
  // undefined when the dataset carries no labels.
  at::Tensor labels;
  std::vector<int64_t> indices;  // dataset rows, in batch order
  int64_t tokens = 0;            // real (non-pad) tokens in the batch
};

// Collates `indices` (non-empty, each in [0, dataset.size())) with padding
// to the longest example. Throws std::out_of_range on a bad index: plans come
// from PlanBatches, so that is a programming error, and the trainer boundary
// catches std::exception.
Batch CollateBatch(const EncodedDataset& dataset, const std::vector<int64_t>& indices,
                   int64_t pad_id = 0);

// The batches of one epoch, as dataset indices. Every index appears exactly
// once; batches hold `batch_size` examples except possibly the last one
// (nothing is dropped). The plan depends only on (dataset lengths,
// batch_size, seed, epoch, shuffle, length_bucketed), on every platform:
// shuffling uses mt19937_64 and our own Fisher-Yates, not std::shuffle.
//  - shuffle, no bucketing: a seeded permutation cut into batches.
//  - shuffle + bucketing: a seeded permutation is cut into chunks of
//    kBucketChunkBatches batches, each chunk is sorted by length (stable)
//    and cut into batches, and then the order of all batches is shuffled.
//    Batches hold similar lengths, so far less padding, and stay random.
//  - no shuffle: dataset order, or with bucketing sorted by length overall
//    (for evaluation, where order does not matter).
// batch_size < 1 is treated as 1.
inline constexpr int64_t kBucketChunkBatches = 50;
std::vector<std::vector<int64_t>> PlanBatches(const EncodedDataset& dataset, int64_t batch_size,
                                              uint64_t seed, int64_t epoch, bool shuffle,
                                              bool length_bucketed);

// Token slots a plan occupies after dynamic padding: the sum over batches of
// batch size times the longest example. Minus the real tokens, that is the
// padding the plan costs.
int64_t PaddedTokens(const EncodedDataset& dataset,
                     const std::vector<std::vector<int64_t>>& plan);

}  // namespace freezetune::data

#endif  // FREEZETUNE_SERVER_DATA_BATCHING_H_
