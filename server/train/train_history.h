// A run's training history as the files people and tools read: the Hugging
// Face Trainer's trainer_state.json (log_history with loss, learning_rate,
// epoch, step and eval_* entries; best_metric, best_model_checkpoint,
// global_step, ...), and the same history as CSV (history.csv).
//
// TrainHistory records the TrainMetrics and EvalMetrics events of a run as
// the trainer emits them. Torch-free. Not thread-safe: one run's training
// thread records and then writes.
#ifndef FREEZETUNE_SERVER_TRAIN_TRAIN_HISTORY_H_
#define FREEZETUNE_SERVER_TRAIN_TRAIN_HISTORY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "freezetune/v1/freezetune.pb.h"
#include "nlohmann/json.hpp"

namespace freezetune::train {

// What trainer_state.json says beyond the events.
struct TrainerStateInfo {
  std::string output_dir;         // best_model_checkpoint: the output holds the best weights
  std::string selection_metric;   // "accuracy", "loss", ...
  bool regression = false;        // eval_* keys: mse/pearson/spearman instead of accuracy/...
  int64_t global_step = 0;
  int64_t max_steps = 0;
  int epochs = 0;
  int batch_size = 0;
  int logging_steps = 0;
  int eval_steps = 0;             // 0: evaluation at epoch ends
  double train_seconds = 0.0;
  bool has_best = false;
  v1::EvalMetrics best_eval;
};

class TrainHistory {
 public:
  // Keeps TrainMetrics and EvalMetrics; ignores other events.
  void Record(const v1::JobEvent& event);

  // The Trainer-layout JSON (see the file comment).
  nlohmann::json TrainerState(const TrainerStateInfo& info) const;

  // One row per log_history entry: step, epoch, loss, learning_rate,
  // samples_per_second, then eval_loss and the eval metrics; empty cells
  // where an entry has no value.
  std::string Csv(const TrainerStateInfo& info) const;

  // Writes trainer_state.json and history.csv into info.output_dir
  // (atomically, each).
  absl::Status WriteFiles(const TrainerStateInfo& info) const;

 private:
  std::vector<v1::TrainMetrics> train_;
  std::vector<v1::EvalMetrics> evals_;
};

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_TRAIN_HISTORY_H_
