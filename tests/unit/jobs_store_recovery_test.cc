// Issue 14.5 at the JobManager: a corrupt QUEUED row in a real SQLite file
// does not stop the manager from starting (the rest of the queue runs, the
// bad job is FAILED with the reason, a metric counts it), and a store that is
// empty beside existing outputs is reported loudly at start.
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/jobs/job_manager.h"

namespace freezetune::jobs {
namespace {

namespace fs = std::filesystem;

TrainHooks SucceedingHooks() {
  TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob&, const data::UriOptions&,
                      const train::JobLimits&) { return absl::OkStatus(); };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> { return v1::PlanFreezeResponse(); };
  hooks.run = [](const v1::FineTuneJob&,
                 const train::RunContext&) -> absl::StatusOr<v1::JobResult> {
    v1::JobResult result;
    result.set_steps(1);
    return result;
  };
  return hooks;
}

fs::path FreshDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("ft_recovery_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

v1::Job Queued(const std::string& id, int64_t micros) {
  v1::Job job;
  job.set_id(id);
  job.set_state(v1::JOB_STATE_QUEUED);
  job.mutable_spec()->set_model_uri("/m");
  *job.mutable_create_time() = store::FromMicros(micros);
  return job;
}

TEST(StoreRecoveryTest, CorruptQueuedRowDoesNotStopTheStart) {
  const fs::path dir = FreshDir("corrupt");
  const std::string db = (dir / "freezetune.db").string();
  {
    store::StoreOptions options;
    options.path = db;
    auto store = store::Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    v1::JobEvent queued;
    queued.mutable_state_change()->set_state(v1::JOB_STATE_QUEUED);
    ASSERT_TRUE((*store)->CreateJob(Queued("job-bad", 1), queued).ok());
    ASSERT_TRUE((*store)->CreateJob(Queued("job-fine", 2), queued).ok());
  }
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &handle), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(handle, "UPDATE jobs SET record = x'ffffffffffffffffffff' WHERE id = 'job-bad'",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(handle);

  metrics::MetricsOptions metrics_options;
  metrics_options.listen_address = "";
  auto metrics = metrics::Metrics::Create(metrics_options);
  ASSERT_TRUE(metrics.ok());
  JobManagerOptions options;
  options.data_dir = dir.string();
  options.scheduler.cpu_slots = 1;
  auto manager = JobManager::Create(options, SucceedingHooks(), metrics->get());
  ASSERT_TRUE(manager.ok()) << manager.status();  // it starts
  v1::JobState fine = v1::JOB_STATE_UNSPECIFIED;
  for (int i = 0; i < 3000 && fine != v1::JOB_STATE_SUCCEEDED; ++i) {
    fine = (*manager)->Get("job-fine")->state();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(fine, v1::JOB_STATE_SUCCEEDED);
  auto bad = (*manager)->Get("job-bad");
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(bad->error_message().find("is corrupt"), std::string::npos) << bad->error_message();
  auto list = (*manager)->List(v1::ListJobsRequest());
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->jobs_size(), 2);
  const std::string text =
      prometheus::TextSerializer().Serialize((*metrics)->registry()->Collect());
  EXPECT_NE(text.find("freezetune_store_quarantined_records_total 1"), std::string::npos) << text;
  manager->reset();
  fs::remove_all(dir);
}

TEST(StoreRecoveryTest, EmptyStoreBesideOutputsIsReportedLoudly) {
  const fs::path dir = FreshDir("lost");
  JobManagerOptions options;
  options.data_dir = dir.string();
  {
    // Positive control: an empty store and no outputs is a new server.
    ::testing::internal::CaptureStderr();
    auto manager = JobManager::Create(options, SucceedingHooks());
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager->reset();
    EXPECT_EQ(::testing::internal::GetCapturedStderr().find("THE JOB STORE IS EMPTY"),
              std::string::npos);
  }
  // The store file is lost; an earlier job's output is still there.
  fs::remove(dir / "freezetune.db");
  fs::remove(dir / "freezetune.db-wal");
  fs::remove(dir / "freezetune.db-shm");
  fs::create_directories(dir / "outputs" / "job-0123456789ab");
  std::ofstream(dir / "outputs" / "job-0123456789ab" / "config.json") << "{}";
  ::testing::internal::CaptureStderr();
  auto manager = JobManager::Create(options, SucceedingHooks());
  ASSERT_TRUE(manager.ok()) << manager.status();
  manager->reset();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("THE JOB STORE IS EMPTY"), std::string::npos) << log;
  EXPECT_NE(log.find("1 output(s)"), std::string::npos) << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace freezetune::jobs
