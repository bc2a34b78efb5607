// The sweep policy without I/O: candidates and their errors, the selection
// metric and direction, submit order, trial rows from job states, the
// winner rule and successive halving's cuts.
#include "server/sweeps/sweep_policy.h"

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

TEST(SweepPolicyTest, SelectionDefaultsAndDirection) {
  v1::SweepSpec spec;
  EXPECT_EQ(ResolveSelection(spec)->metric, "accuracy");
  EXPECT_FALSE(ResolveSelection(spec)->lower_is_better);
  spec.mutable_job()->mutable_task()->set_num_labels(1);
  EXPECT_EQ(ResolveSelection(spec)->metric, "loss");
  EXPECT_TRUE(ResolveSelection(spec)->lower_is_better);
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
