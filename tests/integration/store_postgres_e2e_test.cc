// --job_store postgresql://... through the real freezetune-server: a small
// job trains to SUCCEEDED with its jobs and events in a real PostgreSQL
// (tests/support/postgres_instance.h); a new server process, on a NEW data
// dir (so nothing can come from a local SQLite file), finds the job, replays
// the same events and answers a retried submit with the same job (servers
// sharing one database: replicas_e2e_test.cc); the password in the URI appears in no log line. Health is NOT_SERVING while the
// database refuses the server, SERVING again after. Bad --job_store values
// fail at start with a message naming the flag.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/postgres_e2e_suite.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_test_util.h"
#include "tests/support/postgres_instance.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;
using testing::PostgresInstance;
using testing::ServerProcess;
using testing::Submit;

constexpr char kPassword[] = "e2e-secret-pw";

class StorePostgresE2eTest : public testing::PostgresE2eSuite {
 protected:
  static void SetUpTestSuite() {
    StartSuite("ft_pg_e2e_");
    if (pg_ != nullptr) {
      ASSERT_TRUE(pg_->CreateDatabase("freezetune").ok());
    }
  }

  // postgresql://freezetune:<password>@127.0.0.1:<port>/freezetune (trust
  // authentication ignores the password; it is there to prove it is never
  // logged).
  static std::string Uri() {
    std::string uri = pg_->Uri("freezetune");
    return uri.replace(uri.find("freezetune@"), 11, std::string("freezetune:") + kPassword + "@");
  }

  std::vector<std::string> Flags(const std::string& data_dir) const {
    return {"--metrics_listen=",   "--data_dir=" + data_dir, "--data_roots=" + *root_,
            "--threads=1",         "--cpu_slots=1",          "--drain_grace_period=2s",
            "--job_store=" + Uri()};
  }

  v1::FineTuneJob SmallJob() const {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + *root_ + "/model");
    job.mutable_train()->set_uri(*root_ + "/train.jsonl");
    job.set_output_uri(*root_ + "/out");
    job.set_client_request_id("pg-e2e-1");
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(1);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_learning_rate(1e-3f);
    return job;
  }

};

TEST_F(StorePostgresE2eTest, JobSucceedsAndARestartedServerFindsIt) {
  ServerProcess first(FREEZETUNE_SERVER_BIN, *root_ + "/first");
  fs::create_directories(*root_ + "/first");
  std::string error;
  ASSERT_TRUE(first.Start(Flags(*root_ + "/first/data"), &error)) << error;
  auto stub = v1::FineTuneService::NewStub(first.Channel());
  v1::Job submitted;
  grpc::Status s = Submit(stub.get(), SmallJob(), &submitted);
  ASSERT_TRUE(s.ok()) << s.error_message() << first.Logs();
  v1::Job done =
      testing::WaitForState(stub.get(), submitted.id(), v1::JOB_STATE_SUCCEEDED, seconds(240));
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.DebugString() << first.Logs();
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(testing::WatchAll(stub.get(), done.id(), 0, &events).ok());
  ASSERT_GE(events.size(), 3u);
  ASSERT_TRUE(first.Stop()) << first.Logs();
  // The store is PostgreSQL: no SQLite file was made.
  EXPECT_FALSE(fs::exists(*root_ + "/first/data/freezetune.db"));
  // The rows are in the database itself.
  auto rows = pg_->Query("freezetune", "SELECT id, state, last_sequence FROM jobs");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0][0], done.id());
  EXPECT_EQ((*rows)[0][1], std::to_string(v1::JOB_STATE_SUCCEEDED));
  EXPECT_EQ((*rows)[0][2], std::to_string(events.size()));

  // A second server on another data dir: the job, its events, idempotency.
  ServerProcess second(FREEZETUNE_SERVER_BIN, *root_ + "/second");
  fs::create_directories(*root_ + "/second");
  ASSERT_TRUE(second.Start(Flags(*root_ + "/second/data"), &error)) << error;
  stub = v1::FineTuneService::NewStub(second.Channel());
  grpc::ClientContext context;
  v1::GetJobRequest get;
  get.set_job_id(done.id());
  v1::Job found;
  ASSERT_TRUE(stub->GetJob(&context, get, &found).ok()) << second.Logs();
  EXPECT_EQ(found.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(found.last_sequence(), done.last_sequence());
  std::vector<v1::JobEvent> replayed;
  ASSERT_TRUE(testing::WatchAll(stub.get(), done.id(), 0, &replayed).ok());
  ASSERT_EQ(replayed.size(), events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(replayed[i].SerializeAsString(), events[i].SerializeAsString()) << i;
  }
  v1::Job again;
  ASSERT_TRUE(Submit(stub.get(), SmallJob(), &again).ok());
  EXPECT_EQ(again.id(), done.id());
  ASSERT_TRUE(second.Stop()) << second.Logs();

  const std::string logs = first.Logs() + second.Logs();
  EXPECT_NE(logs.find("job_store: postgresql://freezetune@127.0.0.1:"), std::string::npos) << logs;
  EXPECT_EQ(logs.find(kPassword), std::string::npos) << logs;
}

// Readiness follows the store: health is NOT_SERVING while the database
// refuses the replica, SERVING again when it is back.
TEST_F(StorePostgresE2eTest, HealthFollowsTheStore) {
  ASSERT_TRUE(pg_->CreateDatabase("probe").ok());
  fs::create_directories(*root_ + "/health");
  ServerProcess server(FREEZETUNE_SERVER_BIN, *root_ + "/health");
  std::vector<std::string> flags = Flags(*root_ + "/health/data");
  flags.back() = "--job_store=" + pg_->Uri("probe");
  flags.push_back("--store_probe_interval=100ms");
  std::string error;
  ASSERT_TRUE(server.Start(flags, &error)) << error;
  auto wait_health = [&](int want) {
    const auto deadline = std::chrono::steady_clock::now() + seconds(30);
    int got = -1;
    while (std::chrono::steady_clock::now() < deadline) {
      got = testing::HealthStatus(server.Channel(), "freezetune.v1.FineTuneService");
      if (got == want) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return got;
  };
  EXPECT_EQ(wait_health(1), 1);
  ASSERT_TRUE(pg_->Query("postgres", "ALTER DATABASE probe ALLOW_CONNECTIONS false").ok());
  ASSERT_TRUE(pg_->Query("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = 'probe'")
                  .ok());
  EXPECT_EQ(wait_health(2), 2) << server.Logs();
  ASSERT_TRUE(pg_->Query("postgres", "ALTER DATABASE probe ALLOW_CONNECTIONS true").ok());
  EXPECT_EQ(wait_health(1), 1) << server.Logs();
  ASSERT_TRUE(server.Stop()) << server.Logs();
  const std::string logs = server.Logs();
  EXPECT_NE(logs.find("job store unreachable"), std::string::npos) << logs;
  EXPECT_NE(logs.find("job store reachable again"), std::string::npos) << logs;
}

TEST_F(StorePostgresE2eTest, BadJobStoreFailsAtStart) {
  fs::create_directories(*root_ + "/bad");
  for (const std::string& value :
       {std::string("mysql://u:pw@host/db"), std::string("postgresql://u:pw@host/db?nope=1")}) {
    const std::string log = *root_ + "/bad/server.log";
    const int rc = testing::RunToCompletion(
        {FREEZETUNE_SERVER_BIN, "--metrics_listen=", "--listen=127.0.0.1:0",
         "--data_dir=" + *root_ + "/bad/data", "--job_store=" + value},
        log);
    const std::string output = testing::ReadWholeFile(log);
    EXPECT_NE(rc, 0) << value;
    EXPECT_NE(output.find("job_store: "), std::string::npos) << output;
    EXPECT_EQ(output.find(":pw@"), std::string::npos) << output;
  }
  // A server that cannot reach its database does not start.
  const std::string log = *root_ + "/bad/unreachable.log";
  const int rc = testing::RunToCompletion(
      {FREEZETUNE_SERVER_BIN, "--metrics_listen=", "--listen=127.0.0.1:0",
       "--data_dir=" + *root_ + "/bad/data2",
       std::string("--job_store=postgresql://u:") + kPassword + "@127.0.0.1:1/db"},
      log);
  const std::string output = testing::ReadWholeFile(log);
  EXPECT_NE(rc, 0);
  EXPECT_NE(output.find("cannot connect to postgresql://u@127.0.0.1:1/db"), std::string::npos)
      << output;
  EXPECT_EQ(output.find(kPassword), std::string::npos) << output;
}

}  // namespace
}  // namespace freezetune
