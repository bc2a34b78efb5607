// Issue 14.3: a store that stops accepting writes in the middle of a job.
// The real Server in-process on 127.0.0.1:0 with a scripted trainer, over a
// REAL SQLite file that fills up: the server's connection is capped with
// PRAGMA max_page_count (StoreOptions.max_page_count), just above what a
// filler table already takes, so the job's events hit SQLITE_FULL ("database
// or disk is full", as on a full disk) after a few hundred appends. Then the
// test frees the filler's pages from its own connection, and the store
// accepts writes again. Checked: training stops; the job is not left RUNNING
// but recorded FAILED with the reason once writes succeed; its watcher gets
// the terminal event; health is NOT_SERVING and freezetune_store_writable is
// 0 while the store cannot write, and both come back.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/service/server.h"
#include "server/store/store.h"
#include "tests/integration/server_test_util.h"

namespace freezetune::service {
namespace {

using freezetune::testing::HealthStatus;
using freezetune::testing::WatchAll;
using std::chrono::milliseconds;

constexpr int kServing = 1;     // grpc.health.v1 HealthCheckResponse.SERVING
constexpr int kNotServing = 2;  // NOT_SERVING

std::atomic<int> g_runs{0};
std::atomic<int> g_returned{0};

// Emits a step every millisecond until told to stop.
jobs::TrainHooks LoopingHooks() {
  jobs::TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob&, const data::UriOptions&,
                      const train::JobLimits&) { return absl::OkStatus(); };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> { return v1::PlanFreezeResponse(); };
  hooks.run = [](const v1::FineTuneJob&,
                 const train::RunContext& ctx) -> absl::StatusOr<v1::JobResult> {
    g_runs.fetch_add(1);
    for (int64_t step = 1;; ++step) {
      if (ctx.should_stop()) {
        g_returned.fetch_add(1);
        return absl::CancelledError("stopped");
      }
      v1::JobEvent e;
      e.mutable_train()->set_step(step);
      e.mutable_train()->set_total_steps(1000000);
      e.mutable_train()->set_loss(0.5f);
      ctx.emit(e);
      std::this_thread::sleep_for(milliseconds(1));
    }
  };
  return hooks;
}

void Sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
      << (error != nullptr ? error : "") << "\n" << sql;
  sqlite3_free(error);
  sqlite3_close(db);
}

int64_t PageCount(const std::string& path) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &stmt, nullptr), SQLITE_OK);
  EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  int64_t pages = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return pages;
}

template <typename F>
bool WaitUntil(F done, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

TEST(StoreFailureTest, FullStoreStopsTheJobRecordsItFailedAndReportsUnhealthy) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("ft_store_full_" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string db = dir + "/freezetune.db";
  {
    // The schema, then 64 pages of filler the test can free later.
    store::StoreOptions options;
    options.path = db;
    ASSERT_TRUE(store::Store::Open(options).ok());
    Sql(db,
        "CREATE TABLE filler(b BLOB);"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) "
        "INSERT INTO filler SELECT zeroblob(4000) FROM n;"
        "PRAGMA wal_checkpoint(TRUNCATE);");
  }
  const int64_t pages = PageCount(db);
  ASSERT_GT(pages, 64);

  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics.listen_address = "127.0.0.1:0";
  options.jobs.data_dir = dir;
  // Room for the job's first few hundred events, not for thousands.
  options.jobs.store_max_page_count = pages + 3;
  options.jobs.store_retry_interval = absl::Milliseconds(50);
  options.hooks = LoopingHooks();
  auto server = Server::Start(std::move(options));
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::FineTuneService::NewStub(channel);
  EXPECT_EQ(HealthStatus(channel, ""), kServing);

  v1::Job job;
  {
    grpc::ClientContext context;
    v1::SubmitJobRequest request;
    request.mutable_job()->set_model_uri("/m");
    request.mutable_job()->set_display_name("fills the store");
    ASSERT_TRUE(stub->SubmitJob(&context, request, &job).ok());
  }
  std::vector<v1::JobEvent> events;
  grpc::Status watch_status;
  std::thread watcher([&] { watch_status = WatchAll(stub.get(), job.id(), 0, &events); });

  // The store fills: training stops, health and the gauge say so.
  ASSERT_TRUE(WaitUntil([] { return g_returned.load() == 1; })) << "training never stopped";
  ASSERT_TRUE(WaitUntil([&] { return HealthStatus(channel, "") == kNotServing; }));
  const int metrics_port = (*server)->metrics_port();
  std::string metrics = testing::HttpGet(metrics_port, "/metrics");
  EXPECT_NE(metrics.find("freezetune_store_writable 0"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("freezetune_store_write_failures_total 0"), std::string::npos);
  {
    // Still RUNNING in the store (its FAILED cannot be written yet), and
    // the job is not run again meanwhile.
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(job.id());
    v1::Job now;
    ASSERT_TRUE(stub->GetJob(&context, request, &now).ok());
    EXPECT_EQ(now.state(), v1::JOB_STATE_RUNNING);
  }
  EXPECT_EQ(g_runs.load(), 1);

  // Space again (the filler's pages go to the free list).
  Sql(db, "DELETE FROM filler");
  watcher.join();
  EXPECT_TRUE(watch_status.ok()) << watch_status.error_message();
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_state_change());
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_FAILED);
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(job.id());
    v1::Job failed;
    ASSERT_TRUE(stub->GetJob(&context, request, &failed).ok());
    EXPECT_EQ(failed.state(), v1::JOB_STATE_FAILED);
    EXPECT_NE(failed.error_message().find("database or disk is full"), std::string::npos)
        << failed.error_message();
    EXPECT_NE(failed.error_message().find("could not be stored"), std::string::npos)
        << failed.error_message();
  }
  EXPECT_TRUE(WaitUntil([&] { return HealthStatus(channel, "") == kServing; }));
  metrics = testing::HttpGet(metrics_port, "/metrics");
  EXPECT_NE(metrics.find("freezetune_store_writable 1"), std::string::npos) << metrics;
  EXPECT_EQ(g_runs.load(), 1);
  server->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace freezetune::service
