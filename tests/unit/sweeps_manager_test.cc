// SweepManager with an injected runner (no training): a whole sweep (table,
// winner, output copy, sweep.json, linked jobs), cancel, validation errors
// naming the candidate, a sweep that survives a restart of both managers
// with gapless events, an idempotent submit (client_request_id) that
// stores all trials or none, orphan trials cancelled at start, subscribers
// notified by Emit and by Shutdown, and List (paging, states, tenant,
// errors naming the field), and the completion-callback hooks.
#include "server/sweeps/sweep_manager.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace freezetune::sweeps {
using jobs::JobManager;
using jobs::JobManagerOptions;
using jobs::TrainHooks;
namespace {

namespace fs = std::filesystem;

int Depth(const v1::FreezeSpec& f) { return f.has_head_only() ? 99 : f.bottom().num_layers(); }

// Trainable parameters: 100 - 10 * depth; head-only 5. Accuracy by depth:
// 0 -> 0.5, 1 -> 0.8, 2 -> 0.8 (a tie that depth 2 wins), head-only 0.7.
// Depth > 2 is invalid. Runs wait on `gate` when it is armed.
class FakeTrainer {
 public:
  TrainHooks Hooks() {
    TrainHooks hooks;
    hooks.validate = [](const v1::FineTuneJob& job, const data::UriOptions&,
                        const train::JobLimits&) -> absl::Status {
      if (!job.freeze().has_head_only() && job.freeze().bottom().num_layers() > 2) {
        return absl::InvalidArgumentError("job.freeze.bottom.num_layers: the model has 2 layers");
      }
      return absl::OkStatus();
    };
    hooks.plan_freeze = [](const v1::PlanFreezeRequest& req, const data::UriOptions&)
        -> absl::StatusOr<v1::PlanFreezeResponse> {
      v1::PlanFreezeResponse r;
      r.set_total_parameters(100);
      r.set_num_layers(2);
      int d = Depth(req.freeze());
      r.set_trainable_parameters(d == 99 ? 5 : 100 - 10 * d);
      return r;
    };
    hooks.run = [this](const v1::FineTuneJob& job,
                       const train::RunContext& ctx) -> absl::StatusOr<v1::JobResult> {
      while (armed.load() && !gate.HasBeenNotified()) {
        if (ctx.should_stop()) return absl::CancelledError("stopped");
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      int d = Depth(job.freeze());
      float acc = d == 0 ? 0.5f : d == 99 ? 0.7f : 0.8f;
      v1::JobEvent e;
      if (staged.load()) {
        // Evaluations at steps 1 and 2, then "training" that a prune stops;
        // the window leaves the 10 ms monitor time to judge the rungs.
        for (int step = 1; step <= 2; ++step) {
          e.mutable_eval()->set_step(step);
          e.mutable_eval()->set_accuracy(acc);
          ctx.emit(e);
        }
        for (int i = 0; i < 250; ++i) {
          if (ctx.should_stop()) return absl::CancelledError("cancelled at step 3");
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
      }
      e.mutable_eval()->set_step(4);
      e.mutable_eval()->set_accuracy(acc);
      ctx.emit(e);
      std::ofstream(ctx.output_dir + "/model.safetensors") << "depth " << d;
      v1::JobResult result;
      result.set_steps(4);
      result.set_output_uri("file://" + ctx.output_dir);
      *result.mutable_best_eval() = e.eval();
      return result;
    };
    return hooks;
  }
  std::atomic<bool> armed{false};
  std::atomic<bool> staged{false};
  absl::Notification gate;
};

class SweepManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("ft_sweep_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
             std::to_string(::getpid())))
               .string();
    fs::remove_all(dir_);
    options_.data_dir = dir_ + "/data";
    options_.scheduler.cpu_slots = 1;
    options_.scheduler.max_queue = 100;
  }
  void TearDown() override {
    if (!trainer_.gate.HasBeenNotified()) trainer_.gate.Notify();
    sweeps_.reset();
    jobs_.reset();
    fs::remove_all(dir_);
  }
  void Start(metrics::Metrics* metrics = nullptr,
             std::function<void(const v1::Sweep&)> sweep_ended = nullptr) {
    auto jobs = JobManager::Create(options_, trainer_.Hooks());
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    jobs_ = std::move(*jobs);
    SweepManagerOptions sweep_options;
    sweep_options.poll_interval = absl::Milliseconds(10);
    sweep_options.sweep_ended = std::move(sweep_ended);
    auto sweeps = SweepManager::Create(jobs_.get(), sweep_options, metrics);
    ASSERT_TRUE(sweeps.ok()) << sweeps.status();
    sweeps_ = std::move(*sweeps);
  }
  void Stop() {
    sweeps_.reset();
    jobs_.reset();
  }
  v1::SweepSpec Spec() {
    v1::SweepSpec spec;
    spec.mutable_job()->set_model_uri("/models/tiny");
    spec.mutable_job()->mutable_train()->set_uri("/data/train.jsonl");
    spec.add_freeze_depths(0);
    spec.add_freeze_depths(1);
    spec.add_freeze_depths(2);
    spec.set_include_head_only(true);
    spec.set_output_uri(dir_ + "/out");
    return spec;
  }
  v1::Sweep WaitEnded(const std::string& id) {
    for (int i = 0; i < 1000; ++i) {
      auto s = sweeps_->Get(id);
      EXPECT_TRUE(s.ok()) << s.status();
      if (!s.ok() || s->state() != v1::SWEEP_STATE_RUNNING) return s.ok() ? *s : v1::Sweep();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "sweep " << id << " did not end";
    return v1::Sweep();
  }
  // A cancelled running job ends at its next stop check, just after Cancel.
  v1::JobState WaitJobState(const std::string& job_id, v1::JobState want) {
    v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
    for (int i = 0; i < 1000 && state != want; ++i) {
      state = jobs_->Get(job_id)->state();
      if (state != want) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return state;
  }

  std::string dir_;
  JobManagerOptions options_;
  FakeTrainer trainer_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<SweepManager> sweeps_;
};

TEST_F(SweepManagerTest, SweepFillsTableAndWritesWinner) {
  Start();
  auto sweep = sweeps_->Submit(Spec(), "");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  ASSERT_EQ(sweep->trials_size(), 4);
  EXPECT_EQ(sweep->trials(0).trainable_parameters(), 100);
  EXPECT_EQ(sweep->trials(2).trainable_parameters(), 80);
  EXPECT_EQ(sweep->trials(3).trainable_parameters(), 5);
  EXPECT_EQ(sweep->trials(3).frozen_depth(), 2);
  v1::Sweep done = WaitEnded(sweep->id());
  ASSERT_EQ(done.state(), v1::SWEEP_STATE_SUCCEEDED) << done.error_message();
  EXPECT_EQ(done.winner_index(), 2);  // 0.8 tie with depth 1, fewer trainable
  for (const v1::SweepTrial& t : done.trials()) {
    EXPECT_EQ(t.state(), v1::TRIAL_STATE_FINISHED);
    EXPECT_TRUE(t.has_best());
    auto job = jobs_->Get(t.job_id());
    ASSERT_TRUE(job.ok());
    EXPECT_EQ(job->sweep_id(), sweep->id());
  }
  std::ifstream model(dir_ + "/out/model.safetensors");
  std::string content((std::istreambuf_iterator<char>(model)), {});
  EXPECT_EQ(content, "depth 2");
  EXPECT_TRUE(fs::exists(dir_ + "/out/sweep.json"));
  auto events = sweeps_->ReadEvents(sweep->id(), 0, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_FALSE(events->empty());
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].sequence(), int64_t(i + 1));
  EXPECT_TRUE(events->back().has_result());
  EXPECT_EQ(sweeps_->Cancel(sweep->id()).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Completion callbacks (issue 15.4): the managers' end hooks. Without them a
// notify is refused; with them, Submit checks it through the validate hook
// and each resource's final record reaches its hook once, after it is stored.
TEST_F(SweepManagerTest, NotifyHooksCheckAtSubmitAndSeeEveryEnd) {
  v1::SweepSpec spec = Spec();
  spec.mutable_notify()->set_url("https://hooks.example.com/x");
  Start();
  auto refused = sweeps_->Submit(spec, "acme");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.status().message().substr(0, 14), "sweep.notify: ");
  Stop();

  absl::Mutex mu;
  std::vector<v1::Job> jobs_ended;
  std::vector<v1::Sweep> sweeps_ended;
  options_.notify.validate = [](const v1::Notify& n, const std::string& tenant,
                                const std::string& field) {
    if (tenant == "other") return absl::FailedPreconditionError(field + ": no secret");
    if (n.url().rfind("https://", 0) != 0) {
      return absl::InvalidArgumentError(field + ".url: https only");
    }
    return absl::OkStatus();
  };
  options_.notify.job_ended = [&](const v1::Job& job) {
    absl::MutexLock lock(&mu);
    jobs_ended.push_back(job);
  };
  Start(nullptr, [&](const v1::Sweep& sweep) {
    absl::MutexLock lock(&mu);
    sweeps_ended.push_back(sweep);
  });
  EXPECT_EQ(sweeps_->Submit(spec, "other").status().message(), "sweep.notify: no secret");
  v1::SweepSpec in_template = Spec();
  in_template.mutable_job()->mutable_notify()->set_url("https://hooks.example.com/x");
  auto templated = sweeps_->Submit(in_template, "acme");
  EXPECT_EQ(templated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(templated.status().message().substr(0, 18), "sweep.job.notify: ");
  v1::FineTuneJob job = Spec().job();
  job.mutable_freeze()->mutable_head_only();
  job.mutable_notify()->set_url("http://hooks.example.com/x");
  EXPECT_EQ(jobs_->Submit(job, "acme").status().message(), "job.notify.url: https only");

  auto sweep = sweeps_->Submit(spec, "");  // Spec()'s output is the default tenant's
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  v1::Sweep done = WaitEnded(sweep->id());
  ASSERT_EQ(done.state(), v1::SWEEP_STATE_SUCCEEDED);
  Stop();  // joins the monitor and the workers: every hook has run
  absl::MutexLock lock(&mu);
  ASSERT_EQ(sweeps_ended.size(), 1u);
  EXPECT_EQ(sweeps_ended[0].id(), sweep->id());
  EXPECT_EQ(sweeps_ended[0].state(), v1::SWEEP_STATE_SUCCEEDED);
  EXPECT_EQ(sweeps_ended[0].winner_index(), done.winner_index());
  EXPECT_EQ(sweeps_ended[0].spec().notify().url(), "https://hooks.example.com/x");
  EXPECT_EQ(sweeps_ended[0].last_sequence(), done.last_sequence());  // the final event's
  ASSERT_EQ(jobs_ended.size(), 4u);  // each trial once, with its final record
  for (const v1::Job& j : jobs_ended) {
    EXPECT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.id();
    EXPECT_EQ(j.sweep_id(), sweep->id());
    EXPECT_TRUE(j.has_result());
    EXPECT_FALSE(j.spec().has_notify());
  }
}

// Issue 14 item 1: a sweep's output is checked and claimed like a job's.
TEST_F(SweepManagerTest, SweepOutputIsCheckedAndClaimedLikeAJobs) {
  trainer_.armed = true;  // the job below stays running with an empty output
  Start();
  fs::create_directories(dir_ + "/full");
  std::ofstream(dir_ + "/full/model.safetensors") << "someone's model";
  v1::SweepSpec spec = Spec();
  spec.set_output_uri(dir_ + "/full");
  auto refused = sweeps_->Submit(spec, "");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(refused.status().message()).rfind("sweep.output_uri: ", 0), 0u)
      << refused.status();
  // A job already writes to the directory: the sweep may not.
  v1::FineTuneJob job = Spec().job();
  job.set_output_uri(dir_ + "/taken");
  ASSERT_TRUE(jobs_->Submit(job, "").ok());
  spec.set_output_uri(dir_ + "/taken");
  refused = sweeps_->Submit(spec, "");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_NE(refused.status().message().find("another job or sweep"), std::string::npos);
  auto list = jobs_->List(v1::ListJobsRequest());
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->jobs_size(), 1);  // no trial was submitted
  // And a sweep's claim stops a later job.
  spec.set_output_uri(dir_ + "/mine");
  ASSERT_TRUE(sweeps_->Submit(spec, "").ok());
  job.set_output_uri(dir_ + "/mine");
  EXPECT_EQ(jobs_->Submit(job, "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SweepManagerTest, ValidationNamesTheCandidate) {
  Start();
  v1::SweepSpec spec = Spec();
  spec.add_freeze_depths(3);
  auto bad = sweeps_->Submit(spec, "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("sweep.freeze_depths[3]: "), std::string::npos)
      << bad.status();
  v1::SweepSpec one = Spec();
  one.clear_freeze_depths();
  EXPECT_EQ(sweeps_->Submit(one, "").status().code(), absl::StatusCode::kInvalidArgument);
  v1::SweepSpec metric = Spec();
  metric.set_selection_metric("bleu");
  auto m = sweeps_->Submit(metric, "");
  EXPECT_NE(m.status().message().find("sweep.selection_metric"), std::string::npos) << m.status();
  EXPECT_EQ(sweeps_->Get("sweep-nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SweepManagerTest, SuccessiveHalvingPrunesTrialsBelowTheRungCut) {
  // One slot, queued shallowest first: depth 0 (0.5), 1 (0.8), 2 (0.8), then
  // head-only (0.7). At rung step 2 with factor 2, head-only is 4th of 4
  // and two trials are better: pruned. Depth 0 reached the rung first, so
  // it continued.
  trainer_.staged = true;
  Start();
  v1::SweepSpec spec = Spec();
  spec.mutable_successive_halving()->add_rung_steps(2);
  auto sweep = sweeps_->Submit(spec, "");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  v1::Sweep done = WaitEnded(sweep->id());
  ASSERT_EQ(done.state(), v1::SWEEP_STATE_SUCCEEDED) << done.error_message();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(done.trials(i).state(), v1::TRIAL_STATE_FINISHED) << i;
  const v1::SweepTrial& head = done.trials(3);
  EXPECT_EQ(head.state(), v1::TRIAL_STATE_PRUNED);
  EXPECT_EQ(head.pruned_at_step(), 2);
  EXPECT_NE(head.error_message().find("rung step 2"), std::string::npos) << head.error_message();
  EXPECT_EQ(WaitJobState(head.job_id(), v1::JOB_STATE_CANCELLED), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(done.winner_index(), 2);
}

TEST_F(SweepManagerTest, SuccessiveHalvingScheduleIsValidated) {
  Start();
  auto expect_error = [&](const v1::SuccessiveHalving& halving, const std::string& field) {
    v1::SweepSpec spec = Spec();
    *spec.mutable_successive_halving() = halving;
    auto bad = sweeps_->Submit(spec, "");
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find(field), std::string::npos) << bad.status();
  };
  v1::SuccessiveHalving halving;
  expect_error(halving, "sweep.successive_halving.rung_steps: at least one");
  halving.add_rung_steps(10);
  halving.add_rung_steps(10);
  expect_error(halving, "sweep.successive_halving.rung_steps[1]: 10");
  halving.set_rung_steps(1, 20);
  halving.set_reduction_factor(1);
  expect_error(halving, "sweep.successive_halving.reduction_factor: 1");
}

TEST_F(SweepManagerTest, CancelCancelsTrials) {
  trainer_.armed = true;
  Start();
  auto sweep = sweeps_->Submit(Spec(), "");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  auto cancelled = sweeps_->Cancel(sweep->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::SWEEP_STATE_CANCELLED);
  for (const v1::SweepTrial& t : cancelled->trials()) {
    EXPECT_EQ(WaitJobState(t.job_id(), v1::JOB_STATE_CANCELLED), v1::JOB_STATE_CANCELLED)
        << t.label();
  }
}

TEST_F(SweepManagerTest, SweepSurvivesRestart) {
  trainer_.armed = true;
  Start();
  auto sweep = sweeps_->Submit(Spec(), "");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  // Stop with the first trial running (held by the armed trainer), so the
  // restart has a RUNNING job to recover, not only queued ones.
  v1::JobState first = v1::JOB_STATE_UNSPECIFIED;
  for (int i = 0; i < 1000 && first != v1::JOB_STATE_RUNNING; ++i) {
    first = jobs_->Get(sweep->trials(0).job_id())->state();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(first, v1::JOB_STATE_RUNNING);
  Stop();
  trainer_.gate.Notify();
  Start();
  auto reloaded = sweeps_->Get(sweep->id());
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  v1::Sweep done = WaitEnded(sweep->id());
  ASSERT_EQ(done.state(), v1::SWEEP_STATE_SUCCEEDED) << done.error_message();
  EXPECT_EQ(done.winner_index(), 2);
  auto events = sweeps_->ReadEvents(sweep->id(), 0, 0);
  ASSERT_TRUE(events.ok());
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].sequence(), int64_t(i + 1));
  EXPECT_EQ(done.last_sequence(), static_cast<int64_t>(events->size()));
}

TEST_F(SweepManagerTest, SubmitIsIdempotentOnClientRequestId) {
  trainer_.armed = true;
  Start();
  v1::SweepSpec spec = Spec();
  spec.clear_output_uri();  // each tenant's under its own prefix
  spec.set_client_request_id("nightly-sweep");
  auto first = sweeps_->Submit(spec, "t1");
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = sweeps_->Submit(spec, "t1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), first->id());
  // Another tenant's same key is another sweep.
  auto other = sweeps_->Submit(spec, "t2");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->id(), first->id());
  // Exactly 4 trials each: the retry queued nothing.
  auto jobs = jobs_->List(v1::ListJobsRequest());
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->jobs_size(), 8);
  // After a restart too.
  Stop();
  Start();
  auto after_restart = sweeps_->Submit(spec, "t1");
  ASSERT_TRUE(after_restart.ok()) << after_restart.status();
  EXPECT_EQ(after_restart->id(), first->id());
  EXPECT_EQ(jobs_->List(v1::ListJobsRequest())->jobs_size(), 8);
  spec.set_client_request_id(std::string(129, 'x'));
  EXPECT_EQ(sweeps_->Submit(spec, "t1").status().message(),
            "sweep.client_request_id: at most 128 characters");
}

TEST_F(SweepManagerTest, SubmitStoresEveryTrialOrNone) {
  // Room for 3 queued jobs; the sweep has 4 trials: refused whole.
  options_.scheduler.max_queue = 3;
  trainer_.armed = true;
  Start();
  auto refused = sweeps_->Submit(Spec(), "");
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_EQ(jobs_->List(v1::ListJobsRequest())->jobs_size(), 0);
  EXPECT_EQ(sweeps_->List(v1::ListSweepsRequest())->sweeps_size(), 0);
  v1::SweepSpec three = Spec();
  three.clear_freeze_depths();
  three.add_freeze_depths(0);
  three.add_freeze_depths(1);
  auto fits = sweeps_->Submit(three, "");
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(jobs_->List(v1::ListJobsRequest())->jobs_size(), 3);
}

TEST_F(SweepManagerTest, OrphanTrialsAreCancelledAtStart) {
  // A trial job whose sweep was never stored, as the non-atomic submit of
  // earlier servers could leave after a crash.
  trainer_.armed = true;
  Start();
  v1::FineTuneJob spec = Spec().job();
  auto orphans = jobs_->NewJobRecords({spec}, "", "sweep-lost");
  ASSERT_TRUE(orphans.ok()) << orphans.status();
  ASSERT_TRUE(jobs_->store()->CreateJob(orphans->jobs[0], JobManager::QueuedEvent()).ok());
  auto sweep = sweeps_->Submit(Spec(), "");  // a real sweep keeps its trials
  ASSERT_TRUE(sweep.ok());
  Stop();
  Start();
  EXPECT_EQ(WaitJobState(orphans->jobs[0].id(), v1::JOB_STATE_CANCELLED), v1::JOB_STATE_CANCELLED);
  for (const v1::SweepTrial& t : sweep->trials()) {
    EXPECT_NE(jobs_->Get(t.job_id())->state(), v1::JOB_STATE_CANCELLED) << t.label();
  }
}

// Push, not poll: each stored event is announced to the sweep's
// subscribers once it is readable, with no manager lock held (the callback
// reads the events itself).
TEST_F(SweepManagerTest, EmitNotifiesTheSweepsSubscribersWithTheEventReadable) {
  trainer_.armed = true;  // trials wait, so only our Cancel ends the sweep
  Start();
  auto sweep = sweeps_->Submit(Spec(), "");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  absl::Mutex mu;
  bool saw_result = false;
  std::atomic<int> other_calls{0};
  auto id = sweeps_->Subscribe(sweep->id(), [&] {
    auto events = sweeps_->ReadEvents(sweep->id(), 0, 0);
    absl::MutexLock lock(&mu);
    if (events.ok() && !events->empty() && events->back().has_result()) saw_result = true;
  });
  auto other = sweeps_->Subscribe("sweep-other", [&] { ++other_calls; });
  EXPECT_EQ(sweeps_->subscriber_count(), 2u);
  EXPECT_EQ(sweeps_->subscriber_count(sweep->id()), 1u);

  ASSERT_TRUE(sweeps_->Cancel(sweep->id()).ok());
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&saw_result), absl::Seconds(10)))
        << "no notification after the final event";
  }
  EXPECT_EQ(other_calls.load(), 0);
  sweeps_->Unsubscribe(id);
  sweeps_->Unsubscribe(other);
  EXPECT_EQ(sweeps_->subscriber_count(), 0u);
}

TEST_F(SweepManagerTest, ShutdownWakesSubscribersAndReportsStopped) {
  trainer_.armed = true;
  Start();
  auto sweep = sweeps_->Submit(Spec(), "");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  std::atomic<bool> stopped_seen{false};
  auto id = sweeps_->Subscribe(sweep->id(), [&] {
    if (sweeps_->stopped()) stopped_seen = true;
  });
  EXPECT_FALSE(sweeps_->stopped());
  sweeps_->Shutdown();
  EXPECT_TRUE(sweeps_->stopped());
  EXPECT_TRUE(stopped_seen.load());  // NotifyAll ran before Shutdown returned
  sweeps_->Unsubscribe(id);
}

TEST_F(SweepManagerTest, ListPagesNewestFirstFiltersByStateAndTenant) {
  trainer_.armed = true;
  Start();
  std::vector<std::string> ids;  // submit order
  for (const char* tenant : {"a", "a", "a", "b"}) {
    v1::SweepSpec spec = Spec();
    spec.clear_output_uri();  // each its own, under its tenant's prefix
    auto sweep = sweeps_->Submit(spec, tenant);
    ASSERT_TRUE(sweep.ok()) << sweep.status();
    ids.push_back(sweep->id());
  }
  ASSERT_TRUE(sweeps_->Cancel(ids[0]).ok());

  // Tenant "a", two per page: [2, 1] then [0].
  v1::ListSweepsRequest request;
  request.set_page_size(2);
  auto page1 = sweeps_->List(request, std::string("a"));
  ASSERT_TRUE(page1.ok()) << page1.status();
  ASSERT_EQ(page1->sweeps_size(), 2);
  EXPECT_EQ(page1->sweeps(0).id(), ids[2]);
  EXPECT_EQ(page1->sweeps(1).id(), ids[1]);
  ASSERT_FALSE(page1->next_page_token().empty());
  request.set_page_token(page1->next_page_token());
  auto page2 = sweeps_->List(request, std::string("a"));
  ASSERT_TRUE(page2.ok()) << page2.status();
  ASSERT_EQ(page2->sweeps_size(), 1);
  EXPECT_EQ(page2->sweeps(0).id(), ids[0]);
  EXPECT_TRUE(page2->next_page_token().empty());

  // No tenant: all four, default page size.
  auto all = sweeps_->List(v1::ListSweepsRequest());
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->sweeps_size(), 4);
  EXPECT_EQ(all->sweeps(0).id(), ids[3]);
  EXPECT_TRUE(all->next_page_token().empty());

  v1::ListSweepsRequest cancelled;
  cancelled.add_states(v1::SWEEP_STATE_CANCELLED);
  auto only = sweeps_->List(cancelled);
  ASSERT_TRUE(only.ok()) << only.status();
  ASSERT_EQ(only->sweeps_size(), 1);
  EXPECT_EQ(only->sweeps(0).id(), ids[0]);
  cancelled.add_states(v1::SWEEP_STATE_RUNNING);
  EXPECT_EQ(sweeps_->List(cancelled)->sweeps_size(), 4);

  // Errors name the field.
  v1::ListSweepsRequest bad;
  bad.set_page_token("not a token");
  auto bad_token = sweeps_->List(bad);
  EXPECT_EQ(bad_token.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad_token.status().message(), "page_token: malformed");
  // A ListJobs token ("v1:<micros>:<id>", web-safe base64) is not a sweep token.
  v1::ListJobsRequest job_page;
  job_page.set_page_size(1);
  auto job_list = jobs_->List(job_page);
  ASSERT_TRUE(job_list.ok());
  ASSERT_FALSE(job_list->next_page_token().empty());
  bad.set_page_token(job_list->next_page_token());
  EXPECT_EQ(sweeps_->List(bad).status().message(), "page_token: malformed");
  bad.set_page_token("");
  bad.set_page_size(-1);
  EXPECT_EQ(sweeps_->List(bad).status().message(), "page_size: must not be negative");
  bad.set_page_size(0);
  bad.add_states(static_cast<v1::SweepState>(99));
  EXPECT_EQ(sweeps_->List(bad).status().message(), "states: invalid sweep state 99");
}

std::string Scrape(const metrics::Metrics& m) {
  return prometheus::TextSerializer().Serialize(m.registry()->Collect());
}

TEST_F(SweepManagerTest, PrometheusSweepsByStateAndProgress) {
  metrics::MetricsOptions metrics_options;
  metrics_options.listen_address = "";
  auto m = metrics::Metrics::Create(metrics_options);
  ASSERT_TRUE(m.ok()) << m.status();
  trainer_.armed = true;
  Start(m->get());
  auto sweep = sweeps_->Submit(Spec(), "");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  std::string text = Scrape(**m);
  EXPECT_NE(text.find("freezetune_sweeps{state=\"running\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("freezetune_sweep_trials{sweep_id=\"" + sweep->id() + "\"} 4"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("freezetune_sweep_trials_done{sweep_id=\"" + sweep->id() + "\"} 0"),
            std::string::npos)
      << text;
  trainer_.gate.Notify();
  ASSERT_EQ(WaitEnded(sweep->id()).state(), v1::SWEEP_STATE_SUCCEEDED);
  text = Scrape(**m);
  EXPECT_NE(text.find("freezetune_sweeps{state=\"succeeded\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("freezetune_sweeps{state=\"running\"} 0"), std::string::npos) << text;
  EXPECT_EQ(text.find("sweep_id=\"" + sweep->id() + "\""), std::string::npos) << text;
  sweeps_.reset();
  jobs_.reset();
}

}  // namespace
}  // namespace freezetune::sweeps
