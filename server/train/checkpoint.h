// Resumable training checkpoints: what the trainer needs to continue a run
// exactly where it stopped (trainable weights, AdamW moments by parameter
// name, step and data position, best weights, evaluation history, the CPU
// RNG state).
//
// Layout: <checkpoint_dir>/step-<12-digit step>/ with
//   weights.safetensors    every parameter that has trained (frozen ones are
//                          not stored: they equal the input model)
//   optimizer.safetensors  "exp_avg/<name>", "exp_avg_sq/<name>"
//   best.safetensors       the best evaluation's weights (when there is one)
//   state.json             everything else; written last
// A checkpoint is written into "step-N.partial" and renamed when complete,
// so readers only ever see whole checkpoints; older ones beyond keep_last
// are removed afterwards.
//
// Thread safety: free functions; one writer per checkpoint_dir at a time.
#ifndef FREEZETUNE_SERVER_TRAIN_CHECKPOINT_H_
#define FREEZETUNE_SERVER_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/model/safetensors.h"

namespace freezetune::train {

struct AdamMoments {
  int64_t step = 0;
  torch::Tensor exp_avg;
  torch::Tensor exp_avg_sq;
};

struct CheckpointState {
  int64_t step = 0;        // optimizer steps done
  int epoch = 0;           // 0-based epoch to continue in
  int64_t next_micro = 0;  // first micro-batch of that epoch not yet run
  std::vector<bool> stages_applied;
  int evals_without_improvement = 0;
  int64_t last_eval_step = -1;
  bool has_best = false;
  v1::EvalMetrics best_eval;
  v1::EvalMetrics final_eval;
  std::vector<v1::EvalMetrics> history;
  std::string rng_state;  // CPU generator state bytes
  // Parameter names in the model and which were trainable, to refuse a
  // checkpoint written for a different model or freeze spec.
  std::vector<std::string> parameter_names;
  model::NamedTensors weights;
  model::NamedTensors best_weights;
  std::map<std::string, AdamMoments> optimizer;
};

inline constexpr int kKeepCheckpoints = 2;

// Writes `state` as a new checkpoint directory and prunes older ones down to
// `keep_last`. Returns the directory written.
absl::StatusOr<std::string> WriteCheckpoint(const std::string& checkpoint_dir,
                                            const CheckpointState& state,
                                            int keep_last = kKeepCheckpoints);

// The newest complete checkpoint in `checkpoint_dir`; nullopt when there is
// none (or the directory does not exist). Errors for a checkpoint that
// exists but cannot be read (DATA_LOSS).
absl::StatusOr<std::optional<CheckpointState>> ReadLatestCheckpoint(
    const std::string& checkpoint_dir);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_CHECKPOINT_H_
