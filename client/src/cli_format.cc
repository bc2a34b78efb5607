#include "client/src/cli_format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace freezetune::cli {
namespace {

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

bool IsSet(const google::protobuf::Timestamp& ts) {
  return ts.seconds() != 0 || ts.nanos() != 0;
}

std::string Progress(const v1::JobProgress& p) {
  if (p.total_steps() <= 0) return "-";
  return absl::StrFormat("%d/%d %d%%", p.step(), p.total_steps(),
                         p.step() * 100 / p.total_steps());
}

}  // namespace

namespace {

std::string ShortName(const std::string& full, absl::string_view prefix) {
  absl::string_view v = full;
  absl::ConsumePrefix(&v, prefix);
  return v.empty() ? "UNKNOWN" : std::string(v);
}

}  // namespace

std::string StateName(v1::JobState state) {
  return ShortName(v1::JobState_Name(state), "JOB_STATE_");
}

std::string StateName(v1::SweepState state) {
  return ShortName(v1::SweepState_Name(state), "SWEEP_STATE_");
}

std::string StateName(v1::TrialState state) {
  return ShortName(v1::TrialState_Name(state), "TRIAL_STATE_");
}

std::string FormatClock(absl::Duration d) {
  int64_t s = absl::ToInt64Seconds(d);
  if (s < 0) s = 0;
  if (s >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  }
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string FormatCount(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return n < 0 ? "-" + out : out;
}

std::string FormatTimestamp(const google::protobuf::Timestamp& ts) {
  if (!IsSet(ts)) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", ToTime(ts), absl::UTCTimeZone());
}

std::string FormatAge(const google::protobuf::Timestamp& ts, absl::Time now) {
  if (!IsSet(ts)) return "-";
  const int64_t s = absl::ToInt64Seconds(now - ToTime(ts));
  if (s < 5) return "just now";
  if (s < 120) return absl::StrCat(s, "s ago");
  if (s < 7200) return absl::StrCat(s / 60, "m ago");
  if (s < 2 * 86400) return absl::StrCat(s / 3600, "h ago");
  return absl::StrCat(s / 86400, "d ago");
}

std::string FormatProgressBar(int64_t step, int64_t total,
                              std::optional<absl::Duration> eta, float loss,
                              float learning_rate, float samples_per_second,
                              int width, int max_columns) {
  // Fields in the order they are shown; `drop` is the order they go in when
  // the line is too wide (lower goes first).
  struct Field {
    std::string text;
    int drop;
  };
  const std::string count = absl::StrCat(step, "/", total > 0 ? absl::StrCat(total) : "?");
  int percent = 0;
  if (total > 0) percent = static_cast<int>(std::clamp<int64_t>(step, 0, total) * 100 / total);
  std::vector<Field> fields = {{count, 99}};
  if (total > 0) fields.push_back({absl::StrCat(percent, "%"), 3});
  if (eta) fields.push_back({absl::StrCat("ETA ", FormatClock(*eta)), 2});
  fields.push_back({absl::StrFormat("loss %.4f", loss), 4});
  fields.push_back({absl::StrFormat("lr %.2g", learning_rate), 1});
  fields.push_back({absl::StrFormat("%.0f samples/s", samples_per_second), 0});
  auto bar = [&](int cells) {
    if (cells <= 0) return std::string();
    int filled = total > 0 ? static_cast<int>(std::clamp<int64_t>(step, 0, total) * cells / total)
                           : 0;
    return absl::StrCat("[", std::string(filled, '#'), std::string(cells - filled, '-'), "] ");
  };
  auto render = [&](int cells) {
    std::string out = bar(cells);
    for (size_t i = 0; i < fields.size(); ++i) {
      absl::StrAppend(&out, i ? " " : "", fields[i].text);
    }
    return out;
  };
  std::string line = render(width);
  if (max_columns <= 0) return line;
  // Drop fields, lowest priority first, until the line fits.
  for (int level = 0; level <= 4 && static_cast<int>(line.size()) > max_columns; ++level) {
    fields.erase(std::remove_if(fields.begin(), fields.end(),
                                [&](const Field& f) { return f.drop == level; }),
                 fields.end());
    line = render(width);
  }
  // Then shrink the bar (at least 3 cells), then leave it out.
  for (int cells = width; static_cast<int>(line.size()) > max_columns && cells >= 3; --cells) {
    line = render(cells);
  }
  if (static_cast<int>(line.size()) > max_columns) line = render(0);
  if (static_cast<int>(line.size()) > max_columns) line.resize(max_columns);
  return line;
}

std::string Sparkline(const std::vector<double>& values, int width) {
  static const char* kBlocks[] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                  "\u2585", "\u2586", "\u2587", "\u2588"};
  std::vector<double> finite;
  for (double v : values) {
    if (std::isfinite(v)) finite.push_back(v);
  }
  if (finite.empty() || width <= 0) return "";
  const int cells = std::min<int>(width, static_cast<int>(finite.size()));
  std::vector<double> avg(cells, 0.0);
  for (int c = 0; c < cells; ++c) {
    const size_t begin = finite.size() * c / cells;
    const size_t end = std::max(begin + 1, finite.size() * (c + 1) / cells);
    for (size_t i = begin; i < end; ++i) avg[c] += finite[i];
    avg[c] /= static_cast<double>(end - begin);
  }
  const auto [lo, hi] = std::minmax_element(avg.begin(), avg.end());
  std::string out;
  for (double v : avg) {
    const int level = *hi > *lo ? static_cast<int>(std::lround((v - *lo) / (*hi - *lo) * 7)) : 3;
    out += kBlocks[std::clamp(level, 0, 7)];
  }
  return out;
}

double MetricValue(const v1::EvalMetrics& m, const std::string& metric) {
  if (metric == "accuracy") return m.accuracy();
  if (metric == "macro_f1") return m.macro_f1();
  if (metric == "mcc") return m.mcc();
  if (metric == "loss") return m.loss();
  if (metric == "mse") return m.mse();
  if (metric == "pearson") return m.pearson();
  if (metric == "spearman") return m.spearman();
  return 0.0;
}

void EtaEstimator::Observe(int64_t step, absl::Time at) {
  if (!first_) first_ = {step, at};
  last_ = {step, at};
}

std::optional<absl::Duration> EtaEstimator::Eta(int64_t total_steps) const {
  if (!first_ || !last_) return std::nullopt;
  const int64_t steps = last_->first - first_->first;
  const absl::Duration elapsed = last_->second - first_->second;
  if (steps <= 0 || elapsed <= absl::ZeroDuration()) return std::nullopt;
  const int64_t left = std::max<int64_t>(total_steps - last_->first, 0);
  return elapsed * (static_cast<double>(left) / static_cast<double>(steps));
}

std::string FormatEvalLine(const v1::EvalMetrics& m) {
  std::string out =
      absl::StrFormat("eval step %d epoch %.2f: loss %.4g", m.step(), m.epoch(),
                      m.loss());
  const bool regression =
      m.accuracy() == 0 && m.macro_f1() == 0 &&
      (m.mse() != 0 || m.pearson() != 0 || m.spearman() != 0);
  if (regression) {
    absl::StrAppendFormat(&out, " mse %.4g pearson %.3f spearman %.3f",
                          m.mse(), m.pearson(), m.spearman());
  } else {
    absl::StrAppendFormat(&out, " acc %.3f macro-F1 %.3f", m.accuracy(),
                          m.macro_f1());
    if (m.mcc() != 0) absl::StrAppendFormat(&out, " mcc %.3f", m.mcc());
  }
  return out;
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) {
        line.append(widths[i] - row[i].size() + 2, ' ');
      }
    }
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  }
  return out;
}

std::string FormatJobList(const std::vector<v1::Job>& jobs, absl::Time now, bool wide) {
  std::vector<std::vector<std::string>> rows = {{"ID", "STATE", "NAME", "PROGRESS", "CREATED"}};
  if (wide) {
    for (const char* h : {"BEST", "SWEEP", "TENANT", "STARTED", "DURATION", "OUTPUT"}) {
      rows[0].push_back(h);
    }
  }
  for (const v1::Job& j : jobs) {
    rows.push_back({j.id(), StateName(j.state()),
                    j.spec().display_name().empty() ? "-" : j.spec().display_name(),
                    Progress(j.progress()), FormatAge(j.create_time(), now)});
    if (!wide) continue;
    const v1::JobResult& r = j.result();
    std::string best = "-";
    if (r.has_best_eval()) {
      const std::string metric = r.selection_metric().empty() ? "accuracy" : r.selection_metric();
      best = absl::StrFormat("%s %.4f", metric, MetricValue(r.best_eval(), metric));
    }
    std::string duration = "-";
    if (IsSet(j.start_time())) {
      const absl::Time end = IsSet(j.end_time()) ? ToTime(j.end_time()) : now;
      duration = FormatClock(end - ToTime(j.start_time()));
    }
    for (std::string v : {best, j.sweep_id(), j.tenant(), FormatTimestamp(j.start_time()),
                          duration, r.output_uri()}) {
      rows.back().push_back(v.empty() ? "-" : v);
    }
  }
  return FormatTable(rows);
}

std::string FormatSweepList(const std::vector<v1::Sweep>& sweeps, absl::Time now, bool wide) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "TRIALS", "WINNER", "BEST", "CREATED"}};
  if (wide) {
    for (const char* h : {"NAME", "ENDED", "OUTPUT"}) rows[0].push_back(h);
  }
  for (const v1::Sweep& s : sweeps) {
    int ended = 0;
    bool has_best = false;
    double best = 0;
    for (const v1::SweepTrial& t : s.trials()) {
      switch (t.state()) {
        case v1::TRIAL_STATE_FINISHED:
        case v1::TRIAL_STATE_STOPPED_EARLY:
        case v1::TRIAL_STATE_FAILED:
        case v1::TRIAL_STATE_CANCELLED:
        case v1::TRIAL_STATE_PRUNED:
          ++ended;
          break;
        default:
          break;
      }
      if (!t.has_best()) continue;
      if (!has_best || (s.lower_is_better() ? t.best_metric() < best : t.best_metric() > best)) {
        best = t.best_metric();
      }
      has_best = true;
    }
    const bool won = s.winner_index() >= 0 && s.winner_index() < s.trials_size();
    if (won) {
      has_best = s.trials(s.winner_index()).has_best();
      best = s.trials(s.winner_index()).best_metric();
    }
    rows.push_back({s.id(), StateName(s.state()), absl::StrCat(ended, "/", s.trials_size()),
                    won ? s.trials(s.winner_index()).label() : "-",
                    has_best ? absl::StrFormat("%s %.4f", s.selection_metric(), best) : "-",
                    FormatAge(s.create_time(), now)});
    if (wide) {
      for (std::string v : {s.spec().display_name(), FormatTimestamp(s.end_time()),
                            s.output_uri()}) {
        rows.back().push_back(v.empty() ? "-" : v);
      }
    }
  }
  return FormatTable(rows);
}

std::string FormatSweepTable(const v1::Sweep& sweep) {
  std::string out = absl::StrCat("sweep ", sweep.id(), "  ", StateName(sweep.state()),
                                 "  metric ", sweep.selection_metric(),
                                 sweep.lower_is_better() ? " (lower is better)" : "", "\n");
  // Labels grow with swept ranks and rates ("depth=2 lr=0.0003").
  int label_width = 12;
  for (const v1::SweepTrial& t : sweep.trials()) {
    label_width = std::max(label_width, static_cast<int>(t.label().size()));
  }
  absl::StrAppend(&out, absl::StrFormat("  %-*s %6s %12s %10s %8s %9s  %-14s %s\n", label_width,
                                        "candidate", "depth", "trainable", "best", "step",
                                        "wall s", "state", "job"));
  for (int i = 0; i < sweep.trials_size(); ++i) {
    const v1::SweepTrial& t = sweep.trials(i);
    std::string state = StateName(t.state());
    if (t.state() == v1::TRIAL_STATE_PRUNED) absl::StrAppend(&state, "@", t.pruned_at_step());
    absl::StrAppend(
        &out, absl::StrFormat("%s %-*s %6d %12d %10s %8s %9.1f  %-14s %s\n",
                              i == sweep.winner_index() ? "*" : " ", label_width, t.label(),
                              t.frozen_depth(),
                              t.trainable_parameters(),
                              t.has_best() ? absl::StrFormat("%.4f", t.best_metric()) : "-",
                              t.has_best() ? absl::StrCat(t.best_step()) : "-", t.wall_seconds(),
                              absl::AsciiStrToLower(state), t.job_id()));
  }
  if (sweep.winner_index() >= 0 && sweep.winner_index() < sweep.trials_size()) {
    absl::StrAppend(&out, "winner: ", sweep.trials(sweep.winner_index()).label(), " -> ",
                    sweep.output_uri(), "\n");
  }
  if (!sweep.error_message().empty()) absl::StrAppend(&out, "error: ", sweep.error_message(), "\n");
  return out;
}

std::string FormatJobDetails(const v1::Job& job) {
  std::vector<std::vector<std::string>> rows = {
      {"id", job.id()},
      {"state", StateName(job.state())},
  };
  auto add = [&](const char* k, const std::string& v) {
    if (!v.empty()) rows.push_back({k, v});
  };
  add("name", job.spec().display_name());
  add("tenant", job.tenant());
  add("model", job.spec().model_uri());
  add("train", job.spec().train().uri());
  add("validation", job.spec().validation().uri());
  add("progress", job.progress().total_steps() > 0
                      ? absl::StrFormat("%s epoch %.2f",
                                        Progress(job.progress()),
                                        job.progress().epoch())
                      : "");
  add("created", FormatTimestamp(job.create_time()));
  add("started", IsSet(job.start_time()) ? FormatTimestamp(job.start_time()) : "");
  add("ended", IsSet(job.end_time()) ? FormatTimestamp(job.end_time()) : "");
  add("error", job.error_message());
  add("last event", absl::StrCat(job.last_sequence()));
  std::string out = FormatTable(rows);
  if (job.has_result()) absl::StrAppend(&out, FormatSummary(job));
  return out;
}

std::string FormatPlan(const v1::PlanFreezeResponse& plan) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "SHAPE", "NUMEL", "TRAIN", "DECIDED_BY", "LR_SCALE"}};
  for (const v1::ParameterPlan& p : plan.parameters()) {
    rows.push_back({p.name(),
                    absl::StrCat("[", absl::StrJoin(p.shape(), ", "), "]"),
                    FormatCount(p.numel()), p.trainable() ? "TRAIN" : "frozen",
                    p.decided_by(),
                    p.trainable() ? absl::StrFormat("%.3g", p.lr_scale()) : "-"});
  }
  std::string out = FormatTable(rows);
  const double pct = plan.total_parameters() > 0
                         ? 100.0 * static_cast<double>(plan.trainable_parameters()) /
                               static_cast<double>(plan.total_parameters())
                         : 0.0;
  absl::StrAppendFormat(&out, "\ntrainable %s / %s parameters (%.2f%%), frozen %s\n",
                        FormatCount(plan.trainable_parameters()),
                        FormatCount(plan.total_parameters()), pct,
                        FormatCount(plan.frozen_parameters()));
  absl::StrAppendFormat(&out, "layers %d, frozen_prefix_layers %d%s, frozen_eval_mode %s\n",
                        plan.num_layers(), plan.frozen_prefix_layers(),
                        plan.frozen_prefix_layers() < 0 ? " (embeddings train)" : "",
                        plan.frozen_eval_mode() ? "on" : "off");
  absl::StrAppendFormat(&out, "data-parallel all-reduce %s bytes per step (trainable gradients)\n",
                        FormatCount(plan.allreduce_bytes_per_step()));
  return out;
}

std::string FormatSummary(const v1::Job& job, const Curves& curves) {
  std::vector<std::vector<std::string>> rows = {
      {"state", StateName(job.state())}};
  if (!job.error_message().empty()) rows.push_back({"error", job.error_message()});
  if (job.has_result()) {
    const v1::JobResult& r = job.result();
    rows.push_back({"steps", absl::StrCat(r.steps(), r.early_stopped()
                                                         ? " (early stopped)"
                                                         : "")});
    if (r.has_best_eval()) {
      std::string best = FormatEvalLine(r.best_eval());
      absl::string_view b = best;
      absl::ConsumePrefix(&b, "eval ");
      rows.push_back({"best eval",
                      absl::StrCat(b, r.selection_metric().empty()
                                          ? ""
                                          : absl::StrCat(" (by ",
                                                         r.selection_metric(),
                                                         ")"))});
    }
    const double pct =
        r.total_parameters() > 0
            ? 100.0 * static_cast<double>(r.trainable_parameters()) /
                  static_cast<double>(r.total_parameters())
            : 0.0;
    rows.push_back({"parameters",
                    absl::StrFormat("%s trainable / %s total (%.2f%%)",
                                    FormatCount(r.trainable_parameters()),
                                    FormatCount(r.total_parameters()), pct)});
    rows.push_back({"frozen weights verified",
                    r.frozen_weights_verified() ? "yes (bit-identical)" : "no"});
    if (curves.loss.size() >= 2) {
      rows.push_back({"train loss", absl::StrFormat("%s %.4g -> %.4g", Sparkline(curves.loss),
                                                    curves.loss.front(), curves.loss.back())});
    }
    if (curves.evals.size() >= 2) {
      const std::string metric = r.selection_metric().empty() ? "accuracy" : r.selection_metric();
      std::vector<double> values;
      for (const v1::EvalMetrics& e : curves.evals) values.push_back(MetricValue(e, metric));
      rows.push_back({absl::StrCat("eval ", metric),
                      absl::StrFormat("%s %.4g -> %.4g", Sparkline(values), values.front(),
                                      values.back())});
    }
    rows.push_back({"train time", FormatClock(absl::Seconds(r.train_seconds()))});
    if (r.precision() == v1::PRECISION_BF16 || r.precision() == v1::PRECISION_FP16) {
      rows.push_back({"precision", absl::StrCat(r.precision() == v1::PRECISION_BF16 ? "bf16" : "fp16",
                                                r.skipped_steps() > 0
                                                    ? absl::StrCat(" (", r.skipped_steps(),
                                                                   " steps skipped on overflow)")
                                                    : "")});
    }
    if (r.data_parallel() > 1) {
      rows.push_back({"data-parallel",
                      absl::StrFormat("%d ranks, %s bytes all-reduced per step", r.data_parallel(),
                                      FormatCount(r.allreduce_bytes_per_step()))});
    }
    if (r.peak_device_memory_bytes() > 0) {
      rows.push_back({"peak device memory",
                      absl::StrFormat("%.2f GiB", static_cast<double>(r.peak_device_memory_bytes()) /
                                                      (1 << 30))});
    }
    rows.push_back({"output", r.output_uri().empty() ? "-" : r.output_uri()});
  } else if (job.progress().total_steps() > 0) {
    rows.push_back({"steps", Progress(job.progress())});
  }
  return FormatTable(rows);
}

std::string ToJsonLine(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = false;
  auto s = google::protobuf::util::MessageToJsonString(msg, &out, opts);
  if (!s.ok()) return absl::StrCat("{\"error\":\"", s.ToString(), "\"}");
  return out;
}

void EventPrinter::Line(const std::string& text) {
  if (mode_ == Mode::kTty && !bar_.empty()) {
    // Clear the progress line, print above it, redraw it.
    out_ << "\r\033[K" << text << "\n" << bar_ << std::flush;
  } else {
    out_ << text << "\n" << std::flush;
  }
}

void EventPrinter::OnEvent(const v1::JobEvent& e) {
  last_sequence_ = e.sequence();
  if (e.has_train()) curves_.loss.push_back(e.train().loss());
  if (e.has_eval()) curves_.evals.push_back(e.eval());
  if (mode_ == Mode::kJson) {
    out_ << ToJsonLine(e) << "\n" << std::flush;
    if (e.has_state_change()) {
      last_state_ = e.state_change().state();
      last_message_ = e.state_change().message();
    }
    return;
  }
  switch (e.kind_case()) {
    case v1::JobEvent::kStateChange: {
      last_state_ = e.state_change().state();
      last_message_ = e.state_change().message();
      std::string text = absl::StrCat(e.job_id(), " ", StateName(last_state_));
      if (!last_message_.empty()) absl::StrAppend(&text, ": ", last_message_);
      Line(text);
      break;
    }
    case v1::JobEvent::kTrain: {
      const v1::TrainMetrics& t = e.train();
      eta_.Observe(t.step(), ToTime(e.time()));
      // One column spare: a line that fills the terminal exactly wraps on
      // some terminals when the cursor moves past the last column.
      std::string bar = FormatProgressBar(
          t.step(), t.total_steps(), eta_.Eta(t.total_steps()), t.loss(),
          t.learning_rate(), t.samples_per_second(), 10, columns_ > 0 ? columns_ - 1 : 0);
      if (mode_ == Mode::kText) {
        Line(bar);
        break;
      }
      bar_ = bar;
      out_ << "\r\033[K" << bar_ << std::flush;
      break;
    }
    case v1::JobEvent::kEval:
      Line(FormatEvalLine(e.eval()));
      break;
    case v1::JobEvent::kCheckpoint:
      Line(absl::StrCat("checkpoint step ", e.checkpoint().step(), ": ",
                        e.checkpoint().uri()));
      break;
    case v1::JobEvent::kNotice:
      Line(absl::StrCat("notice: ", e.notice().message()));
      break;
    case v1::JobEvent::kResult:
      // Shown in the summary table at the end.
      break;
    case v1::JobEvent::KIND_NOT_SET:
      break;
  }
}

void EventPrinter::Finish() {
  if (mode_ == Mode::kTty && !bar_.empty()) {
    out_ << "\n" << std::flush;
    bar_.clear();
  }
}

}  // namespace freezetune::cli
