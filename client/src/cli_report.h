// `freezetune report`: training curves as a self-contained SVG or HTML page
// (inline SVG and CSS, no JavaScript, nothing fetched), drawn from a job's
// stored events, or for a sweep, from its table and its trials' events.
//
// A job's report has three charts over the optimizer step: loss (training,
// and validation at each evaluation), the validation metric (the job's
// selection metric, plus accuracy when that is another one) and the learning
// rate. A sweep's report plots the selection metric against trainable
// parameters (log scale) for each candidate, the wall time per candidate,
// and the candidates' validation curves.
//
// The rendering functions are pure; FetchJobHistory and WriteReport do the
// RPCs and the file write. Not thread-safe beyond what Client is.
#ifndef FREEZETUNE_CLIENT_SRC_CLI_REPORT_H_
#define FREEZETUNE_CLIENT_SRC_CLI_REPORT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "freezetune/client.h"
#include "freezetune/v1/freezetune.pb.h"

namespace freezetune::cli {

// What a job's events say about its training.
struct JobHistory {
  v1::Job job;
  std::vector<v1::TrainMetrics> train;
  std::vector<v1::EvalMetrics> evals;
};

// Replays the job's events up to its current last sequence (a running job's
// report shows what happened so far; it does not wait for the end).
absl::StatusOr<JobHistory> FetchJobHistory(const Client& client, const std::string& job_id);

// One line chart's data.
struct Series {
  std::string label;
  std::string color;  // "#1f77b4"
  std::vector<std::pair<double, double>> points;
  bool line = true;     // connect the points
  bool markers = false; // draw a dot at each point
};

// A chart of `series` in a width x height box at (x, y): axes with ticks,
// the axis labels, a title and a legend. log_x: logarithmic x axis
// (non-positive x values are left out).
std::string SvgLineChart(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<Series>& series, int x,
                         int y, int width, int height, bool log_x = false);

// The whole picture for one job, or for a sweep and its trials' histories
// (in trial order; a trial without a job has an empty history).
std::string JobReportSvg(const JobHistory& history);
std::string SweepReportSvg(const v1::Sweep& sweep, const std::vector<JobHistory>& trials);

// An HTML page around an SVG picture with a summary table (key, value).
std::string HtmlReport(const std::string& title, const std::string& svg,
                       const std::vector<std::pair<std::string, std::string>>& summary);

// Fetches what it needs and writes `path`: HTML when it ends in ".html",
// else SVG. Ids starting with "sweep-" are sweeps.
absl::Status WriteReport(const Client& client, const std::string& id, const std::string& path);

}  // namespace freezetune::cli

#endif  // FREEZETUNE_CLIENT_SRC_CLI_REPORT_H_
