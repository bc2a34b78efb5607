// Crash safety of the store through the real freezetune-server process:
//  - kill -9 while SubmitSweep is in flight (40 candidates; kills spread over
//    the time one submit takes): after a restart no trial job exists whose
//    sweep does not (no orphans), every sweep has exactly its trials, and a
//    retry with the same client_request_id creates the sweep once and then
//    returns it (no duplicate trials).
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_test_util.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::ReadWholeFile;
using testing::RunToCompletion;
using testing::ServerProcess;

class StoreCrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(
        (fs::temp_directory_path() / ("ft_crash_" + std::to_string(::getpid()))).string());
    fs::remove_all(*root_);
    fs::create_directories(*root_);
    std::string error;
    ASSERT_TRUE(testing::MakeTinyModel(FREEZETUNE_MODEL_BIN, *root_ + "/model", &error)) << error;
    testing::WriteTinySentimentJsonl(*root_ + "/train.jsonl");
  }
  static void TearDownTestSuite() {
    if (!::testing::Test::HasFailure()) fs::remove_all(*root_);
  }

  void SetUp() override {
    dir_ = *root_ + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
    server_ = std::make_unique<ServerProcess>(FREEZETUNE_SERVER_BIN, dir_);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Kill();
  }

  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> flags = {"--metrics_listen=",   "--data_dir=" + dir_ + "/data",
                                      "--data_roots=" + *root_, "--threads=1",
                                      "--cpu_slots=1",       "--drain_grace_period=2s"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    std::string error;
    ASSERT_TRUE(server_->Start(flags, &error)) << error;
    stub_ = v1::FineTuneService::NewStub(server_->Channel());
  }

  v1::FineTuneJob SmallJob() const {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + *root_ + "/model");
    job.mutable_train()->set_uri(*root_ + "/train.jsonl");
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(1);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_learning_rate(1e-3f);
    return job;
  }

  // A sweep of `n` explicit candidates (depths 0, 1, 2 in turn).
  v1::SweepSpec BigSweep(int n, const std::string& request_id) const {
    v1::SweepSpec spec;
    *spec.mutable_job() = SmallJob();
    for (int i = 0; i < n; ++i) spec.add_specs()->mutable_bottom()->set_num_layers(i % 3);
    spec.set_client_request_id(request_id);
    return spec;
  }

  grpc::Status SubmitSweep(const v1::SweepSpec& spec, v1::Sweep* sweep) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(120));
    v1::SubmitSweepRequest request;
    *request.mutable_sweep() = spec;
    return stub_->SubmitSweep(&context, request, sweep);
  }

  std::vector<v1::Job> AllJobs() {
    grpc::Status status;
    std::vector<v1::Job> jobs = testing::ListAllJobs(stub_.get(), &status);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return jobs;
  }

  std::vector<v1::Sweep> AllSweeps() {
    grpc::Status status;
    std::vector<v1::Sweep> sweeps = testing::ListAllSweeps(stub_.get(), &status);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return sweeps;
  }

  // No job names a sweep that does not exist, and each sweep's trials are
  // exactly the jobs that name it.
  void ExpectNoOrphansAndWholeSweeps() {
    std::map<std::string, std::set<std::string>> jobs_by_sweep;
    for (const v1::Job& job : AllJobs()) {
      if (!job.sweep_id().empty()) jobs_by_sweep[job.sweep_id()].insert(job.id());
    }
    std::map<std::string, std::set<std::string>> trials_by_sweep;
    for (const v1::Sweep& sweep : AllSweeps()) {
      for (const v1::SweepTrial& t : sweep.trials()) trials_by_sweep[sweep.id()].insert(t.job_id());
    }
    for (const auto& [sweep_id, jobs] : jobs_by_sweep) {
      ASSERT_TRUE(trials_by_sweep.count(sweep_id) > 0)
          << jobs.size() << " orphan trial jobs of missing sweep " << sweep_id;
      EXPECT_EQ(jobs, trials_by_sweep[sweep_id]) << sweep_id;
    }
    for (const auto& [sweep_id, trials] : trials_by_sweep) {
      EXPECT_EQ(trials, jobs_by_sweep[sweep_id]) << "sweep " << sweep_id << " lost trials";
    }
  }

  static std::string* root_;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::FineTuneService::Stub> stub_;
};

std::string* StoreCrashTest::root_ = nullptr;

TEST_F(StoreCrashTest, KillDuringSubmitSweepLeavesNoOrphansAndRetriesDoNotDuplicate) {
  constexpr int kCandidates = 40;
  StartServer();
  // How long one whole submit takes here.
  auto start = std::chrono::steady_clock::now();
  v1::Sweep measured;
  grpc::Status first = SubmitSweep(BigSweep(kCandidates, "measure"), &measured);
  ASSERT_TRUE(first.ok()) << first.error_message() << server_->Logs();
  const auto submit_time = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(measured.trials_size(), kCandidates);

  std::vector<std::string> request_ids;
  for (int round = 1; round <= 3; ++round) {
    const std::string request_id = "crash-" + std::to_string(round);
    request_ids.push_back(request_id);
    std::thread submit([&] {
      v1::Sweep ignored;
      SubmitSweep(BigSweep(kCandidates, request_id), &ignored);  // fails: the server dies
    });
    std::this_thread::sleep_for(submit_time * round / 4);
    server_->Kill();
    submit.join();
    StartServer();
    ExpectNoOrphansAndWholeSweeps();
  }

  // Retries: each key makes its sweep once; the second retry returns it.
  for (const std::string& request_id : request_ids) {
    v1::Sweep once, twice;
    ASSERT_TRUE(SubmitSweep(BigSweep(kCandidates, request_id), &once).ok());
    ASSERT_TRUE(SubmitSweep(BigSweep(kCandidates, request_id), &twice).ok());
    EXPECT_EQ(once.id(), twice.id());
  }
  std::map<std::string, int> sweeps_per_key;
  for (const v1::Sweep& sweep : AllSweeps()) ++sweeps_per_key[sweep.spec().client_request_id()];
  for (const std::string& request_id : request_ids) {
    EXPECT_EQ(sweeps_per_key[request_id], 1) << request_id;
  }
  EXPECT_EQ(sweeps_per_key["measure"], 1);
  ExpectNoOrphansAndWholeSweeps();
  EXPECT_EQ(static_cast<int>(AllJobs().size()), kCandidates * (1 + 3));
}

}  // namespace
}  // namespace freezetune
