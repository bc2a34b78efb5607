// Data-parallel training as the trainer sees it: one rank of N, each a
// separate process (freezetune-worker) holding a full model replica.
//
// The contract between ranks (what makes N ranks of batch B train exactly as
// one rank of batch N*B, up to float summation order):
//  - every rank plans the same global batches (TrainingBatches with
//    batch_size N*B, the job's seed) and takes its shard of each: rank r the
//    examples [r*B, (r+1)*B) of the global batch (fewer, or none, in a last
//    short batch);
//  - a rank's loss is its examples' mean scaled by (its examples / the
//    global batch's), so that the SUM all-reduce of the gradients is the
//    global batch's mean gradient;
//  - only the gradients of trainable parameters are all-reduced, flattened
//    into buckets of at most bucket_bytes (as PyTorch DDP), so frozen layers
//    cost nothing on the wire; every rank then takes the same optimizer step;
//  - decisions (stop requested, early stopping, the logged loss) are summed
//    over ranks at step boundaries and evaluation points, so every rank
//    leaves the loop at the same step; only rank 0 evaluates, writes
//    checkpoints and the output, and reports events.
//
// Thread safety: a GradientSync is used by one training thread.
#ifndef FREEZETUNE_SERVER_TRAIN_DATA_PARALLEL_H_
#define FREEZETUNE_SERVER_TRAIN_DATA_PARALLEL_H_

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace freezetune::train {

class GradientSync {
 public:
  virtual ~GradientSync() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Sums the gradients of `params` (trainable, in model order) over the
  // ranks, in place. A parameter without a gradient on this rank (an empty
  // shard) contributes zeros and gets the sum.
  virtual void AllReduceGradients(const std::vector<torch::Tensor>& params) = 0;
  // Copies rank 0's values of `params` to every rank.
  virtual void Broadcast(const std::vector<torch::Tensor>& params) = 0;
  // Sums small per-rank values (losses, counts, flags) over the ranks.
  virtual std::vector<double> SumScalars(const std::vector<double>& values) = 0;
  // Bytes of gradients handed to all-reduce by the last AllReduceGradients.
  virtual int64_t last_allreduce_bytes() const = 0;
};

// Rank `rank`'s part of a global batch of up to N * per_rank examples: positions [rank * per_rank, (rank + 1) * per_rank) clipped to
// the batch; empty when the batch is shorter than that.
std::vector<int64_t> ShardOf(const std::vector<int64_t>& global_batch, int rank,
                             int64_t per_rank);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_DATA_PARALLEL_H_
