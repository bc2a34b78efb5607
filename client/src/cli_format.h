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

// "RUNNING" for JOB_STATE_RUNNING.
std::string StateName(v1::JobState state);

// "0:42", "12:05", "1:02:03". Negative durations print as "0:00".
std::string FormatClock(absl::Duration d);

// 109482240 -> "109,482,240".
std::string FormatCount(int64_t n);

// "2026-11-26 08:00:09" (UTC), or "-" for an unset timestamp.
std::string FormatTimestamp(const google::protobuf::Timestamp& ts);

// `[#####-----] 120/300 40% ETA 0:42 loss 0.5312 lr 4.1e-05 812 samples/s`.
// The ETA part is left out when `eta` is empty; total <= 0 shows "?" and an
// empty bar. `width` is the number of bar cells.
std::string FormatProgressBar(int64_t step, int64_t total,
                              std::optional<absl::Duration> eta, float loss,
                              float learning_rate, float samples_per_second,
                              int width = 10);

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

// Tables for `list`, `get`, `plan`, and the end-of-watch summary.
std::string FormatJobList(const std::vector<v1::Job>& jobs);
std::string FormatJobDetails(const v1::Job& job);
std::string FormatPlan(const v1::PlanFreezeResponse& plan);
std::string FormatSummary(const v1::Job& job);

// `sweep-list`: ID, STATE, TRIALS (ended/total), WINNER (label or "-"),
// BEST (the winner's metric, else the best so far, "-" before any
// evaluation; with the metric's name) and CREATED.
std::string FormatSweepList(const std::vector<v1::Sweep>& sweeps);

// One line of protobuf JSON mapping (no newline inside, none at the end).
std::string ToJsonLine(const google::protobuf::Message& msg);

// Renders a job's events. In JSON mode (--json, or stdout not a TTY) every
// event is one JSON line. In TTY mode TrainMetrics redraw one progress line
// in place (\r, clear to end of line) and every other event prints on its own
// line above it.
class EventPrinter {
 public:
  enum class Mode { kJson, kTty };
  EventPrinter(std::ostream& out, Mode mode) : out_(out), mode_(mode) {}
  void OnEvent(const v1::JobEvent& event);
  // Ends the progress line, if one is showing.
  void Finish();
  // The last state a StateChange announced (UNSPECIFIED if none) and its
  // message.
  v1::JobState last_state() const { return last_state_; }
  const std::string& last_message() const { return last_message_; }

 private:
  void Line(const std::string& text);
  std::ostream& out_;
  Mode mode_;
  EtaEstimator eta_;
  std::string bar_;  // the progress line currently shown ("" when none)
  v1::JobState last_state_ = v1::JOB_STATE_UNSPECIFIED;
  std::string last_message_;
};

}  // namespace freezetune::cli

#endif  // FREEZETUNE_CLIENT_SRC_CLI_FORMAT_H_
