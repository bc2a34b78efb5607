#include "client/src/cli_report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/src/cli_format.h"

namespace freezetune::cli {
namespace {

constexpr const char* kBlue = "#1f77b4";
constexpr const char* kOrange = "#ff7f0e";
constexpr const char* kGreen = "#2ca02c";
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
std::vector<double> NiceTicks(double lo, double hi, int target = 5) {
  const double span = hi - lo;
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::string Num(double v) {
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) return absl::StrFormat("%.2g", v);
  return absl::StrFormat("%.6g", v);
}

std::string Count(double v) {
  if (v >= 1e6) return absl::StrFormat("%gM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%gk", v / 1e3);
  return absl::StrFormat("%g", v);
}

std::string SelectionMetric(const v1::Job& job) {
  if (!job.result().selection_metric().empty()) return job.result().selection_metric();
  if (!job.spec().hyperparameters().selection_metric().empty()) {
    return job.spec().hyperparameters().selection_metric();
  }
  return "accuracy";
}

std::string Svg(int width, int height, const std::string& body) {
  return absl::StrCat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", width, "\" height=\"", height,
      "\" viewBox=\"0 0 ", width, " ", height,
      "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
      body, "</svg>\n");
}

}  // namespace

absl::StatusOr<JobHistory> FetchJobHistory(const Client& client, const std::string& job_id) {
  JobHistory h;
  absl::StatusOr<v1::Job> job = client.Get(job_id);
  if (!job.ok()) return job.status();
  h.job = *std::move(job);
  const int64_t last = h.job.last_sequence();
  if (last <= 0) return h;
  std::unique_ptr<WatchStream> stream = client.OpenWatch(job_id, 0);
  v1::JobEvent e;
  while (stream->Next(&e)) {
    if (e.has_train()) h.train.push_back(e.train());
    if (e.has_eval()) h.evals.push_back(e.eval());
    if (e.sequence() >= last) break;
  }
  stream->Cancel();
  if (e.sequence() < last && !stream->status().ok()) return stream->status();
  return h;
}

std::string SvgLineChart(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<Series>& series, int x,
                         int y, int width, int height, bool log_x) {
  const int left = x + 64, right = x + width - 16, top = y + 28, bottom = y + height - 44;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  auto tx = [&](double v) { return log_x ? std::log10(v) : v; };
  for (const Series& s : series) {
    for (auto [px, py] : s.points) {
      if ((log_x && px <= 0) || !std::isfinite(px) || !std::isfinite(py)) continue;
      x_lo = std::min(x_lo, tx(px));
      x_hi = std::max(x_hi, tx(px));
      y_lo = std::min(y_lo, py);
      y_hi = std::max(y_hi, py);
    }
  }
  std::string out = absl::StrFormat(
      "<g class=\"chart\">\n<text x=\"%d\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">%s</text>\n",
      left, y + 18, Escape(title));
  absl::StrAppendFormat(&out,
                        "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
                        "stroke=\"#444\"/>\n",
                        left, top, right - left, bottom - top);
  // Axis labels.
  absl::StrAppendFormat(&out, "<text class=\"xlabel\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                        (left + right) / 2, bottom + 36, Escape(x_label));
  absl::StrAppendFormat(&out,
                        "<text class=\"ylabel\" x=\"%d\" y=\"%d\" text-anchor=\"middle\" "
                        "transform=\"rotate(-90 %d %d)\">%s</text>\n",
                        x + 14, (top + bottom) / 2, x + 14, (top + bottom) / 2, Escape(y_label));
  if (!std::isfinite(x_lo)) {
    absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n</g>\n",
                          (left + right) / 2, (top + bottom) / 2);
    return out;
  }
  if (x_hi - x_lo < 1e-12) {
    x_lo -= log_x ? 0.5 : 1;
    x_hi += log_x ? 0.5 : 1;
  }
  // Room for markers and tick labels at the edges.
  const double x_pad = (x_hi - x_lo) * 0.04;
  const double data_x_lo = x_lo, data_x_hi = x_hi;
  x_lo -= x_pad;
  x_hi += x_pad;
  if (y_hi - y_lo < 1e-12) {
    const double pad = std::max(std::abs(y_hi) * 0.05, 1e-6);
    y_lo -= pad;
    y_hi += pad;
  } else {
    const double pad = (y_hi - y_lo) * 0.05;
    y_lo -= pad;
    y_hi += pad;
  }
  auto sx = [&](double v) { return left + (tx(v) - x_lo) / (x_hi - x_lo) * (right - left); };
  auto sy = [&](double v) { return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top); };
  // Ticks and grid lines.
  std::vector<double> xticks;
  if (log_x) {
    for (double e = std::floor(x_lo); e <= std::ceil(x_hi); e += 1) {
      if (e >= x_lo - 1e-9 && e <= x_hi + 1e-9) xticks.push_back(std::pow(10.0, e));
    }
    if (xticks.size() < 2) {
      // Less than a decade: round values between the data's ends.
      xticks.clear();
      for (double t : NiceTicks(std::pow(10.0, data_x_lo), std::pow(10.0, data_x_hi), 4)) {
        if (t > 0) xticks.push_back(t);
      }
    }
  } else {
    xticks = NiceTicks(data_x_lo, data_x_hi);
  }
  for (double t : xticks) {
    const double px = sx(t);
    absl::StrAppendFormat(&out,
                          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e0e0e0\"/>"
                          "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#333\">%s</text>\n",
                          px, top, px, bottom, px, bottom + 16, log_x ? Count(t) : Num(t));
  }
  for (double t : NiceTicks(y_lo, y_hi)) {
    const double py = sy(t);
    absl::StrAppendFormat(&out,
                          "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>"
                          "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" fill=\"#333\">%s</text>\n",
                          left, py, right, py, left - 6, py + 4, Num(t));
  }
  // Series.
  int legend_y = top + 16;
  for (const Series& s : series) {
    std::string path;
    std::string dots;
    for (auto [px, py] : s.points) {
      if ((log_x && px <= 0) || !std::isfinite(px) || !std::isfinite(py)) continue;
      absl::StrAppendFormat(&path, "%s%.1f,%.1f", path.empty() ? "" : " ", sx(px), sy(py));
      if (s.markers) {
        absl::StrAppendFormat(&dots, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>",
                              sx(px), sy(py), s.color);
      }
    }
    if (s.line && !path.empty()) {
      absl::StrAppendFormat(&out,
                            "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" "
                            "stroke-width=\"2\" points=\"%s\"/>\n",
                            s.color, path);
    }
    if (!dots.empty()) absl::StrAppend(&out, "<g class=\"series\">", dots, "</g>\n");
    if (!s.label.empty()) {
      absl::StrAppendFormat(&out,
                            "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                            "<text x=\"%d\" y=\"%d\" fill=\"#333\">%s</text>\n",
                            right - 150, legend_y - 5, s.color, right - 134, legend_y,
                            Escape(s.label));
      legend_y += 16;
    }
  }
  absl::StrAppend(&out, "</g>\n");
  return out;
}

std::string JobReportSvg(const JobHistory& h) {
  const int width = 900, chart_h = 280;
  const std::string metric = SelectionMetric(h.job);
  Series train_loss{"training loss", kBlue, {}, true, false};
  Series lr{"learning rate", kGreen, {}, true, false};
  for (const v1::TrainMetrics& t : h.train) {
    train_loss.points.emplace_back(t.step(), t.loss());
    lr.points.emplace_back(t.step(), t.learning_rate());
  }
  Series eval_loss{"validation loss", kOrange, {}, true, true};
  Series eval_metric{absl::StrCat("validation ", metric), kOrange, {}, true, true};
  Series eval_acc{"validation accuracy", kBlue, {}, true, true};
  for (const v1::EvalMetrics& e : h.evals) {
    eval_loss.points.emplace_back(e.step(), e.loss());
    eval_metric.points.emplace_back(e.step(), MetricValue(e, metric));
    eval_acc.points.emplace_back(e.step(), e.accuracy());
  }
  std::vector<Series> metric_series = {eval_metric};
  if (metric != "accuracy" && metric != "loss" && h.job.result().best_eval().accuracy() > 0) {
    metric_series.push_back(eval_acc);
  }
  std::string title = h.job.id();
  if (!h.job.spec().display_name().empty()) absl::StrAppend(&title, " (", h.job.spec().display_name(), ")");
  absl::StrAppend(&title, " ", StateName(h.job.state()));
  std::string body = absl::StrFormat(
      "<text x=\"16\" y=\"24\" font-size=\"16\" font-weight=\"bold\">%s</text>\n", Escape(title));
  int y = 36;
  body += SvgLineChart("Loss", "step", "loss", {train_loss, eval_loss}, 0, y, width, chart_h);
  y += chart_h;
  body += SvgLineChart(absl::StrCat("Validation ", metric), "step", metric, metric_series, 0, y,
                       width, chart_h);
  y += chart_h;
  body += SvgLineChart("Learning rate", "step", "learning rate", {lr}, 0, y, width, chart_h);
  y += chart_h;
  return Svg(width, y + 8, body);
}

std::string SweepReportSvg(const v1::Sweep& sweep, const std::vector<JobHistory>& trials) {
  const int width = 900, chart_h = 300;
  const std::string metric = sweep.selection_metric().empty() ? "accuracy" : sweep.selection_metric();
  std::vector<Series> scatter, curves;
  Series wall{"", kBlue, {}, false, false};
  for (int i = 0; i < sweep.trials_size(); ++i) {
    const v1::SweepTrial& t = sweep.trials(i);
    const std::string color = kPalette[i % 8];
    if (t.has_best()) {
      scatter.push_back({absl::StrCat(t.label(), i == sweep.winner_index() ? " (winner)" : ""),
                         color, {{static_cast<double>(t.trainable_parameters()), t.best_metric()}},
                         false, true});
    }
    Series c{t.label(), color, {}, true, true};
    if (i < static_cast<int>(trials.size())) {
      for (const v1::EvalMetrics& e : trials[i].evals) {
        c.points.emplace_back(e.step(), MetricValue(e, metric));
      }
    }
    curves.push_back(std::move(c));
  }
  std::string body = absl::StrFormat(
      "<text x=\"16\" y=\"24\" font-size=\"16\" font-weight=\"bold\">%s %s (%s)</text>\n",
      Escape(sweep.id()), StateName(sweep.state()), Escape(metric));
  int y = 36;
  body += SvgLineChart(absl::StrCat("Best validation ", metric, " vs trainable parameters"),
                       "trainable parameters (log scale)", metric, scatter, 0, y, width, chart_h,
                       /*log_x=*/true);
  y += chart_h;
  // Wall time per candidate: horizontal bars.
  const int bar_h = 22, top = y + 30, left = 170;
  double max_wall = 0;
  for (const v1::SweepTrial& t : sweep.trials()) max_wall = std::max(max_wall, t.wall_seconds());
  absl::StrAppendFormat(&body,
                        "<g class=\"chart\"><text x=\"64\" y=\"%d\" font-size=\"14\" "
                        "font-weight=\"bold\">Wall time per candidate</text>\n",
                        y + 18);
  for (int i = 0; i < sweep.trials_size(); ++i) {
    const v1::SweepTrial& t = sweep.trials(i);
    const double w = max_wall > 0 ? t.wall_seconds() / max_wall * (width - left - 120) : 0;
    const int by = top + i * (bar_h + 6);
    absl::StrAppendFormat(&body,
                          "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>"
                          "<rect class=\"series\" x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
                          "fill=\"%s\"/><text x=\"%.1f\" y=\"%d\">%.1f s %s</text>\n",
                          left - 8, by + 15, Escape(t.label()), left, by, w, bar_h,
                          kPalette[i % 8], left + w + 6, by + 15, t.wall_seconds(),
                          StateName(t.state()));
  }
  absl::StrAppendFormat(&body, "<text class=\"xlabel\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">wall time (s)</text></g>\n",
                        (left + width) / 2, top + sweep.trials_size() * (bar_h + 6) + 16);
  y = top + sweep.trials_size() * (bar_h + 6) + 30;
  body += SvgLineChart(absl::StrCat("Validation ", metric, " per candidate"), "step", metric,
                       curves, 0, y, width, chart_h);
  y += chart_h;
  return Svg(width, y + 8, body);
}

std::string HtmlReport(const std::string& title, const std::string& svg,
                       const std::vector<std::pair<std::string, std::string>>& summary) {
  std::string rows;
  for (const auto& [k, v] : summary) {
    absl::StrAppend(&rows, "<tr><th>", Escape(k), "</th><td>", Escape(v), "</td></tr>\n");
  }
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>", Escape(title),
      "</title>\n<style>body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:16px;"
      "color:#222}table{border-collapse:collapse;margin-bottom:12px}th,td{text-align:left;"
      "padding:2px 12px 2px 0;font-size:13px}th{color:#555;font-weight:normal}</style>\n"
      "</head><body>\n<h1 style=\"font-size:18px\">",
      Escape(title), "</h1>\n<table>\n", rows, "</table>\n", svg,
      "<p style=\"color:#888;font-size:11px\">freezetune report</p>\n</body></html>\n");
}

absl::Status WriteReport(const Client& client, const std::string& id, const std::string& path) {
  std::string svg, title;
  std::vector<std::pair<std::string, std::string>> summary;
  if (absl::StartsWith(id, "sweep-")) {
    absl::StatusOr<v1::Sweep> sweep = client.GetSweep(id);
    if (!sweep.ok()) return sweep.status();
    std::vector<JobHistory> trials;
    for (const v1::SweepTrial& t : sweep->trials()) {
      JobHistory h;
      if (!t.job_id().empty()) {
        absl::StatusOr<JobHistory> got = FetchJobHistory(client, t.job_id());
        if (!got.ok()) return got.status();
        h = *std::move(got);
      }
      trials.push_back(std::move(h));
    }
    svg = SweepReportSvg(*sweep, trials);
    title = absl::StrCat("freezetune sweep ", id);
    summary = {{"state", StateName(sweep->state())},
               {"selection metric", sweep->selection_metric()},
               {"trials", absl::StrCat(sweep->trials_size())},
               {"created", FormatTimestamp(sweep->create_time())}};
    if (sweep->winner_index() >= 0 && sweep->winner_index() < sweep->trials_size()) {
      const v1::SweepTrial& w = sweep->trials(sweep->winner_index());
      summary.push_back({"winner", absl::StrFormat("%s (%s %.4f, %s trainable parameters)",
                                                   w.label(), sweep->selection_metric(),
                                                   w.best_metric(),
                                                   FormatCount(w.trainable_parameters()))});
      summary.push_back({"output", sweep->output_uri()});
    }
  } else {
    absl::StatusOr<JobHistory> h = FetchJobHistory(client, id);
    if (!h.ok()) return h.status();
    svg = JobReportSvg(*h);
    title = absl::StrCat("freezetune job ", id);
    const v1::Job& j = h->job;
    summary = {{"state", StateName(j.state())},
               {"name", j.spec().display_name()},
               {"model", j.spec().model_uri()},
               {"created", FormatTimestamp(j.create_time())},
               {"steps", absl::StrCat(j.result().steps())}};
    if (j.result().has_best_eval()) {
      std::string best = FormatEvalLine(j.result().best_eval());
      summary.push_back({"best eval", best.substr(std::min<size_t>(5, best.size()))});
    }
    if (j.result().total_parameters() > 0) {
      summary.push_back({"trainable parameters",
                         absl::StrCat(FormatCount(j.result().trainable_parameters()), " of ",
                                      FormatCount(j.result().total_parameters()))});
    }
    if (!j.result().output_uri().empty()) summary.push_back({"output", j.result().output_uri()});
  }
  const std::string content =
      absl::EndsWith(path, ".html") ? HtmlReport(title, svg, summary) : svg;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) return absl::FailedPreconditionError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

}  // namespace freezetune::cli
