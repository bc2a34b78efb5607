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

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  absl::string_view v = name;
  absl::ConsumePrefix(&v, "JOB_STATE_");
  return v.empty() ? "UNKNOWN" : std::string(v);
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
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", ToTime(ts), absl::UTCTimeZone());
}

std::string FormatProgressBar(int64_t step, int64_t total,
                              std::optional<absl::Duration> eta, float loss,
                              float learning_rate, float samples_per_second,
                              int width) {
  int filled = 0;
  int percent = 0;
  if (total > 0) {
    int64_t clamped = std::clamp<int64_t>(step, 0, total);
    filled = static_cast<int>(clamped * width / total);
    percent = static_cast<int>(clamped * 100 / total);
  }
  std::string out = absl::StrCat(
      "[", std::string(filled, '#'), std::string(width - filled, '-'), "] ",
      step, "/", total > 0 ? absl::StrCat(total) : "?");
  if (total > 0) absl::StrAppend(&out, " ", percent, "%");
  if (eta) absl::StrAppend(&out, " ETA ", FormatClock(*eta));
  absl::StrAppendFormat(&out, " loss %.4f lr %.2g %.0f samples/s", loss,
                        learning_rate, samples_per_second);
  return out;
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

std::string FormatJobList(const std::vector<v1::Job>& jobs) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "NAME", "PROGRESS", "CREATED"}};
  for (const v1::Job& j : jobs) {
    rows.push_back({j.id(), StateName(j.state()),
                    j.spec().display_name().empty() ? "-"
                                                    : j.spec().display_name(),
                    Progress(j.progress()), FormatTimestamp(j.create_time())});
  }
  return FormatTable(rows);
}

std::string FormatSweepList(const std::vector<v1::Sweep>& sweeps) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "TRIALS", "WINNER", "BEST", "CREATED"}};
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
    std::string state = v1::SweepState_Name(s.state());
    if (absl::StartsWith(state, "SWEEP_STATE_")) state = state.substr(12);
    rows.push_back({s.id(), state, absl::StrCat(ended, "/", s.trials_size()),
                    won ? s.trials(s.winner_index()).label() : "-",
                    has_best ? absl::StrFormat("%s %.4f", s.selection_metric(), best) : "-",
                    FormatTimestamp(s.create_time())});
  }
  return FormatTable(rows);
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
  return out;
}

std::string FormatSummary(const v1::Job& job) {
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
    rows.push_back({"train time", FormatClock(absl::Seconds(r.train_seconds()))});
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
      std::string bar = FormatProgressBar(
          t.step(), t.total_steps(), eta_.Eta(t.total_steps()), t.loss(),
          t.learning_rate(), t.samples_per_second());
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
