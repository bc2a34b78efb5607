// The decisions of a freeze sweep, free of I/O: which candidates a SweepSpec
// expands to (and whether it is valid), which metric picks the winner and in
// which direction, how a trial's row follows its job, the winner, and
// successive halving's rung cuts. SweepManager (sweep_manager.h) does the
// I/O around these: reading jobs and events, cancelling jobs, writing the
// store and the output.
//
// Thread safety: free functions are pure; a HalvingPolicy is a value owned by
// one sweep's writer (not synchronized).
#ifndef FREEZETUNE_SERVER_SWEEPS_SWEEP_POLICY_H_
#define FREEZETUNE_SERVER_SWEEPS_SWEEP_POLICY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "freezetune/v1/freezetune.pb.h"

namespace freezetune::sweeps {

// Returns the value of `metric` in `eval`, or false for an unknown metric.
bool SweepMetricValue(const v1::EvalMetrics& eval, const std::string& metric, double* value);
// "loss" and "mse" are lower-is-better; every other metric higher.
bool SweepMetricLowerIsBetter(const std::string& metric);
// Index of the winner among `trials` (only rows with has_best and state
// FINISHED or STOPPED_EARLY count): best metric, ties to fewer trainable
// parameters, then to the lower index. -1 when no row counts.
int PickSweepWinner(const std::vector<v1::SweepTrial>& trials, bool lower_is_better);

// FINISHED, STOPPED_EARLY, FAILED, CANCELLED or PRUNED.
bool TrialEnded(v1::TrialState state);
// True when `a` is strictly better than `b`.
bool Better(double a, double b, bool lower_is_better);

// One candidate of a sweep, in candidate order.
struct Candidate {
  std::string field;  // e.g. "sweep.freeze_depths[1]", for errors
  std::string label;  // "depth=1", "head-only", "spec[0]", + " r=R", " lr=X"
  int32_t depth = -1;  // -1: head-only (filled from the plan) or explicit spec
  v1::FreezeSpec freeze;
  // Set when the sweep crosses learning rates: the trial job's
  // hyperparameters.learning_rate.
  std::optional<float> learning_rate;
};

// The candidates of `spec`: depths, then head-only, then explicit specs,
// each crossed with spec.lora_ranks (specs with a lora block only) and then
// with spec.learning_rates, the rates varying fastest. INVALID_ARGUMENT
// naming the field for a negative depth, a bad or duplicate rate or rank,
// ranks without a LoRA candidate, or fewer than two candidates.
absl::StatusOr<std::vector<Candidate>> ExpandCandidates(const v1::SweepSpec& spec);

struct Selection {
  std::string metric;
  bool lower_is_better = false;
};
// The metric and direction that pick the winner (defaults as the proto
// says); INVALID_ARGUMENT "sweep.selection_metric: ..." for an unknown one.
absl::StatusOr<Selection> ResolveSelection(const v1::SweepSpec& spec);

// INVALID_ARGUMENT naming "sweep.successive_halving..." for a bad schedule.
absl::Status ValidateHalving(const v1::SuccessiveHalving& halving);

// Order in which to queue the trials (indices into `sweep.trials`):
// shallowest frozen depth first, explicit specs last, stable otherwise, so
// that each depth finds the shallower one's frozen-prefix outputs stored.
std::vector<int> SubmitOrder(const v1::Sweep& sweep);

// The row state of a trial whose job is in `job` (PENDING stays PENDING
// while the job is queued).
v1::TrialState TrialStateForJob(const v1::Job& job, v1::TrialState current);

// Successive halving over one sweep's trials: records each trial's best
// metric at every rung it reaches and decides whether it misses the cut.
class HalvingPolicy {
 public:
  HalvingPolicy() = default;
  HalvingPolicy(const v1::SuccessiveHalving& halving, bool lower_is_better, int trials);

  struct Prune {
    int64_t rung_step = 0;
    int keep = 0;     // trials that go on at this rung
    int reached = 0;  // trials that reached it so far
  };
  // Trial `trial` has best metric `best` after an evaluation at `step`:
  // records it at every rung up to `step` not yet judged for this trial.
  // Returns the first rung whose cut it misses (it should be pruned; call
  // Pruned() once its job is cancelled); nullopt if it goes on. An `ended`
  // trial's values are recorded (a restart rebuilds the rungs from ended
  // trials) but never judged.
  std::optional<Prune> Observe(int trial, double best, int64_t step, bool ended);
  // The trial was pruned at the rung Observe() returned.
  void Pruned(int trial);

 private:
  v1::SuccessiveHalving halving_;
  bool lower_is_better_ = false;
  // Per trial, the first rung not yet judged; per rung, the best-so-far
  // metric of each trial that reached it.
  std::vector<int> next_rung_;
  std::vector<std::map<int, double>> rung_values_;
};

}  // namespace freezetune::sweeps

#endif  // FREEZETUNE_SERVER_SWEEPS_SWEEP_POLICY_H_
