#include "server/sweeps/sweep_policy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/status_macros.h"

namespace freezetune::sweeps {
namespace {

constexpr int kDefaultReductionFactor = 2;
constexpr int kMaxReductionFactor = 16;

// Each candidate with a lora block once per rank in spec.lora_ranks; the
// others as they are.
absl::StatusOr<std::vector<Candidate>> CrossLoraRanks(const v1::SweepSpec& spec,
                                                      std::vector<Candidate> candidates) {
  if (spec.lora_ranks_size() == 0) return candidates;
  for (int i = 0; i < spec.lora_ranks_size(); ++i) {
    const std::string field = absl::StrCat("sweep.lora_ranks[", i, "]");
    if (spec.lora_ranks(i) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": must be >= 1 (got ", spec.lora_ranks(i), ")"));
    }
    for (int j = 0; j < i; ++j) {
      if (spec.lora_ranks(j) == spec.lora_ranks(i)) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": ", spec.lora_ranks(i), " repeats lora_ranks[", j, "]"));
      }
    }
  }
  std::vector<Candidate> crossed;
  bool any_lora = false;
  for (Candidate& c : candidates) {
    if (!c.freeze.has_lora()) {
      crossed.push_back(std::move(c));
      continue;
    }
    any_lora = true;
    for (int i = 0; i < spec.lora_ranks_size(); ++i) {
      Candidate r = c;
      r.field = absl::StrCat(c.field, " with sweep.lora_ranks[", i, "]");
      r.label = absl::StrCat(c.label, " r=", spec.lora_ranks(i));
      r.freeze.mutable_lora()->set_rank(spec.lora_ranks(i));
      crossed.push_back(std::move(r));
    }
  }
  if (!any_lora) {
    return absl::InvalidArgumentError(
        "sweep.lora_ranks: no candidate has a lora block (give sweep.specs with lora)");
  }
  return crossed;
}

// Each candidate once per rate in spec.learning_rates.
absl::StatusOr<std::vector<Candidate>> CrossLearningRates(const v1::SweepSpec& spec,
                                                          std::vector<Candidate> candidates) {
  if (spec.learning_rates_size() == 0) return candidates;
  for (int i = 0; i < spec.learning_rates_size(); ++i) {
    const std::string field = absl::StrCat("sweep.learning_rates[", i, "]");
    const float lr = spec.learning_rates(i);
    if (!std::isfinite(lr) || lr <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": must be > 0 and finite (got ", lr, ")"));
    }
    for (int j = 0; j < i; ++j) {
      if (spec.learning_rates(j) == lr) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": ", lr, " repeats learning_rates[", j, "]"));
      }
    }
  }
  std::vector<Candidate> crossed;
  for (const Candidate& c : candidates) {
    for (int i = 0; i < spec.learning_rates_size(); ++i) {
      Candidate r = c;
      r.field = absl::StrCat(c.field, " with sweep.learning_rates[", i, "]");
      r.label = absl::StrCat(c.label, " lr=", absl::StrFormat("%g", spec.learning_rates(i)));
      r.learning_rate = spec.learning_rates(i);
      crossed.push_back(std::move(r));
    }
  }
  return crossed;
}

}  // namespace

bool SweepMetricValue(const v1::EvalMetrics& eval, const std::string& metric, double* value) {
  if (metric == "accuracy") *value = eval.accuracy();
  else if (metric == "macro_f1") *value = eval.macro_f1();
  else if (metric == "mcc") *value = eval.mcc();
  else if (metric == "loss") *value = eval.loss();
  else if (metric == "mse") *value = eval.mse();
  else if (metric == "pearson") *value = eval.pearson();
  else if (metric == "spearman") *value = eval.spearman();
  else return false;
  return true;
}

bool SweepMetricLowerIsBetter(const std::string& metric) {
  return metric == "loss" || metric == "mse";
}

bool Better(double a, double b, bool lower_is_better) { return lower_is_better ? a < b : a > b; }

int PickSweepWinner(const std::vector<v1::SweepTrial>& trials, bool lower_is_better) {
  int winner = -1;
  for (int i = 0; i < static_cast<int>(trials.size()); ++i) {
    const v1::SweepTrial& t = trials[i];
    if (!t.has_best()) continue;
    if (t.state() != v1::TRIAL_STATE_FINISHED && t.state() != v1::TRIAL_STATE_STOPPED_EARLY) {
      continue;
    }
    if (winner < 0) {
      winner = i;
      continue;
    }
    const v1::SweepTrial& w = trials[winner];
    bool better = Better(t.best_metric(), w.best_metric(), lower_is_better);
    bool tie = t.best_metric() == w.best_metric();
    if (better || (tie && t.trainable_parameters() < w.trainable_parameters())) winner = i;
  }
  return winner;
}

bool TrialEnded(v1::TrialState state) {
  return state == v1::TRIAL_STATE_FINISHED || state == v1::TRIAL_STATE_STOPPED_EARLY ||
         state == v1::TRIAL_STATE_FAILED || state == v1::TRIAL_STATE_CANCELLED ||
         state == v1::TRIAL_STATE_PRUNED;
}

absl::StatusOr<std::vector<Candidate>> ExpandCandidates(const v1::SweepSpec& spec) {
  std::vector<Candidate> candidates;
  for (int i = 0; i < spec.freeze_depths_size(); ++i) {
    Candidate c;
    c.field = absl::StrCat("sweep.freeze_depths[", i, "]");
    c.depth = spec.freeze_depths(i);
    if (c.depth < 0) {
      return absl::InvalidArgumentError(absl::StrCat(c.field, ": must not be negative"));
    }
    c.label = absl::StrCat("depth=", c.depth);
    c.freeze.mutable_bottom()->set_num_layers(c.depth);
    // Deterministic frozen layers (no dropout) make their outputs the same
    // for every trial, so a deeper trial reuses a shallower one's.
    c.freeze.set_frozen_eval_mode(true);
    candidates.push_back(std::move(c));
  }
  if (spec.include_head_only()) {
    Candidate c;
    c.field = "sweep.include_head_only";
    c.label = "head-only";
    c.freeze.mutable_head_only();
    candidates.push_back(std::move(c));
  }
  for (int i = 0; i < spec.specs_size(); ++i) {
    Candidate c;
    c.field = absl::StrCat("sweep.specs[", i, "]");
    c.label = absl::StrCat("spec[", i, "]");
    c.freeze = spec.specs(i);
    candidates.push_back(std::move(c));
  }
  FT_ASSIGN_OR_RETURN(candidates, CrossLoraRanks(spec, std::move(candidates)));
  FT_ASSIGN_OR_RETURN(candidates, CrossLearningRates(spec, std::move(candidates)));
  if (candidates.size() < 2) {
    return absl::InvalidArgumentError(
        "sweep.freeze_depths: at least 2 candidates required (freeze_depths, "
        "include_head_only and specs, times learning_rates and lora_ranks)");
  }
  return candidates;
}

absl::StatusOr<Selection> ResolveSelection(const v1::SweepSpec& spec) {
  Selection selection;
  selection.metric = spec.selection_metric();
  if (selection.metric.empty()) selection.metric = spec.job().hyperparameters().selection_metric();
  if (selection.metric.empty()) {
    // Regression and masked-LM trials are compared by their loss.
    const bool by_loss = spec.job().task().num_labels() == 1 ||
                         spec.job().task().type() == v1::TASK_TYPE_MASKED_LM;
    selection.metric = by_loss ? "loss" : "accuracy";
  }
  double unused;
  if (!SweepMetricValue(v1::EvalMetrics(), selection.metric, &unused)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep.selection_metric: unknown metric \"", selection.metric,
                     "\" (accuracy, macro_f1, mcc, loss, pearson, spearman, mse)"));
  }
  selection.lower_is_better = spec.has_lower_is_better()
                                  ? spec.lower_is_better()
                                  : SweepMetricLowerIsBetter(selection.metric);
  return selection;
}

absl::Status ValidateHalving(const v1::SuccessiveHalving& halving) {
  const std::string field = "sweep.successive_halving";
  if (halving.rung_steps_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".rung_steps: at least one rung "
                                                   "required (leave successive_halving unset "
                                                   "to run every trial to its end)"));
  }
  for (int r = 0; r < halving.rung_steps_size(); ++r) {
    const int64_t step = halving.rung_steps(r);
    if (step < 1 || (r > 0 && step <= halving.rung_steps(r - 1))) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".rung_steps[", r, "]: ", step, " must be >= 1 and above the previous rung"));
    }
  }
  if (halving.reduction_factor() != 0 && (halving.reduction_factor() < 2 ||
                                          halving.reduction_factor() > kMaxReductionFactor)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".reduction_factor: ",
                                                   halving.reduction_factor(), " is outside [2, ",
                                                   kMaxReductionFactor, "]"));
  }
  return absl::OkStatus();
}

std::vector<int> SubmitOrder(const v1::Sweep& sweep) {
  std::vector<int> order(sweep.trials_size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  auto key = [&](int i) {
    const int depth = sweep.trials(i).frozen_depth();
    return depth < 0 ? std::numeric_limits<int>::max() : depth;
  };
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(a) < key(b); });
  return order;
}

v1::TrialState TrialStateForJob(const v1::Job& job, v1::TrialState current) {
  switch (job.state()) {
    case v1::JOB_STATE_RUNNING:
      return v1::TRIAL_STATE_RUNNING;
    case v1::JOB_STATE_SUCCEEDED:
      return job.result().early_stopped() ? v1::TRIAL_STATE_STOPPED_EARLY
                                          : v1::TRIAL_STATE_FINISHED;
    case v1::JOB_STATE_FAILED:
      return v1::TRIAL_STATE_FAILED;
    case v1::JOB_STATE_CANCELLED:
      return v1::TRIAL_STATE_CANCELLED;
    default:
      return current;
  }
}

HalvingPolicy::HalvingPolicy(const v1::SuccessiveHalving& halving, bool lower_is_better,
                             int trials)
    : halving_(halving),
      lower_is_better_(lower_is_better),
      next_rung_(static_cast<size_t>(trials), 0),
      rung_values_(static_cast<size_t>(halving.rung_steps_size())) {}

std::optional<HalvingPolicy::Prune> HalvingPolicy::Observe(int trial, double best, int64_t step,
                                                           bool ended) {
  if (trial < 0 || trial >= static_cast<int>(next_rung_.size())) return std::nullopt;
  const int eta = halving_.reduction_factor() > 0 ? halving_.reduction_factor()
                                                  : kDefaultReductionFactor;
  for (int& r = next_rung_[trial]; r < halving_.rung_steps_size() && step >= halving_.rung_steps(r);
       ++r) {
    std::map<int, double>& values = rung_values_[r];
    values[trial] = best;
    // Rebuilding after a restart only records what ended trials reached.
    if (ended) continue;
    int strictly_better = 0;
    for (const auto& [other, value] : values) {
      if (other != trial && Better(value, best, lower_is_better_)) ++strictly_better;
    }
    const int keep = (static_cast<int>(values.size()) + eta - 1) / eta;
    if (strictly_better < keep) continue;
    return Prune{halving_.rung_steps(r), keep, static_cast<int>(values.size())};
  }
  return std::nullopt;
}

void HalvingPolicy::Pruned(int trial) {
  if (trial >= 0 && trial < static_cast<int>(next_rung_.size())) ++next_rung_[trial];
}

}  // namespace freezetune::sweeps
