// Issue 12.2 at the JobManager, without training (injected runs) and under
// ThreadSanitizer: two managers on one real PostgreSQL
// (tests/support/postgres_instance.h) share the queue.
//   - jobs submitted to one run on both, each exactly once;
//   - Cancel on the manager that does not run a job stops its run within 2 s;
//   - a manager whose lease moved on (another replica took the job over)
//     stops the run and stores nothing more; the job is taken over when the
//     lease expires and finishes;
//   - a drain releases the leases: the other manager runs the job at once,
//     not after the lease expires;
//   - a manager that starts under the name of one that died re-queues the
//     jobs that one held at once;
//   - the queue's metrics are the shared queue's on both, with one label.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/jobs/job_manager.h"
#include "server/metrics/metrics.h"
#include "server/store/postgres_backend.h"
#include "tests/support/postgres_instance.h"

namespace freezetune::jobs {
namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;
using testing::PostgresInstance;

// What the injected runs saw: which manager ran which job, how often.
struct Runs {
  absl::Mutex mu;
  std::map<std::string, std::vector<std::string>> by_job ABSL_GUARDED_BY(mu);
  std::atomic<int> started{0};
  // Runs block until stopped while this is set (the first run of each job
  // only, when `once`).
  std::atomic<bool> block{false};
  std::atomic<bool> block_once{false};
};

TrainHooks Hooks(const std::string& name, Runs* runs) {
  TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob&, const data::UriOptions&,
                      const train::JobLimits&) { return absl::OkStatus(); };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> { return v1::PlanFreezeResponse(); };
  hooks.run = [name, runs](const v1::FineTuneJob&,
                           const train::RunContext& context) -> absl::StatusOr<v1::JobResult> {
    bool first = false;
    {
      absl::MutexLock lock(&runs->mu);
      auto& seen = runs->by_job[context.job_id];
      first = seen.empty();
      seen.push_back(name);
    }
    runs->started.fetch_add(1);
    const bool block = runs->block.load() && (first || !runs->block_once.load());
    for (int step = 1; block || step <= 3; ++step) {
      if (context.should_stop()) return absl::CancelledError("stopped");
      v1::JobEvent event;
      event.mutable_train()->set_step(step);
      context.emit(event);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    v1::JobResult result;
    result.set_steps(3);
    return result;
  };
  return hooks;
}

class SharedQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string bindir = PostgresInstance::FindBinDir();
    if (bindir.empty()) {
      GTEST_SKIP() << PostgresInstance::kNotInstalled;
    }
    auto pg = PostgresInstance::Start(bindir);
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(pg).value();
    ASSERT_TRUE(pg_->CreateDatabase("jobs").ok());
    root_ = fs::temp_directory_path() / ("ft_shared_queue_" + std::to_string(::getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    pg_.reset();
    fs::remove_all(root_);
  }

  std::unique_ptr<JobManager> Start(const std::string& name, metrics::Metrics* metrics = nullptr) {
    JobManagerOptions options;
    options.data_dir = (root_ / name).string();
    options.postgres_uri = pg_->Uri("jobs");
    options.replica_id = name;
    options.scheduler.cpu_slots = 1;
    options.lease_duration = absl::Seconds(2);
    options.lease_renew_interval = absl::Milliseconds(200);
    options.scheduler.max_queued_per_tenant = max_queued_per_tenant_;
    options.scheduler.max_queue = max_queue_;
    auto manager = JobManager::Create(options, Hooks(name, &runs_), metrics);
    EXPECT_TRUE(manager.ok()) << manager.status();
    return manager.ok() ? std::move(manager).value() : nullptr;
  }

  v1::Job Submit(JobManager& manager) {
    v1::FineTuneJob spec;
    spec.set_model_uri("/m");
    auto job = manager.Submit(spec, "");
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  v1::JobState WaitFor(JobManager& via, const std::string& id, v1::JobState state,
                       std::chrono::seconds timeout = std::chrono::seconds(30)) {
    const auto deadline = steady_clock::now() + timeout;
    v1::JobState now = v1::JOB_STATE_UNSPECIFIED;
    while (steady_clock::now() < deadline) {
      now = via.Get(id)->state();
      if (now == state) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return now;
  }

  // The manager whose run of `id` started last, waiting for the first run
  // to start (RUNNING is stored just before).
  std::string Runner(const std::string& id) {
    absl::MutexLock lock(&runs_.mu);
    auto started = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(runs_.mu) {
      return !runs_.by_job[id].empty();
    };
    runs_.mu.AwaitWithTimeout(absl::Condition(&started), absl::Seconds(30));
    const auto& seen = runs_.by_job[id];
    return seen.empty() ? "" : seen.back();
  }

  // Two jobs run (one slot each), then two wait, one submitted to each
  // manager; a fifth is refused by either manager with `message`.
  void ExpectAThirdQueuedJobRefused(const std::string& message) {
    runs_.block = true;
    a_ = Start("a");
    b_ = Start("b");
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    for (int i = 0; i < 4; ++i) {
      Submit(i % 2 == 0 ? *a_ : *b_);
      if (i == 1) {
        const auto deadline = steady_clock::now() + std::chrono::seconds(30);
        while (runs_.started.load() < 2 && steady_clock::now() < deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ASSERT_EQ(runs_.started.load(), 2);
      }
    }
    for (JobManager* manager : {a_.get(), b_.get()}) {
      v1::FineTuneJob spec;
      spec.set_model_uri("/m");
      auto over = manager->Submit(spec, "");
      ASSERT_TRUE(absl::IsResourceExhausted(over.status())) << over.status();
      EXPECT_NE(over.status().message().find(message), std::string::npos) << over.status();
    }
  }

  // What a scrape of `m` would show (its collect hook run first).
  static std::string Scrape(metrics::Metrics& m) {
    m.RunCollectHook();
    return prometheus::TextSerializer().Serialize(m.registry()->Collect());
  }

  std::unique_ptr<PostgresInstance> pg_;
  fs::path root_;
  Runs runs_;
  int max_queued_per_tenant_ = 0;
  int max_queue_ = 1000;
  // Outlive the managers (TearDown resets those first), whose collect hooks
  // they hold.
  std::unique_ptr<metrics::Metrics> metrics_a_, metrics_b_;
  std::unique_ptr<JobManager> a_, b_;
};

TEST_F(SharedQueueTest, JobsSubmittedToOneRunOnBothOnce) {
  a_ = Start("a");
  b_ = Start("b");
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(Submit(*a_).id());
  for (const std::string& id : ids) {
    EXPECT_EQ(WaitFor(*b_, id, v1::JOB_STATE_SUCCEEDED), v1::JOB_STATE_SUCCEEDED) << id;
  }
  std::map<std::string, int> per_manager;
  absl::MutexLock lock(&runs_.mu);
  for (const std::string& id : ids) {
    ASSERT_EQ(runs_.by_job[id].size(), 1u) << id << " ran more than once";
    ++per_manager[runs_.by_job[id][0]];
  }
  EXPECT_GE(per_manager["a"], 1);
  EXPECT_GE(per_manager["b"], 1) << "b claimed none of the jobs submitted to a";
}

TEST_F(SharedQueueTest, QueueMetricsAreTheSharedQueuesOnEveryReplica) {
  metrics::MetricsOptions no_endpoint;
  no_endpoint.listen_address = "";
  metrics_a_ = std::move(metrics::Metrics::Create(no_endpoint)).value();
  metrics_b_ = std::move(metrics::Metrics::Create(no_endpoint)).value();
  runs_.block = true;
  a_ = Start("a", metrics_a_.get());
  b_ = Start("b", metrics_b_.get());
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  // One slot each: two jobs run, three wait, whichever replica took them.
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Submit(i % 2 == 0 ? *a_ : *b_).id());
  const auto deadline = steady_clock::now() + std::chrono::seconds(30);
  while (runs_.started.load() < 2 && steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(runs_.started.load(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the oldest has waited
  // The queue's series, each up to its value: "<name>{queue=\"<URI>\"...} ".
  const std::string queue = absl::StrCat("{queue=\"", store::RedactPostgresUri(pg_->Uri("jobs")));
  const std::string depth = absl::StrCat("freezetune_queue_depth", queue, "\"} ");
  const std::string oldest = absl::StrCat("freezetune_queue_oldest_age_seconds", queue, "\"} ");
  auto jobs_in = [&](const char* state) {
    return absl::StrCat("freezetune_jobs", queue, "\",state=\"", state, "\"} ");
  };
  auto shows = [](const std::string& text, const std::string& series, int value) {
    return text.find(absl::StrCat(series, value, "\n")) != std::string::npos;
  };
  auto oldest_age = [&](const std::string& text) {
    const size_t at = text.find(oldest);
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + oldest.size()));
  };
  for (metrics::Metrics* m : {metrics_a_.get(), metrics_b_.get()}) {
    const std::string text = Scrape(*m);
    EXPECT_TRUE(shows(text, depth, 3)) << text;
    EXPECT_TRUE(shows(text, jobs_in("queued"), 3)) << text;
    EXPECT_TRUE(shows(text, jobs_in("running"), 2)) << text;
    EXPECT_GT(oldest_age(text), 0.0) << text;
    EXPECT_LT(oldest_age(text), 30.0) << text;
  }
  // Every job ends through one manager; both see it.
  for (const std::string& id : ids) {
    ASSERT_TRUE(a_->Cancel(id).ok()) << id;
    EXPECT_EQ(WaitFor(*a_, id, v1::JOB_STATE_CANCELLED), v1::JOB_STATE_CANCELLED) << id;
  }
  for (metrics::Metrics* m : {metrics_a_.get(), metrics_b_.get()}) {
    const std::string text = Scrape(*m);
    EXPECT_TRUE(shows(text, depth, 0)) << text;
    EXPECT_TRUE(shows(text, jobs_in("cancelled"), 5)) << text;
    EXPECT_TRUE(shows(text, jobs_in("running"), 0)) << text;
    EXPECT_EQ(oldest_age(text), 0.0) << text;
  }
}

// --max_queued_per_tenant counts the tenant's queued jobs on every replica.
TEST_F(SharedQueueTest, TheTenantQueueLimitCountsEveryReplicasJobs) {
  max_queued_per_tenant_ = 2;
  ExpectAThirdQueuedJobRefused("tenant \"\" has 2 queued jobs across the replicas; 1 more");
}

// So does --max_queue, which would count only a replica's own (none).
TEST_F(SharedQueueTest, TheQueueLimitCountsEveryReplicasJobs) {
  max_queue_ = 2;
  ExpectAThirdQueuedJobRefused("queue is full (2 jobs waiting across the replicas; 1 more");
}

TEST_F(SharedQueueTest, CancelOnTheOtherManagerStopsTheRun) {
  runs_.block = true;
  a_ = Start("a");
  b_ = Start("b");
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  const v1::Job job = Submit(*a_);
  ASSERT_EQ(WaitFor(*a_, job.id(), v1::JOB_STATE_RUNNING), v1::JOB_STATE_RUNNING);
  JobManager& other = Runner(job.id()) == "a" ? *b_ : *a_;
  auto answer = other.Cancel(job.id());
  ASSERT_TRUE(answer.ok()) << answer.status();
  const auto asked = steady_clock::now();
  EXPECT_EQ(WaitFor(other, job.id(), v1::JOB_STATE_CANCELLED), v1::JOB_STATE_CANCELLED);
  EXPECT_LE(steady_clock::now() - asked, std::chrono::seconds(2));
}

TEST_F(SharedQueueTest, ALostLeaseStopsTheRunAndTheJobIsTakenOver) {
  runs_.block = true;
  runs_.block_once = true;  // the run after the takeover finishes
  a_ = Start("a");
  b_ = Start("b");
  ASSERT_NE(a_, nullptr);
  ASSERT_NE(b_, nullptr);
  const v1::Job job = Submit(*a_);
  ASSERT_EQ(WaitFor(*a_, job.id(), v1::JOB_STATE_RUNNING), v1::JOB_STATE_RUNNING);
  const std::string first = Runner(job.id());
  // Another replica took it over: its epoch moved on in the database.
  ASSERT_TRUE(pg_->Query("jobs", "UPDATE jobs SET lease_epoch = lease_epoch + 100, "
                                 "lease_owner = 'elsewhere'")
                  .ok());
  // Once the lease (now 'elsewhere's) expires, a or b takes the job over
  // and runs it to the end.
  EXPECT_EQ(WaitFor(*b_, job.id(), v1::JOB_STATE_SUCCEEDED), v1::JOB_STATE_SUCCEEDED);
  auto events = b_->ReadEvents(job.id(), 0, 0);
  ASSERT_TRUE(events.ok());
  int running = 0;
  bool taken_over = false;
  for (size_t i = 0; i < events->size(); ++i) {
    const v1::JobEvent& e = (*events)[i];
    EXPECT_EQ(e.sequence(), static_cast<int64_t>(i + 1));
    if (!e.has_state_change()) continue;
    running += e.state_change().state() == v1::JOB_STATE_RUNNING;
    taken_over = taken_over ||
                 e.state_change().message().find("the lease of replica elsewhere expired") !=
                     std::string::npos;
  }
  EXPECT_EQ(running, 2);
  EXPECT_TRUE(taken_over);
  absl::MutexLock lock(&runs_.mu);
  EXPECT_EQ(runs_.by_job[job.id()].size(), 2u);
  EXPECT_EQ(runs_.by_job[job.id()][0], first);
}

TEST_F(SharedQueueTest, ADrainReleasesItsLeasesAtOnce) {
  runs_.block = true;
  runs_.block_once = true;
  a_ = Start("a");
  ASSERT_NE(a_, nullptr);
  const v1::Job job = Submit(*a_);
  ASSERT_EQ(WaitFor(*a_, job.id(), v1::JOB_STATE_RUNNING), v1::JOB_STATE_RUNNING);
  b_ = Start("b");
  ASSERT_NE(b_, nullptr);
  const auto drained = steady_clock::now();
  a_->Shutdown();
  EXPECT_EQ(WaitFor(*b_, job.id(), v1::JOB_STATE_SUCCEEDED), v1::JOB_STATE_SUCCEEDED);
  // Well before the 2 s lease would have expired.
  EXPECT_LT(steady_clock::now() - drained, std::chrono::milliseconds(1500));
  EXPECT_EQ(Runner(job.id()), "b");
}

TEST_F(SharedQueueTest, ARestartedReplicaRequeuesWhatItsPreviousProcessHeld) {
  runs_.block = true;
  runs_.block_once = true;
  a_ = Start("a");
  ASSERT_NE(a_, nullptr);
  const v1::Job job = Submit(*a_);
  ASSERT_EQ(WaitFor(*a_, job.id(), v1::JOB_STATE_RUNNING), v1::JOB_STATE_RUNNING);
  // As if a process "b" had died holding the job with a lease valid for an
  // hour.
  ASSERT_TRUE(pg_->Query("jobs", "UPDATE jobs SET lease_owner = 'b', "
                                 "lease_expires = lease_expires + 3600000000")
                  .ok());
  const auto restarted = steady_clock::now();
  b_ = Start("b");
  ASSERT_NE(b_, nullptr);
  EXPECT_EQ(WaitFor(*b_, job.id(), v1::JOB_STATE_SUCCEEDED), v1::JOB_STATE_SUCCEEDED);
  EXPECT_LT(steady_clock::now() - restarted, std::chrono::seconds(5)) << "waited for the lease";
  auto events = b_->ReadEvents(job.id(), 0, 0);
  ASSERT_TRUE(events.ok());
  bool requeued = false;
  for (const v1::JobEvent& e : *events) {
    requeued = requeued || e.state_change().message().find("replica b restarted") !=
                               std::string::npos;
  }
  EXPECT_TRUE(requeued);
}

}  // namespace
}  // namespace freezetune::jobs
