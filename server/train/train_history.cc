#include "server/train/train_history.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/status_macros.h"
#include "server/model/atomic_file.h"
#include "server/train/metrics.h"

namespace freezetune::train {
namespace {

// The eval metrics a task reports, in the names HF's Trainer gives them
// (without the "eval_" prefix).
std::vector<std::string> EvalMetricNames(bool regression) {
  if (regression) return {"mse", "pearson", "spearman"};
  return {"accuracy", "macro_f1", "mcc"};
}

// Rounded like HF's Trainer logs epochs (two decimals).
double Epoch(float e) { return std::round(static_cast<double>(e) * 100.0) / 100.0; }

// A log_history entry per event, in step order (evaluations after the
// training entry of the same step, as the Trainer logs them).
struct Entry {
  int64_t step;
  int kind;  // 0 train, 1 eval
  nlohmann::json json;
};

std::vector<Entry> Entries(const std::vector<v1::TrainMetrics>& train,
                           const std::vector<v1::EvalMetrics>& evals, bool regression) {
  std::vector<Entry> out;
  for (const v1::TrainMetrics& t : train) {
    out.push_back({t.step(), 0,
                   nlohmann::json{{"epoch", Epoch(t.epoch())},
                                  {"learning_rate", t.learning_rate()},
                                  {"loss", t.loss()},
                                  {"samples_per_second", t.samples_per_second()},
                                  {"step", t.step()}}});
  }
  for (const v1::EvalMetrics& e : evals) {
    nlohmann::json j{{"epoch", Epoch(e.epoch())}, {"eval_loss", e.loss()}, {"step", e.step()}};
    for (const std::string& name : EvalMetricNames(regression)) {
      j["eval_" + name] = MetricValue(e, name);
    }
    if (e.examples() > 0) j["eval_examples"] = e.examples();
    out.push_back({e.step(), 1, std::move(j)});
  }
  std::stable_sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    return a.step != b.step ? a.step < b.step : a.kind < b.kind;
  });
  return out;
}

std::string Cell(const nlohmann::json& entry, const std::string& key) {
  auto it = entry.find(key);
  if (it == entry.end() || it->is_null()) return "";
  if (it->is_number_integer()) return absl::StrCat(it->get<int64_t>());
  return absl::StrFormat("%.8g", it->get<double>());
}

}  // namespace

void TrainHistory::Record(const v1::JobEvent& event) {
  if (event.has_train()) train_.push_back(event.train());
  if (event.has_eval()) evals_.push_back(event.eval());
}

nlohmann::json TrainHistory::TrainerState(const TrainerStateInfo& info) const {
  nlohmann::json log = nlohmann::json::array();
  for (Entry& e : Entries(train_, evals_, info.regression)) log.push_back(std::move(e.json));
  double last_epoch = 0;
  if (!train_.empty()) last_epoch = Epoch(train_.back().epoch());
  if (!evals_.empty()) last_epoch = std::max(last_epoch, Epoch(evals_.back().epoch()));
  // The Trainer's closing entry: train_runtime and the mean training loss.
  double loss_sum = 0;
  for (const v1::TrainMetrics& t : train_) loss_sum += t.loss();
  nlohmann::json end{{"epoch", last_epoch},
                     {"step", info.global_step},
                     {"train_runtime", info.train_seconds},
                     {"train_loss", train_.empty() ? nlohmann::json()
                                                   : nlohmann::json(loss_sum / train_.size())}};
  log.push_back(std::move(end));
  nlohmann::json state{
      {"best_metric", info.has_best ? nlohmann::json(MetricValue(info.best_eval,
                                                                 info.selection_metric))
                                    : nlohmann::json()},
      {"best_model_checkpoint", info.has_best ? nlohmann::json(info.output_dir) : nlohmann::json()},
      {"epoch", last_epoch},
      {"eval_steps", info.eval_steps > 0 ? nlohmann::json(info.eval_steps) : nlohmann::json()},
      {"global_step", info.global_step},
      {"is_hyper_param_search", false},
      {"is_local_process_zero", true},
      {"is_world_process_zero", true},
      {"log_history", std::move(log)},
      {"logging_steps", info.logging_steps},
      {"max_steps", info.max_steps},
      {"metric_for_best_model", info.selection_metric},
      {"num_train_epochs", info.epochs},
      {"total_flos", 0},
      {"train_batch_size", info.batch_size},
      {"trial_name", nullptr},
      {"trial_params", nullptr},
  };
  return state;
}

std::string TrainHistory::Csv(const TrainerStateInfo& info) const {
  std::vector<std::string> columns = {"step", "epoch", "loss", "learning_rate",
                                      "samples_per_second", "eval_loss"};
  for (const std::string& name : EvalMetricNames(info.regression)) {
    columns.push_back("eval_" + name);
  }
  std::string out;
  for (size_t i = 0; i < columns.size(); ++i) absl::StrAppend(&out, i ? "," : "", columns[i]);
  out += "\n";
  for (const Entry& e : Entries(train_, evals_, info.regression)) {
    for (size_t i = 0; i < columns.size(); ++i) {
      absl::StrAppend(&out, i ? "," : "", Cell(e.json, columns[i]));
    }
    out += "\n";
  }
  return out;
}

absl::Status TrainHistory::WriteFiles(const TrainerStateInfo& info) const {
  FT_RETURN_IF_ERROR(model::WriteFileAtomically(info.output_dir + "/trainer_state.json",
                                                TrainerState(info).dump(2) + "\n"));
  return model::WriteFileAtomically(info.output_dir + "/history.csv", Csv(info));
}

}  // namespace freezetune::train
