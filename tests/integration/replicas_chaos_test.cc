// Issue 12.2's replica chaos test: a real PostgreSQL, the S3 test server
// (s3rver) and three freezetune-server replicas on loopback, with
// checkpoints under --checkpoint_uri and outputs on s3://, 2 s leases.
//   Chaos: 20 small jobs submitted round-robin to the three; 10 times,
//   kill -9 a replica that holds a running job, then restart it. Afterwards
//   every job SUCCEEDED exactly once; its events, read from a replica other
//   than the one that finished it, are gapless and duplicate-free; its runs
//   carry strictly increasing lease epochs, each one after a re-queue (no
//   two replicas trained it at once: the store refused any write of an
//   older epoch); every output in S3 is complete (its manifest and files).
//   Zombie: SIGSTOP the replica training a job for longer than its lease;
//   the other takes the job over; after SIGCONT the stopped replica's late
//   writes are refused and the job finishes on the other.
// Prints the time each killed replica's job took to run again (the restarted
// replica re-queues what its previous process held at once).
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/data/s3_client.h"
#include "tests/integration/replicas_test_util.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_test_util.h"
#include "tests/s3server/s3_test_server.h"
#include "tests/support/postgres_instance.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;
using std::chrono::steady_clock;
using testing::ExpectGapless;
using testing::GetJobOrFail;
using testing::LeaseEpoch;
using testing::PostgresInstance;
using testing::RunningMessages;
using testing::ServerProcess;
using testing::Submit;

class ReplicasChaosTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string bindir = PostgresInstance::FindBinDir();
    if (bindir.empty()) {
      GTEST_SKIP() << PostgresInstance::kNotInstalled;
    }
    ASSERT_TRUE(s3_.ok()) << s3_.startup_output();
    root_ = (fs::temp_directory_path() / ("ft_chaos_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
    auto pg = PostgresInstance::Start(bindir);
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(pg).value();
    ASSERT_TRUE(pg_->CreateDatabase("chaos").ok());
    // The servers read these (S3OptionsFromEnv); the children inherit them.
    ::setenv("AWS_ENDPOINT_URL", s3_.endpoint().c_str(), 1);
    ::setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    ::setenv("AWS_REGION", "us-east-1", 1);
    s3_client_ = std::make_unique<data::S3Client>(data::S3OptionsFromEnv(/*path_style=*/true));
    std::string error;
    ASSERT_TRUE(testing::MakeTinyModel(FREEZETUNE_MODEL_BIN, root_ + "/model", &error)) << error;
    testing::WriteTinySentimentJsonl(root_ + "/train.jsonl");
  }
  void TearDown() override {
    for (auto& r : replicas_) r->Kill();
    replicas_.clear();
    pg_.reset();
    if (!HasFailure()) fs::remove_all(root_);
  }

  std::vector<std::string> Flags(int i) const {
    const std::string dir = root_ + "/r" + std::to_string(i);
    return {"--metrics_listen=",       "--data_dir=" + dir + "/data",
            "--data_roots=" + root_,   "--threads=1",
            "--cpu_slots=1",           "--drain_grace_period=2s",
            "--lease_duration=2s",     "--lease_renew_interval=400ms",
            "--s3_path_style",         "--checkpoint_uri=s3://bkt/ckpt",
            "--max_epochs=10000",
            "--job_store=" + pg_->Uri("chaos")};
  }

  void StartReplicas(int n) {
    for (int i = 0; i < n; ++i) {
      const std::string dir = root_ + "/r" + std::to_string(i);
      fs::create_directories(dir);
      replicas_.push_back(std::make_unique<ServerProcess>(FREEZETUNE_SERVER_BIN, dir));
      std::string error;
      ASSERT_TRUE(replicas_.back()->Start(Flags(i), &error)) << error;
    }
  }

  void Restart(int i) {
    std::string error;
    ASSERT_TRUE(replicas_[i]->Start(Flags(i), &error)) << error;
  }

  // The replica a RUNNING message names; -1 if none.
  int Runner(const std::string& running_message) const {
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (testing::RanOn(running_message, *replicas_[i])) return static_cast<int>(i);
    }
    return -1;
  }

  v1::FineTuneJob Job(int epochs, const std::string& output) const {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + root_ + "/model");
    job.mutable_train()->set_uri(root_ + "/train.jsonl");
    job.set_output_uri(output);
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(epochs);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_learning_rate(1e-3f);
    hp->set_log_every_steps(4);
    hp->set_checkpoint_every_steps(40);
    return job;
  }

  std::vector<v1::JobEvent> Events(ServerProcess& replica, const std::string& id) {
    auto stub = v1::FineTuneService::NewStub(replica.Channel());
    std::vector<v1::JobEvent> events;
    grpc::Status s = testing::WatchAll(stub.get(), id, 0, &events, seconds(60));
    EXPECT_TRUE(s.ok()) << s.error_message();
    return events;
  }

  // The running job's last RUNNING message, read from replica `via`.
  std::string LastRunning(ServerProcess& via, const std::string& id) {
    auto stub = v1::FineTuneService::NewStub(via.Channel());
    std::vector<v1::JobEvent> events;
    (void)testing::WatchAll(stub.get(), id, 0, &events, seconds(1));
    const std::vector<std::string> runs = RunningMessages(events);
    return runs.empty() ? "" : runs.back();
  }

  freezetune::testing::S3TestServer s3_{{"bkt"}};
  std::unique_ptr<data::S3Client> s3_client_;
  std::unique_ptr<PostgresInstance> pg_;
  std::string root_;
  std::vector<std::unique_ptr<ServerProcess>> replicas_;
};

TEST_F(ReplicasChaosTest, KillingReplicasLosesAndDuplicatesNothing) {
  StartReplicas(3);
  constexpr int kJobs = 20;
  constexpr int kKills = 10;
  std::vector<std::string> ids;
  for (int i = 0; i < kJobs; ++i) {
    auto stub = v1::FineTuneService::NewStub(replicas_[i % 3]->Channel());
    v1::Job job;
    grpc::Status s = Submit(stub.get(), Job(40, "s3://bkt/out/job" + std::to_string(i)), &job);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ids.push_back(job.id());
  }
  std::mt19937 random(12);
  std::vector<double> resume_seconds;
  int kills = 0;
  const auto deadline = steady_clock::now() + seconds(400);
  while (kills < kKills && steady_clock::now() < deadline) {
    // A job running now, and the replica that runs it.
    auto stub = v1::FineTuneService::NewStub(replicas_[random() % 3]->Channel());
    std::vector<std::string> running;
    for (const std::string& id : ids) {
      if (GetJobOrFail(stub.get(), id).state() == v1::JOB_STATE_RUNNING) running.push_back(id);
    }
    if (running.empty()) {
      bool all_done = true;
      for (const std::string& id : ids) {
        all_done = all_done && GetJobOrFail(stub.get(), id).state() == v1::JOB_STATE_SUCCEEDED;
      }
      if (all_done) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    const std::string victim_job = running[random() % running.size()];
    const int victim = Runner(LastRunning(*replicas_[0], victim_job));
    if (victim < 0) continue;  // it moved meanwhile
    const int64_t sequence_before = GetJobOrFail(stub.get(), victim_job).last_sequence();
    replicas_[victim]->Kill();
    const auto killed = steady_clock::now();
    ++kills;
    Restart(victim);
    // Resumed elsewhere (or on the restarted replica): a new RUNNING event.
    auto watch = v1::FineTuneService::NewStub(replicas_[(victim + 1) % 3]->Channel());
    while (steady_clock::now() < deadline) {
      std::vector<v1::JobEvent> events;
      (void)testing::WatchAll(watch.get(), victim_job, sequence_before, &events, seconds(1));
      const bool resumed = !RunningMessages(events).empty() ||
                           GetJobOrFail(watch.get(), victim_job).state() ==
                               v1::JOB_STATE_SUCCEEDED;
      if (resumed) break;
    }
    resume_seconds.push_back(std::chrono::duration<double>(steady_clock::now() - killed).count());
  }
  EXPECT_EQ(kills, kKills) << "the jobs ended before every kill";

  // Replica index that finished each job.
  std::map<int, int> finished_by;
  for (const std::string& id : ids) {
    auto stub = v1::FineTuneService::NewStub(replicas_[0]->Channel());
    v1::Job done = testing::WaitForState(stub.get(), id, v1::JOB_STATE_SUCCEEDED, seconds(300));
    ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED)
        << done.DebugString() << replicas_[0]->Logs() << replicas_[1]->Logs()
        << replicas_[2]->Logs();
    const std::vector<v1::JobEvent> first_read = Events(*replicas_[0], id);
    const std::vector<std::string> runs = RunningMessages(first_read);
    ASSERT_FALSE(runs.empty());
    // Read again from a replica other than the one that finished it.
    const int finisher = Runner(runs.back());
    ++finished_by[finisher];
    ASSERT_GE(finisher, 0) << runs.back();
    const std::vector<v1::JobEvent> events = Events(*replicas_[(finisher + 1) % 3], id);
    ExpectGapless(events, id);
    int succeeded = 0;
    int results = 0;
    int64_t previous_epoch = 0;
    bool requeued_since_last_run = true;
    for (const v1::JobEvent& e : events) {
      results += e.has_result();
      if (!e.has_state_change()) continue;
      const v1::JobState state = e.state_change().state();
      succeeded += state == v1::JOB_STATE_SUCCEEDED;
      if (state == v1::JOB_STATE_QUEUED) requeued_since_last_run = true;
      if (state != v1::JOB_STATE_RUNNING) continue;
      const int64_t epoch = LeaseEpoch(e.state_change().message());
      EXPECT_GT(epoch, previous_epoch) << id << ": " << e.state_change().message();
      EXPECT_TRUE(requeued_since_last_run) << id << ": a run began while another was current";
      previous_epoch = epoch;
      requeued_since_last_run = false;
    }
    EXPECT_EQ(succeeded, 1) << id;
    EXPECT_EQ(results, 1) << id;
    // The output is complete: its manifest, written last, and the files.
    const std::string prefix = done.result().output_uri().substr(std::string("s3://bkt/").size());
    auto listed = s3_client_->List("bkt", prefix + "/", "test");
    ASSERT_TRUE(listed.ok()) << listed.status();
    std::vector<std::string> keys;
    for (const auto& o : *listed) keys.push_back(o.key.substr(prefix.size() + 1));
    for (const char* file : {"freezetune.manifest.json", "model.safetensors", "config.json"}) {
      EXPECT_NE(std::find(keys.begin(), keys.end(), file), keys.end()) << id << " lacks " << file;
    }
  }
  std::sort(resume_seconds.begin(), resume_seconds.end());
  std::cout << "chaos: " << kills << " kills; a killed replica's job ran again after (s):";
  for (double s : resume_seconds) std::cout << " " << s;
  std::cout << "\nchaos: jobs finished per replica:";
  for (const auto& [replica, n] : finished_by) std::cout << " r" << replica << "=" << n;
  std::cout << "\n";
  for (auto& r : replicas_) EXPECT_TRUE(r->Stop()) << r->Logs();
}

TEST_F(ReplicasChaosTest, AStoppedReplicasLateWritesAreRefused) {
  StartReplicas(2);
  auto stub = v1::FineTuneService::NewStub(replicas_[0]->Channel());
  v1::Job job;
  ASSERT_TRUE(Submit(stub.get(), Job(150, "s3://bkt/out/zombie"), &job).ok());
  v1::Job running = testing::WaitForState(stub.get(), job.id(), v1::JOB_STATE_RUNNING, seconds(60));
  ASSERT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  const std::string first_run = LastRunning(*replicas_[0], job.id());
  const int zombie = Runner(first_run);
  ASSERT_GE(zombie, 0) << first_run;
  ServerProcess& other = *replicas_[1 - zombie];
  ::kill(replicas_[zombie]->pid(), SIGSTOP);
  // Past the 2 s lease: the other replica takes the job over and runs it.
  auto other_stub = v1::FineTuneService::NewStub(other.Channel());
  std::string second_run;
  const auto deadline = steady_clock::now() + seconds(60);
  while (steady_clock::now() < deadline) {
    second_run = LastRunning(other, job.id());
    if (testing::RanOn(second_run, other)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(testing::RanOn(second_run, other)) << second_run << other.Logs();
  EXPECT_GT(LeaseEpoch(second_run), LeaseEpoch(first_run));
  const int64_t sequence_at_resume = GetJobOrFail(other_stub.get(), job.id()).last_sequence();
  ::kill(replicas_[zombie]->pid(), SIGCONT);
  // The zombie notices within its next write or renewal.
  const auto wait_until = steady_clock::now() + seconds(30);
  std::string zombie_logs;
  while (steady_clock::now() < wait_until) {
    zombie_logs = replicas_[zombie]->Logs();
    if (zombie_logs.find("was superseded by epoch") != std::string::npos ||
        zombie_logs.find("lease lost") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(zombie_logs.find("was superseded by epoch") != std::string::npos ||
              zombie_logs.find("lease lost") != std::string::npos)
      << zombie_logs;
  std::cout << "zombie: "
            << (zombie_logs.find("was superseded by epoch") != std::string::npos
                    ? "a late write was refused by the fence"
                    : "its renewal found the lease lost first")
            << "\n";
  v1::Job done = testing::WaitForState(other_stub.get(), job.id(), v1::JOB_STATE_SUCCEEDED,
                                       seconds(300));
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << other.Logs();
  const std::vector<v1::JobEvent> events = Events(other, job.id());
  ExpectGapless(events, job.id());
  // Nothing the zombie wrote after the takeover: every later run has a
  // newer epoch than the one before it (a loaded machine may delay a
  // renewal past the lease and move the job again, which is allowed).
  int64_t previous_epoch = LeaseEpoch(second_run);
  for (const v1::JobEvent& e : events) {
    if (e.sequence() <= sequence_at_resume || !e.has_state_change() ||
        e.state_change().state() != v1::JOB_STATE_RUNNING) {
      continue;
    }
    const int64_t epoch = LeaseEpoch(e.state_change().message());
    EXPECT_GT(epoch, previous_epoch) << e.state_change().message() << "\nthe other replica:\n"
                                     << other.Logs() << "\nthe stopped one:\n"
                                     << replicas_[zombie]->Logs();
    previous_epoch = epoch;
  }
  for (auto& r : replicas_) EXPECT_TRUE(r->Stop()) << r->Logs();
}

}  // namespace
}  // namespace freezetune
