// JobManager + Scheduler driven by an injected runner (the RunFineTune
// signature): priority order, cancel queued/running/finished, bounded queue,
// validation, recovery after shutdown and after a crash, a drain whose
// deadline passes during a step (the job is handed back, issue 14.2).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/jobs/job_manager.h"

namespace freezetune::jobs {
namespace {

using std::chrono::milliseconds;

std::string TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("ft_sched_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

v1::FineTuneJob Spec(const std::string& name, int priority = 0) {
  v1::FineTuneJob spec;
  spec.set_model_uri("/models/tiny");
  spec.mutable_train()->set_uri("/data/train.jsonl");
  spec.set_display_name(name);
  spec.set_priority(priority);
  return spec;
}

// A runner whose behaviour each test scripts: records the order jobs start
// in, blocks on a gate for jobs named "blocker", loops until stopped for
// jobs named "loop*", fails jobs named "fail*", succeeds otherwise.
class FakeTrainer {
 public:
  TrainHooks Hooks() {
    TrainHooks hooks;
    hooks.validate = [this](const v1::FineTuneJob& job, const data::UriOptions&,
                            const train::JobLimits&) -> absl::Status {
      validations.fetch_add(1);
      if (job.hyperparameters().epochs() < 0) {
        return absl::InvalidArgumentError("job.hyperparameters.epochs: must be >= 1");
      }
      return absl::OkStatus();
    };
    hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
        -> absl::StatusOr<v1::PlanFreezeResponse> {
      v1::PlanFreezeResponse r;
      r.set_total_parameters(42);
      return r;
    };
    hooks.run = [this](const v1::FineTuneJob& job,
                       const train::RunContext& ctx) -> absl::StatusOr<v1::JobResult> {
      {
        absl::MutexLock lock(&mu);
        started.push_back(job.display_name());
        output_dirs.push_back(ctx.output_dir);
        if (std::filesystem::is_directory(ctx.checkpoint_dir)) saw_checkpoint_dir = true;
      }
      const std::string& name = job.display_name();
      if (name == "blocker") {
        while (!gate.HasBeenNotified()) {
          if (ctx.should_stop()) return absl::CancelledError("stopped");
          std::this_thread::sleep_for(milliseconds(2));
        }
      }
      if (name == "stuck") {
        // One step that cannot be interrupted (a long micro-batch): it
        // ignores should_stop until the gate opens, then stores its step.
        gate.WaitForNotification();
        v1::JobEvent e;
        e.mutable_train()->set_step(1);
        e.mutable_train()->set_total_steps(1);
        ctx.emit(e);
        v1::JobResult result;
        result.set_steps(1);
        return result;
      }
      if (name.rfind("threads", 0) == 0) {
        // Reports the thread share it is offered until the gate opens.
        while (!gate.HasBeenNotified()) {
          if (ctx.should_stop()) return absl::CancelledError("stopped");
          const int threads = ctx.intra_op_threads ? ctx.intra_op_threads() : -1;
          {
            absl::MutexLock lock(&mu);
            offered_threads[name] = threads;
          }
          std::this_thread::sleep_for(milliseconds(2));
        }
      }
      if (name.rfind("loop", 0) == 0) {
        for (int64_t step = 1;; ++step) {
          if (ctx.should_stop()) return absl::CancelledError("stopped at step");
          v1::JobEvent e;
          e.mutable_train()->set_step(step);
          e.mutable_train()->set_total_steps(1000000);
          e.mutable_train()->set_loss(1.0f / step);
          ctx.emit(e);
          std::this_thread::sleep_for(milliseconds(2));
        }
      }
      if (name.rfind("fail", 0) == 0) return absl::InternalError("step 3: loss is NaN");
      for (int step = 1; step <= 3; ++step) {
        v1::JobEvent e;
        e.mutable_train()->set_step(step);
        e.mutable_train()->set_total_steps(3);
        e.mutable_train()->set_epoch(step / 3.0f);
        ctx.emit(e);
      }
      v1::JobResult result;
      result.set_steps(3);
      result.set_output_uri(ctx.output_dir);
      return result;
    };
    return hooks;
  }

  void OpenGate() {
    if (!gate.HasBeenNotified()) gate.Notify();
  }

  std::vector<std::string> Started() {
    absl::MutexLock lock(&mu);
    return started;
  }

  absl::Mutex mu;
  std::vector<std::string> started ABSL_GUARDED_BY(mu);
  std::vector<std::string> output_dirs ABSL_GUARDED_BY(mu);
  std::map<std::string, int> offered_threads ABSL_GUARDED_BY(mu);
  absl::Notification gate;
  std::atomic<int> validations{0};
  std::atomic<bool> saw_checkpoint_dir{false};
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.data_dir = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    options_.scheduler.cpu_slots = 1;
    options_.scheduler.max_queue = 100;
  }
  void TearDown() override {
    trainer_.OpenGate();
    manager_.reset();
    std::filesystem::remove_all(options_.data_dir);
  }

  void Start() {
    auto manager = JobManager::Create(options_, trainer_.Hooks());
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(manager).value();
  }

  v1::Job Submit(const v1::FineTuneJob& spec) {
    auto job = manager_->Submit(spec, "");
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  v1::Job WaitFor(const std::string& id, v1::JobState state) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      auto job = manager_->Get(id);
      if (job.ok() && job->state() == state) return *job;
      std::this_thread::sleep_for(milliseconds(5));
    }
    ADD_FAILURE() << "job " << id << " never reached " << v1::JobState_Name(state);
    return v1::Job();
  }

  std::vector<v1::JobEvent> Events(const std::string& id) {
    auto events = manager_->ReadEvents(id, 0, 0);
    EXPECT_TRUE(events.ok());
    return events.ok() ? *events : std::vector<v1::JobEvent>();
  }

  static void ExpectGapless(const std::vector<v1::JobEvent>& events) {
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    }
  }

  JobManagerOptions options_;
  FakeTrainer trainer_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(SchedulerTest, SucceededJobHasFullEventHistory) {
  Start();
  v1::Job job = Submit(Spec("ok"));
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.id().size(), 16u);
  EXPECT_EQ(job.id().rfind("job-", 0), 0u);
  v1::Job done = WaitFor(job.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result().steps(), 3);
  EXPECT_EQ(done.progress().step(), 3);
  EXPECT_TRUE(done.has_start_time());
  EXPECT_TRUE(done.has_end_time());
  EXPECT_EQ(done.result().output_uri(),
            (std::filesystem::path(options_.data_dir) / "outputs" / job.id()).string());
  EXPECT_TRUE(std::filesystem::is_directory(done.result().output_uri()));
  // The run got a checkpoint dir. It is removed only after the terminal
  // state is stored (a crash in between must still find the checkpoints),
  // so it goes shortly after SUCCEEDED becomes visible.
  EXPECT_TRUE(trainer_.saw_checkpoint_dir.load());
  const std::filesystem::path checkpoints =
      std::filesystem::path(options_.data_dir) / "checkpoints" / job.id();
  for (int i = 0; i < 500 && std::filesystem::exists(checkpoints); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(std::filesystem::exists(checkpoints));

  auto events = Events(job.id());
  ASSERT_EQ(events.size(), 7u);  // queued, running, 3 x train, result, succeeded
  ExpectGapless(events);
  EXPECT_EQ(events[0].state_change().state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(events[1].state_change().state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(events[2].train().step(), 1);
  EXPECT_TRUE(events[5].has_result());
  EXPECT_EQ(events[6].state_change().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.last_sequence(), 7);

  // Finished: cancel is a precondition failure that names the state.
  absl::Status cancel = manager_->Cancel(job.id()).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(cancel));
  EXPECT_EQ(cancel.message(), "job " + job.id() + " already SUCCEEDED");
  EXPECT_TRUE(absl::IsNotFound(manager_->Cancel("job-000000000000").status()));
  EXPECT_TRUE(absl::IsNotFound(manager_->Get("job-000000000000").status()));
}

TEST_F(SchedulerTest, CpuJobsSplitTheThreadsWhileTheyRunTogether) {
  options_.scheduler.cpu_slots = 2;
  options_.cpu_threads = 4;
  Start();
  auto offered = [&](const std::string& name, int want) {
    for (int i = 0; i < 4000; ++i) {
      {
        absl::MutexLock lock(&trainer_.mu);
        auto it = trainer_.offered_threads.find(name);
        if (it != trainer_.offered_threads.end() && it->second == want) return true;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    return false;
  };
  v1::FineTuneJob a;
  a.set_display_name("threads-a");
  v1::FineTuneJob b;
  b.set_display_name("threads-b");
  const v1::Job job_a = Submit(a);
  EXPECT_TRUE(offered("threads-a", 4));  // alone: every thread
  const v1::Job job_b = Submit(b);
  EXPECT_TRUE(offered("threads-a", 2));  // together: half each
  EXPECT_TRUE(offered("threads-b", 2));
  ASSERT_TRUE(manager_->Cancel(job_b.id()).ok());
  WaitFor(job_b.id(), v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(offered("threads-a", 4));  // alone again
  trainer_.OpenGate();
  WaitFor(job_a.id(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(SchedulerTest, FailedJobRecordsTheError) {
  Start();
  v1::Job job = Submit(Spec("fail"));
  v1::Job done = WaitFor(job.id(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(done.error_message(), "step 3: loss is NaN");
  auto events = Events(job.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(events.back().state_change().message(), "step 3: loss is NaN");
}

TEST_F(SchedulerTest, RunsHigherPriorityFirstThenFifo) {
  Start();
  v1::Job blocker = Submit(Spec("blocker"));
  WaitFor(blocker.id(), v1::JOB_STATE_RUNNING);
  std::vector<v1::Job> jobs = {Submit(Spec("low", 0)), Submit(Spec("high-1", 5)),
                               Submit(Spec("mid", 1)), Submit(Spec("high-2", 5))};
  EXPECT_EQ(manager_->queue_depth(), 4u);
  trainer_.OpenGate();
  for (const v1::Job& j : jobs) WaitFor(j.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(trainer_.Started(),
            (std::vector<std::string>{"blocker", "high-1", "high-2", "mid", "low"}));
}

TEST_F(SchedulerTest, CancelQueuedJobIsImmediate) {
  Start();
  v1::Job blocker = Submit(Spec("blocker"));
  WaitFor(blocker.id(), v1::JOB_STATE_RUNNING);
  v1::Job queued = Submit(Spec("never"));
  EXPECT_EQ(manager_->queue_depth(), 1u);
  auto cancelled = manager_->Cancel(queued.id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(manager_->queue_depth(), 0u);
  trainer_.OpenGate();
  WaitFor(blocker.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(trainer_.Started(), (std::vector<std::string>{"blocker"}));
  auto events = Events(queued.id());
  ASSERT_EQ(events.size(), 2u);
  ExpectGapless(events);
  EXPECT_EQ(events[1].state_change().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(absl::IsFailedPrecondition(manager_->Cancel(queued.id()).status()));
}

TEST_F(SchedulerTest, CancelRunningJobStopsIt) {
  Start();
  v1::Job job = Submit(Spec("loop"));
  WaitFor(job.id(), v1::JOB_STATE_RUNNING);
  // Let it take a few steps, observed through the live event log.
  absl::Notification some_steps;
  std::atomic<int> notified{0};
  auto sub = manager_->Subscribe(job.id(), [&] {
    if (notified.fetch_add(1) == 3) some_steps.Notify();
  });
  ASSERT_TRUE(some_steps.WaitForNotificationWithTimeout(absl::Seconds(10)));
  manager_->Unsubscribe(sub);

  auto cancelling = manager_->Cancel(job.id());
  ASSERT_TRUE(cancelling.ok()) << cancelling.status();
  v1::Job done = WaitFor(job.id(), v1::JOB_STATE_CANCELLED);
  EXPECT_GT(done.progress().step(), 0);
  auto events = Events(job.id());
  ExpectGapless(events);
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(done.last_sequence(), static_cast<int64_t>(events.size()));
}

TEST_F(SchedulerTest, FullQueueIsResourceExhaustedAndStoresNothing) {
  options_.scheduler.max_queue = 2;
  Start();
  v1::Job blocker = Submit(Spec("blocker"));
  WaitFor(blocker.id(), v1::JOB_STATE_RUNNING);
  Submit(Spec("a"));
  Submit(Spec("b"));
  auto rejected = manager_->Submit(Spec("c"), "");
  EXPECT_TRUE(absl::IsResourceExhausted(rejected.status())) << rejected.status();
  EXPECT_EQ(manager_->List(v1::ListJobsRequest())->jobs_size(), 3);
}

TEST_F(SchedulerTest, InvalidJobIsRejectedAndNotStored) {
  Start();
  v1::FineTuneJob bad = Spec("bad");
  bad.mutable_hyperparameters()->set_epochs(-1);
  auto rejected = manager_->Submit(bad, "");
  EXPECT_TRUE(absl::IsInvalidArgument(rejected.status()));
  EXPECT_EQ(rejected.status().message().rfind("job.hyperparameters.epochs:", 0), 0u);
  v1::FineTuneJob long_id = Spec("x");
  long_id.set_client_request_id(std::string(129, 'r'));
  EXPECT_TRUE(absl::IsInvalidArgument(manager_->Submit(long_id, "").status()));
  EXPECT_EQ(manager_->List(v1::ListJobsRequest())->jobs_size(), 0);
}

TEST_F(SchedulerTest, SubmitIsIdempotentOnClientRequestId) {
  Start();
  v1::FineTuneJob spec = Spec("ok");
  spec.set_client_request_id("retry-me");
  v1::Job first = Submit(spec);
  v1::Job second = Submit(spec);
  EXPECT_EQ(first.id(), second.id());
  EXPECT_EQ(trainer_.validations.load(), 1);
  WaitFor(first.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(manager_->List(v1::ListJobsRequest())->jobs_size(), 1);
  EXPECT_EQ(manager_->PlanFreeze(v1::PlanFreezeRequest(), "")->total_parameters(), 42);
}

TEST_F(SchedulerTest, ShutdownRequeuesRunningJobsAndRestartRunsThem) {
  Start();
  v1::Job running = Submit(Spec("blocker"));
  WaitFor(running.id(), v1::JOB_STATE_RUNNING);
  v1::Job queued = Submit(Spec("after"));
  manager_->Shutdown();
  EXPECT_TRUE(absl::IsUnavailable(manager_->Submit(Spec("late"), "").status()));
  EXPECT_EQ(manager_->Get(running.id())->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(manager_->Get(queued.id())->state(), v1::JOB_STATE_QUEUED);
  manager_.reset();

  trainer_.OpenGate();
  Start();
  WaitFor(running.id(), v1::JOB_STATE_SUCCEEDED);
  WaitFor(queued.id(), v1::JOB_STATE_SUCCEEDED);
  auto events = Events(running.id());
  ExpectGapless(events);
  // queued, running, queued (shutdown), running, train x3, result, succeeded
  ASSERT_EQ(events.size(), 9u);
  EXPECT_EQ(events[2].state_change().state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(trainer_.Started(),
            (std::vector<std::string>{"blocker", "blocker", "after"}));
}

TEST_F(SchedulerTest, ShutdownDeadlineHandsBackAJobInAStepAndRefusesItsLaterWrites) {
  Start();
  v1::Job stuck = Submit(Spec("stuck"));
  WaitFor(stuck.id(), v1::JOB_STATE_RUNNING);
  const auto start = std::chrono::steady_clock::now();
  manager_->Shutdown(absl::Now() + absl::Milliseconds(200));
  // Returned at the deadline, not when the step ends (the gate is closed).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(manager_->abandoned_runs(), 1u);
  EXPECT_TRUE(manager_->drained());
  v1::Job handed_back = *manager_->Get(stuck.id());
  EXPECT_EQ(handed_back.state(), v1::JOB_STATE_QUEUED);
  EXPECT_FALSE(handed_back.has_start_time());
  std::vector<v1::JobEvent> events = Events(stuck.id());
  ExpectGapless(events);
  // queued, running, queued (handed back)
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].state_change().state(), v1::JOB_STATE_QUEUED);
  EXPECT_NE(events[2].state_change().message().find("grace period ended during a training step"),
            std::string::npos)
      << events[2].state_change().message();

  // The step ends: its train event, result and SUCCEEDED are refused.
  trainer_.OpenGate();
  manager_->Shutdown();  // waits for the abandoned worker this time
  EXPECT_EQ(manager_->Get(stuck.id())->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(Events(stuck.id()).size(), 3u);
  manager_.reset();

  // The next start runs it again.
  Start();
  WaitFor(stuck.id(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(trainer_.Started(), (std::vector<std::string>{"stuck", "stuck"}));
}

TEST_F(SchedulerTest, ShutdownWithTimeLeftLetsJobsRecordThemselves) {
  Start();
  v1::Job running = Submit(Spec("blocker"));
  WaitFor(running.id(), v1::JOB_STATE_RUNNING);
  manager_->Shutdown(absl::Now() + absl::Seconds(60));
  EXPECT_EQ(manager_->abandoned_runs(), 0u);
  std::vector<v1::JobEvent> events = Events(running.id());
  ASSERT_EQ(events.size(), 3u);
  EXPECT_NE(events[2].state_change().message().find("interrupted by server shutdown"),
            std::string::npos)
      << events[2].state_change().message();
}

TEST_F(SchedulerTest, OneManagerPerDataDir) {
  Start();
  auto second = JobManager::Create(options_, trainer_.Hooks());
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  EXPECT_NE(second.status().message().find("in use by another freezetune-server"),
            std::string::npos);
  manager_.reset();
  auto third = JobManager::Create(options_, trainer_.Hooks());
  EXPECT_TRUE(third.ok()) << third.status();
}

TEST_F(SchedulerTest, JobsLeftRunningByACrashAreRequeued) {
  std::filesystem::create_directories(options_.data_dir);
  {
    store::StoreOptions store_options;
    store_options.path = options_.data_dir + "/freezetune.db";
    auto store = store::Store::Open(store_options);
    ASSERT_TRUE(store.ok());
    v1::Job job;
    job.set_id("job-crashed00001");
    job.set_state(v1::JOB_STATE_RUNNING);
    *job.mutable_spec() = Spec("ok");
    *job.mutable_create_time() = store::NowTimestamp();
    v1::JobEvent e;
    e.mutable_state_change()->set_state(v1::JOB_STATE_RUNNING);
    ASSERT_TRUE((*store)->CreateJob(job, e).ok());
  }
  Start();
  v1::Job done = WaitFor("job-crashed00001", v1::JOB_STATE_SUCCEEDED);
  auto events = Events("job-crashed00001");
  ExpectGapless(events);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[1].state_change().state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(events[2].state_change().state(), v1::JOB_STATE_RUNNING);
}

TEST(SchedulerUnitTest, TracksOldestQueuedAndRefusesDuplicatesAndLateJobs) {
  std::atomic<int> runs{0};
  Scheduler scheduler({}, [&](const std::string&, int, const StopFlag&) { runs.fetch_add(1); });
  absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(scheduler.OldestQueuedSince(), absl::InfiniteFuture());
  ASSERT_TRUE(scheduler.Enqueue("a", 0, false, t0 + absl::Seconds(5)).ok());
  ASSERT_TRUE(scheduler.Enqueue("b", 9, false, t0).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(scheduler.Enqueue("a", 0)));
  EXPECT_EQ(scheduler.OldestQueuedSince(), t0);
  EXPECT_EQ(scheduler.Cancel("b"), Scheduler::CancelOutcome::kRemovedFromQueue);
  EXPECT_EQ(scheduler.Cancel("b"), Scheduler::CancelOutcome::kNotFound);
  EXPECT_EQ(scheduler.OldestQueuedSince(), t0 + absl::Seconds(5));
  scheduler.Shutdown();  // never started: nothing ran
  EXPECT_EQ(runs.load(), 0);
  EXPECT_EQ(scheduler.queue_depth(), 0u);
  EXPECT_TRUE(absl::IsUnavailable(scheduler.Enqueue("c", 0)));
}

TEST(SchedulerUnitTest, PerTenantQueuedLimitCountsOnlyWaitingJobs) {
  SchedulerOptions options;
  options.max_queued_per_tenant = 1;
  Scheduler scheduler(options, [](const std::string&, int, const StopFlag&) {});
  ASSERT_TRUE(scheduler.Enqueue("a1", 0, false, absl::Now(), "alice").ok());
  absl::Status over = scheduler.Enqueue("a2", 0, false, absl::Now(), "alice");
  EXPECT_TRUE(absl::IsResourceExhausted(over));
  EXPECT_NE(over.message().find("tenant \"alice\" has 1 queued jobs"), std::string::npos) << over;
  EXPECT_TRUE(scheduler.Enqueue("b1", 0, false, absl::Now(), "bob").ok());
  EXPECT_TRUE(absl::IsResourceExhausted(scheduler.CanAccept("alice", "")));
  // Cancelling a queued job gives its tenant the room back.
  EXPECT_EQ(scheduler.Cancel("a1"), Scheduler::CancelOutcome::kRemovedFromQueue);
  EXPECT_TRUE(scheduler.CanAccept("alice", "").ok());
  EXPECT_TRUE(scheduler.Enqueue("a2", 0, false, absl::Now(), "alice").ok());
  // Recovery (force) is never refused for the limit.
  EXPECT_TRUE(scheduler.Enqueue("a3", 0, true, absl::Now(), "alice").ok());
}

TEST(SchedulerUnitTest, SlotsAndDevices) {
  SchedulerOptions options;
  options.cpu_slots = 2;
  options.gpu_devices = {"cuda:0"};
  absl::Mutex mu;
  std::map<std::string, std::string> ran_on;
  Scheduler* self = nullptr;
  Scheduler scheduler(options, [&](const std::string& id, int slot, const StopFlag&) {
    absl::MutexLock lock(&mu);
    ran_on[id] = self->slot_device(slot);
  });
  self = &scheduler;
  ASSERT_EQ(scheduler.slot_count(), 3);
  EXPECT_EQ(scheduler.slot_device(0), "cpu");
  EXPECT_EQ(scheduler.slot_device(2), "cuda:0");
  EXPECT_TRUE(scheduler.CheckDevice("cuda").ok());
  EXPECT_TRUE(absl::IsInvalidArgument(scheduler.CheckDevice("cuda:1")));
  EXPECT_TRUE(absl::IsInvalidArgument(scheduler.CheckDevice("tpu")));
  EXPECT_TRUE(absl::IsInvalidArgument(scheduler.CheckDevice("cuda:")));
  EXPECT_TRUE(absl::IsInvalidArgument(scheduler.Enqueue("x", 0, false, absl::Now(), "", "cuda:3")));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(scheduler.Enqueue("gpu" + std::to_string(i), 0, false, absl::Now(), "", "cuda").ok());
    ASSERT_TRUE(scheduler.Enqueue("cpu" + std::to_string(i), 0, false, absl::Now(), "", "cpu").ok());
  }
  scheduler.Start();
  for (int i = 0; i < 500; ++i) {
    {
      absl::MutexLock lock(&mu);
      if (ran_on.size() == 6) break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  scheduler.Shutdown();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(ran_on.size(), 6u);
  for (const auto& [id, device] : ran_on) {
    EXPECT_EQ(device, id.rfind("gpu", 0) == 0 ? "cuda:0" : "cpu") << id;
  }
}

TEST(SchedulerUnitTest, PerTenantRunningLimitLetsOtherTenantsPass) {
  SchedulerOptions options;
  options.cpu_slots = 2;
  options.max_running_per_tenant = 1;
  absl::Notification release;
  absl::Mutex mu;
  std::vector<std::string> started;
  Scheduler scheduler(options, [&](const std::string& id, int, const StopFlag&) {
    {
      absl::MutexLock lock(&mu);
      started.push_back(id);
    }
    release.WaitForNotification();
  });
  // alice's second job is ahead of bob's in the queue, but bob's runs first.
  ASSERT_TRUE(scheduler.Enqueue("a1", 0, false, absl::Now(), "alice").ok());
  ASSERT_TRUE(scheduler.Enqueue("a2", 0, false, absl::Now(), "alice").ok());
  ASSERT_TRUE(scheduler.Enqueue("b1", 0, false, absl::Now(), "bob").ok());
  scheduler.Start();
  // Both slots taken means the scheduler decided: with a2 ahead of b1, b1
  // can only have a slot if a2 was passed over (no sleep needed).
  for (int i = 0; i < 1000 && scheduler.running_count() < 2; ++i) absl::SleepFor(absl::Milliseconds(10));
  {
    absl::MutexLock lock(&mu);
    std::vector<std::string> sorted = started;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, (std::vector<std::string>{"a1", "b1"}));
  }
  EXPECT_EQ(scheduler.queue_depth(), 1u);
  // Positive control: a2 was held back only by the limit; it runs once
  // alice's first job ends.
  release.Notify();
  for (int i = 0; i < 1000; ++i) {
    {
      absl::MutexLock lock(&mu);
      if (started.size() == 3) break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(started.size(), 3u);
    if (started.size() == 3) {
      EXPECT_EQ(started[2], "a2");
    }
  }
  scheduler.Shutdown();
}

}  // namespace
}  // namespace freezetune::jobs
