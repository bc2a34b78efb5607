// The sweep policy without I/O: candidates and their errors, the selection
// metric and direction, submit order, trial rows from job states, the
// winner rule and successive halving's cuts.
#include "server/sweeps/sweep_policy.h"

#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace freezetune::sweeps {
namespace {

TEST(SweepWinnerTest, BestMetricThenFewerTrainableThenEarlier) {
  std::vector<v1::SweepTrial> rows(4);
  auto set = [&](int i, double m, int64_t trainable, v1::TrialState st) {
    rows[i].set_has_best(true);
    rows[i].set_best_metric(m);
    rows[i].set_trainable_parameters(trainable);
    rows[i].set_state(st);
  };
  set(0, 0.5, 100, v1::TRIAL_STATE_FINISHED);
  set(1, 0.8, 90, v1::TRIAL_STATE_FINISHED);
  set(2, 0.8, 80, v1::TRIAL_STATE_STOPPED_EARLY);
  set(3, 0.9, 5, v1::TRIAL_STATE_FAILED);  // failed rows never win
  EXPECT_EQ(PickSweepWinner(rows, /*lower_is_better=*/false), 2);
  EXPECT_EQ(PickSweepWinner(rows, /*lower_is_better=*/true), 0);
  rows[2].set_trainable_parameters(90);  // full tie: the earlier candidate
  EXPECT_EQ(PickSweepWinner(rows, false), 1);
  rows.resize(1);
  rows[0].set_has_best(false);
  EXPECT_EQ(PickSweepWinner(rows, false), -1);
  EXPECT_TRUE(SweepMetricLowerIsBetter("loss"));
  EXPECT_TRUE(SweepMetricLowerIsBetter("mse"));
  EXPECT_FALSE(SweepMetricLowerIsBetter("accuracy"));
}

TEST(SweepPolicyTest, CandidatesInOrderWithErrorsNamingTheField) {
  v1::SweepSpec spec;
  spec.add_freeze_depths(2);
  spec.add_freeze_depths(0);
  spec.set_include_head_only(true);
  spec.add_specs()->mutable_head_only();
  auto candidates = ExpandCandidates(spec);
  ASSERT_TRUE(candidates.ok()) << candidates.status();
  ASSERT_EQ(candidates->size(), 4u);
  EXPECT_EQ((*candidates)[0].label, "depth=2");
  EXPECT_EQ((*candidates)[0].freeze.bottom().num_layers(), 2);
  EXPECT_TRUE((*candidates)[0].freeze.frozen_eval_mode());
  EXPECT_EQ((*candidates)[2].label, "head-only");
  EXPECT_EQ((*candidates)[3].field, "sweep.specs[0]");

  v1::SweepSpec negative;
  negative.add_freeze_depths(1);
  negative.add_freeze_depths(-1);
  EXPECT_EQ(ExpandCandidates(negative).status().message(),
            "sweep.freeze_depths[1]: must not be negative");
  v1::SweepSpec one;
  one.add_freeze_depths(1);
  EXPECT_TRUE(absl::IsInvalidArgument(ExpandCandidates(one).status()));
}

TEST(SweepPolicyTest, LearningRatesAndLoraRanksCrossTheCandidates) {
  v1::SweepSpec spec;
  spec.add_freeze_depths(1);
  v1::FreezeSpec* lora = spec.add_specs();
  lora->mutable_lora()->set_rank(8);
  lora->mutable_lora()->set_target_modules("bert\\.encoder\\.layer\\.\\d+\\.attention\\.self\\.query");
  spec.add_lora_ranks(4);
  spec.add_lora_ranks(16);
  spec.add_learning_rates(1e-4f);
  spec.add_learning_rates(1e-3f);
  auto candidates = ExpandCandidates(spec);
  ASSERT_TRUE(candidates.ok()) << candidates.status();
  // depth=1 x 2 rates, then the LoRA spec x 2 ranks x 2 rates; rates fastest.
  std::vector<std::string> labels;
  for (const Candidate& c : *candidates) labels.push_back(c.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"depth=1 lr=0.0001", "depth=1 lr=0.001",
                                              "spec[0] r=4 lr=0.0001", "spec[0] r=4 lr=0.001",
                                              "spec[0] r=16 lr=0.0001",
                                              "spec[0] r=16 lr=0.001"}));
  const Candidate& last = candidates->back();
  EXPECT_EQ(last.freeze.lora().rank(), 16);
  EXPECT_EQ(last.freeze.lora().target_modules(), lora->lora().target_modules());
  ASSERT_TRUE(last.learning_rate.has_value());
  EXPECT_FLOAT_EQ(*last.learning_rate, 1e-3f);
  EXPECT_EQ(last.field, "sweep.specs[0] with sweep.lora_ranks[1] with sweep.learning_rates[1]");
  EXPECT_FALSE((*candidates)[0].freeze.has_lora());
  EXPECT_EQ((*candidates)[0].freeze.bottom().num_layers(), 1);

  // Without crosses nothing changes: no rate, the spec's own rank.
  v1::SweepSpec plain = spec;
  plain.clear_learning_rates();
  plain.clear_lora_ranks();
  candidates = ExpandCandidates(plain);
  ASSERT_TRUE(candidates.ok()) << candidates.status();
  ASSERT_EQ(candidates->size(), 2u);
  EXPECT_FALSE((*candidates)[1].learning_rate.has_value());
  EXPECT_EQ((*candidates)[1].freeze.lora().rank(), 8);
  EXPECT_EQ((*candidates)[1].label, "spec[0]");

  // One depth times two rates is enough candidates.
  v1::SweepSpec one_depth;
  one_depth.add_freeze_depths(2);
  one_depth.add_learning_rates(3e-4f);
  one_depth.add_learning_rates(1e-3f);
  EXPECT_EQ(ExpandCandidates(one_depth).value_or(std::vector<Candidate>{}).size(), 2u);

  // Bad rates and ranks name the field.
  auto message = [](const v1::SweepSpec& s) {
    return std::string(ExpandCandidates(s).status().message());
  };
  v1::SweepSpec bad = one_depth;
  bad.set_learning_rates(1, 0.0f);
  EXPECT_EQ(message(bad), "sweep.learning_rates[1]: must be > 0 and finite (got 0)");
  bad.set_learning_rates(1, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(message(bad).rfind("sweep.learning_rates[1]: must be > 0 and finite", 0), 0u);
  bad.set_learning_rates(1, 3e-4f);
  EXPECT_EQ(message(bad), "sweep.learning_rates[1]: 0.0003 repeats learning_rates[0]");
  v1::SweepSpec ranks_without_lora = one_depth;
  ranks_without_lora.add_lora_ranks(4);
  EXPECT_EQ(message(ranks_without_lora).rfind("sweep.lora_ranks: no candidate has a lora block", 0),
            0u);
  v1::SweepSpec bad_rank = spec;
  bad_rank.set_lora_ranks(0, 0);
  EXPECT_EQ(message(bad_rank), "sweep.lora_ranks[0]: must be >= 1 (got 0)");
  bad_rank.set_lora_ranks(0, 16);
  EXPECT_EQ(message(bad_rank), "sweep.lora_ranks[1]: 16 repeats lora_ranks[0]");
}

TEST(SweepPolicyTest, SelectionDefaultsAndDirection) {
  v1::SweepSpec spec;
  EXPECT_EQ(ResolveSelection(spec)->metric, "accuracy");
  EXPECT_FALSE(ResolveSelection(spec)->lower_is_better);
  spec.mutable_job()->mutable_task()->set_num_labels(1);
  EXPECT_EQ(ResolveSelection(spec)->metric, "loss");
  EXPECT_TRUE(ResolveSelection(spec)->lower_is_better);
  // Masked-LM trials are compared by their masked-token loss.
  v1::SweepSpec mlm;
  mlm.mutable_job()->mutable_task()->set_type(v1::TASK_TYPE_MASKED_LM);
  EXPECT_EQ(ResolveSelection(mlm)->metric, "loss");
  EXPECT_TRUE(ResolveSelection(mlm)->lower_is_better);
  spec.mutable_job()->mutable_hyperparameters()->set_selection_metric("macro_f1");
  EXPECT_EQ(ResolveSelection(spec)->metric, "macro_f1");
  spec.set_selection_metric("mse");
  spec.set_lower_is_better(false);  // explicit beats the metric's default
  EXPECT_FALSE(ResolveSelection(spec)->lower_is_better);
  spec.set_selection_metric("bleu");
  EXPECT_EQ(ResolveSelection(spec).status().message().rfind("sweep.selection_metric: ", 0), 0u);
}

TEST(SweepPolicyTest, SubmitOrderIsShallowestFirstExplicitSpecsLast) {
  v1::Sweep sweep;
  for (int depth : {2, -1, 0, 4, 1}) sweep.add_trials()->set_frozen_depth(depth);
  EXPECT_EQ(SubmitOrder(sweep), (std::vector<int>{2, 4, 0, 3, 1}));
}

TEST(SweepPolicyTest, TrialRowFollowsItsJob) {
  v1::Job job;
  job.set_state(v1::JOB_STATE_QUEUED);
  EXPECT_EQ(TrialStateForJob(job, v1::TRIAL_STATE_PENDING), v1::TRIAL_STATE_PENDING);
  job.set_state(v1::JOB_STATE_RUNNING);
  EXPECT_EQ(TrialStateForJob(job, v1::TRIAL_STATE_PENDING), v1::TRIAL_STATE_RUNNING);
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(TrialStateForJob(job, v1::TRIAL_STATE_RUNNING), v1::TRIAL_STATE_FINISHED);
  job.mutable_result()->set_early_stopped(true);
  EXPECT_EQ(TrialStateForJob(job, v1::TRIAL_STATE_RUNNING), v1::TRIAL_STATE_STOPPED_EARLY);
  job.set_state(v1::JOB_STATE_FAILED);
  EXPECT_EQ(TrialStateForJob(job, v1::TRIAL_STATE_RUNNING), v1::TRIAL_STATE_FAILED);
  job.set_state(v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(TrialStateForJob(job, v1::TRIAL_STATE_RUNNING), v1::TRIAL_STATE_CANCELLED);
  EXPECT_TRUE(TrialEnded(v1::TRIAL_STATE_PRUNED));
  EXPECT_FALSE(TrialEnded(v1::TRIAL_STATE_RUNNING));
}

TEST(HalvingPolicyTest, KeepsTheTopFractionAtEachRung) {
  v1::SuccessiveHalving halving;
  halving.add_rung_steps(10);
  halving.add_rung_steps(20);
  halving.set_reduction_factor(2);
  HalvingPolicy policy(halving, /*lower_is_better=*/false, 4);
  // Below the first rung: nothing is judged.
  EXPECT_FALSE(policy.Observe(0, 0.1, 5, false).has_value());
  // The first trial at a rung always continues.
  EXPECT_FALSE(policy.Observe(0, 0.5, 10, false).has_value());
  EXPECT_FALSE(policy.Observe(1, 0.8, 10, false).has_value());  // 2 reached, keep 1, best
  // 0.3 is third of three: keep ceil(3/2) = 2, two are better: pruned.
  auto prune = policy.Observe(2, 0.3, 12, false);
  ASSERT_TRUE(prune.has_value());
  EXPECT_EQ(prune->rung_step, 10);
  EXPECT_EQ(prune->keep, 2);
  EXPECT_EQ(prune->reached, 3);
  // Not marked pruned (its cancel failed): judged again at the next eval.
  EXPECT_TRUE(policy.Observe(2, 0.3, 13, false).has_value());
  policy.Pruned(2);
  EXPECT_FALSE(policy.Observe(2, 0.3, 14, false).has_value());
  // An ended trial's values are recorded, never judged.
  EXPECT_FALSE(policy.Observe(3, 0.0, 25, true).has_value());
  // At rung 20: trial 3's 0.0 counts; trial 0 (0.6) is better than it, and
  // trial 1 is not there yet: keep ceil(2/2) = 1, nobody better: continues.
  EXPECT_FALSE(policy.Observe(0, 0.6, 20, false).has_value());
  // Trial 1 at 0.55 now trails 0.6: keep ceil(3/2) = 2, one better: continues.
  EXPECT_FALSE(policy.Observe(1, 0.55, 20, false).has_value());
}

TEST(HalvingPolicyTest, LowerIsBetterFlipsTheCut) {
  v1::SuccessiveHalving halving;
  halving.add_rung_steps(1);
  HalvingPolicy policy(halving, /*lower_is_better=*/true, 3);
  EXPECT_FALSE(policy.Observe(0, 1.0, 1, false).has_value());
  EXPECT_FALSE(policy.Observe(1, 0.5, 1, false).has_value());
  EXPECT_TRUE(policy.Observe(2, 2.0, 1, false).has_value());  // worst loss of three
}

}  // namespace
}  // namespace freezetune::sweeps
