// How the CLI renders things: progress bar, eval lines, tables, JSON lines,
// and EventPrinter, which turns a stream of JobEvents into terminal output.
//
// Everything but EventPrinter is a pure function of its arguments, so the
// formats are unit-tested directly. EventPrinter writes to the ostream it was
// given and is used by one thread.
#ifndef FREEZETUNE_CLIENT_SRC_CLI_FORMAT_H_
#define FREEZETUNE_CLIENT_SRC_CLI_FORMAT_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "freezetune/v1/freezetune.pb.h"

namespace freezetune::cli {

// Short state names, as users see them: "RUNNING" for JOB_STATE_RUNNING,
// "SUCCEEDED" for SWEEP_STATE_SUCCEEDED, "PRUNED" for TRIAL_STATE_PRUNED.
std::string StateName(v1::JobState state);
std::string StateName(v1::SweepState state);
std::string StateName(v1::TrialState state);

// "0:42", "12:05", "1:02:03". Negative durations print as "0:00".
std::string FormatClock(absl::Duration d);

// 109482240 -> "109,482,240".
std::string FormatCount(int64_t n);

// "2026-11-26 08:00:09 UTC", or "-" for an unset timestamp.
std::string FormatTimestamp(const google::protobuf::Timestamp& ts);

// Age for tables: "just now", "42s ago", "5m ago", "3h ago", "2d ago"
// ("-" for an unset timestamp).
std::string FormatAge(const google::protobuf::Timestamp& ts, absl::Time now);

// `[#####-----] 120/300 40% ETA 0:42 loss 0.5312 lr 4.1e-05 812 samples/s`.
// The ETA part is left out when `eta` is empty; total <= 0 shows "?" and an
// empty bar. `width` is the number of bar cells. With `max_columns` > 0 the
// line fits in that many columns: samples/s, lr, ETA, the percentage and
// loss are dropped in that order, then the bar shrinks and goes; step/total
// always stays.
std::string FormatProgressBar(int64_t step, int64_t total,
                              std::optional<absl::Duration> eta, float loss,
                              float learning_rate, float samples_per_second,
                              int width = 10, int max_columns = 0);

// A sparkline of `values` in at most `width` cells ("▇▅▄▃▂▂▁"): values are
// averaged into cells, scaled between their min and max. "" when empty.
std::string Sparkline(const std::vector<double>& values, int width = 24);

// What a watch saw of the training curve, for the summary's sparklines.
struct Curves {
  std::vector<double> loss;             // TrainMetrics.loss, in order
  std::vector<v1::EvalMetrics> evals;   // every evaluation, in order
};

// Estimates time left from the rate between the first and the latest
// observation (event timestamps, so replayed events give the same answer).
class EtaEstimator {
 public:
  void Observe(int64_t step, absl::Time at);
  // Empty until two observations with increasing step and time exist.
  std::optional<absl::Duration> Eta(int64_t total_steps) const;

 private:
  std::optional<std::pair<int64_t, absl::Time>> first_, last_;
};

// `eval step 100 epoch 1.00: loss 0.48 acc 0.781 macro-F1 0.779` (plus mcc
// when set); regression metrics when there is no accuracy but mse/pearson.
std::string FormatEvalLine(const v1::EvalMetrics& m);

// Left-aligned columns separated by two spaces; first row is the header.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// The value of `metric` ("accuracy", "macro_f1", "mcc", "loss", "mse",
// "pearson", "spearman") in `m`; 0 for an unknown name.
double MetricValue(const v1::EvalMetrics& m, const std::string& metric);

// Tables for `list` (ID, STATE, NAME, PROGRESS, CREATED as an age; wide adds
// BEST, SWEEP, TENANT, STARTED, DURATION, OUTPUT), `get`, `plan`, and the
// end-of-watch summary (with loss and metric sparklines when `curves` has
// them).
std::string FormatJobList(const std::vector<v1::Job>& jobs, absl::Time now, bool wide = false);
std::string FormatJobDetails(const v1::Job& job);
std::string FormatPlan(const v1::PlanFreezeResponse& plan);
std::string FormatSummary(const v1::Job& job, const Curves& curves = {});

// `sweep-list`: ID, STATE, TRIALS (ended/total), WINNER (label or "-"),
// BEST (the winner's metric, else the best so far, "-" before any
// evaluation; with the metric's name) and CREATED (an age); wide adds NAME,
// ENDED and OUTPUT.
std::string FormatSweepList(const std::vector<v1::Sweep>& sweeps, absl::Time now,
                            bool wide = false);

// One sweep's table (candidates, depth, trainable parameters, best metric,
// step, wall time, state, job), the winner marked with '*'.
std::string FormatSweepTable(const v1::Sweep& sweep);

// One line of protobuf JSON mapping (no newline inside, none at the end).
std::string ToJsonLine(const google::protobuf::Message& msg);

// Renders a job's events. In JSON mode every event is one JSON line. In TTY
// mode TrainMetrics redraw one progress line in place (\r, clear to end of
// line), fitted to `columns` (0: no limit), and every other event prints on
// its own line above it. In text mode (a table wanted, stdout not a
// terminal) events print as lines, TrainMetrics included, with no escapes.
// Every mode keeps the curves for the summary.
class EventPrinter {
 public:
  enum class Mode { kJson, kTty, kText };
  EventPrinter(std::ostream& out, Mode mode, int columns = 0)
      : out_(out), mode_(mode), columns_(columns) {}
  void OnEvent(const v1::JobEvent& event);
  // Ends the progress line, if one is showing.
  void Finish();
  // The last state a StateChange announced (UNSPECIFIED if none) and its
  // message.
  v1::JobState last_state() const { return last_state_; }
  const std::string& last_message() const { return last_message_; }
  // Sequence of the last event printed (0 before the first).
  int64_t last_sequence() const { return last_sequence_; }
  const Curves& curves() const { return curves_; }

 private:
  void Line(const std::string& text);
  std::ostream& out_;
  Mode mode_;
  int columns_;
  int64_t last_sequence_ = 0;
  Curves curves_;
  EtaEstimator eta_;
  std::string bar_;  // the progress line currently shown ("" when none)
  v1::JobState last_state_ = v1::JOB_STATE_UNSPECIFIED;
  std::string last_message_;
};

}  // namespace freezetune::cli

#endif  // FREEZETUNE_CLIENT_SRC_CLI_FORMAT_H_
