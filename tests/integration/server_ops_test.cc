// Operations through the real freezetune-server process:
//  - kill -9 mid-training with a second job queued, restart on the same data
//    dir: the queued job is still queued and then runs, the running one
//    resumes from its last checkpoint (not step 0) and succeeds, sequences
//    have no gap or duplicate, a watch resumed with after_sequence=k gets
//    k+1 first, and a retried SubmitJob (same client_request_id) returns the
//    same job;
//  - the job-limit flags (--max_dataset_bytes, --max_examples,
//    --max_seq_length, --max_epochs, --max_model_parameters), each crossed
//    alone, answered with the field that crossed it; a "cuda" job is
//    INVALID_ARGUMENT on this CPU-only build, a "cpu" one runs;
//  - --unary_deadline;
//  - --log_format=json: every stderr line is a JSON object, job lines carry
//    job_id, the effective configuration shows the token file's path and
//    never a token;
//  - --help documents every flag with its default.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
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

class ServerOpsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(
        (fs::temp_directory_path() / ("ft_ops_" + std::to_string(::getpid()))).string());
    fs::remove_all(*root_);
    fs::create_directories(*root_);
    const std::string vocab =
        std::string(FREEZETUNE_SOURCE_DIR) + "/tests/fixtures/data/bert-base-uncased-vocab.txt";
    for (const auto& [name, hidden] : {std::pair<std::string, std::string>{"model", "32"},
                                       {"big_model", "64"}}) {
      int rc = RunToCompletion({FREEZETUNE_MODEL_BIN, "init", "--out", *root_ + "/" + name,
                                "--vocab", vocab, "--layers", "2", "--hidden", hidden, "--heads",
                                "2", "--intermediate", "64", "--max-position", "64",
                                "--num-labels", "2", "--seed", "7"},
                               *root_ + "/model_init.log");
      ASSERT_EQ(rc, 0) << ReadWholeFile(*root_ + "/model_init.log");
    }
    std::ofstream train(*root_ + "/train.jsonl");
    const char* good[] = {"a great movie", "wonderful acting", "i loved it", "truly delightful"};
    const char* bad[] = {"a terrible movie", "awful acting", "i hated it", "truly dreadful"};
    for (int i = 0; i < 20; ++i) {
      train << "{\"text\": \"" << good[i % 4] << "\", \"label\": 1}\n";
      train << "{\"text\": \"" << bad[i % 4] << "\", \"label\": 0}\n";
    }
    train.close();
    // 60 short examples (over --max_examples=50, under --max_dataset_bytes).
    std::ofstream many(*root_ + "/many.jsonl");
    for (int i = 0; i < 60; ++i) many << "{\"text\":\"ok\",\"label\":" << i % 2 << "}\n";
    many.close();
    // Few examples, many bytes (over --max_dataset_bytes=4096).
    std::ofstream big(*root_ + "/big.jsonl");
    for (int i = 0; i < 4; ++i) {
      big << "{\"text\":\"" << std::string(1500, 'a') << "\",\"label\":" << i % 2 << "}\n";
    }
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

  std::vector<std::string> BaseFlags() const {
    return {"--metrics_listen=", "--data_dir=" + dir_ + "/data", "--data_roots=" + *root_,
            "--threads=1", "--cpu_slots=1", "--drain_grace_period=2s"};
  }
  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> flags = BaseFlags();
    flags.insert(flags.end(), extra.begin(), extra.end());
    std::string error;
    ASSERT_TRUE(server_->Start(flags, &error)) << error;
    stub_ = v1::FineTuneService::NewStub(server_->Channel());
  }

  v1::FineTuneJob SmallJob() const {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + *root_ + "/model");
    job.mutable_train()->set_uri(*root_ + "/train.jsonl");
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(1);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_log_every_steps(1);
    hp->set_learning_rate(1e-3f);
    return job;
  }

  grpc::Status Submit(const v1::FineTuneJob& spec, v1::Job* job, const std::string& token = "") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(60));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::SubmitJobRequest request;
    *request.mutable_job() = spec;
    return stub_->SubmitJob(&context, request, job);
  }

  static void ExpectGapless(const std::vector<v1::JobEvent>& events) {
    for (size_t i = 0; i < events.size(); ++i) {
      ASSERT_EQ(events[i].sequence(), static_cast<int64_t>(i) + 1) << "at index " << i;
    }
  }

  static std::string* root_;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::FineTuneService::Stub> stub_;
};

std::string* ServerOpsTest::root_ = nullptr;

TEST_F(ServerOpsTest, KillNineLosesNothing) {
  StartServer();
  v1::FineTuneJob long_spec = SmallJob();
  long_spec.mutable_hyperparameters()->set_epochs(60);  // 300 steps
  long_spec.mutable_hyperparameters()->set_checkpoint_every_steps(4);
  long_spec.set_client_request_id("durable-long");
  v1::Job running;
  ASSERT_TRUE(Submit(long_spec, &running).ok());
  v1::FineTuneJob queued_spec = SmallJob();
  queued_spec.set_client_request_id("durable-queued");
  v1::Job queued;
  ASSERT_TRUE(Submit(queued_spec, &queued).ok());

  // Watch the running job until a checkpoint is saved (and a few events
  // more), remembering the last sequence seen.
  int64_t seen = 0;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(120));
    v1::WatchJobRequest request;
    request.set_job_id(running.id());
    auto reader = stub_->WatchJob(&context, request);
    v1::JobEvent event;
    int64_t checkpoint_step = 0;
    while (reader->Read(&event)) {
      ASSERT_EQ(event.sequence(), seen + 1);
      seen = event.sequence();
      if (event.has_checkpoint() && event.checkpoint().step() >= 8) checkpoint_step = event.checkpoint().step();
      if (checkpoint_step > 0 && event.has_train() && event.train().step() >= checkpoint_step + 2) {
        break;
      }
    }
    ASSERT_GT(checkpoint_step, 0) << server_->Logs();
    server_->Kill();  // SIGKILL while the watch is open and the job trains
    reader->Finish();
  }

  StartServer();
  // The queued job is still queued (the resumed one has the only slot), and
  // a retried submit with its client_request_id returns it, not a new job.
  v1::Job again;
  ASSERT_TRUE(Submit(queued_spec, &again).ok());
  EXPECT_EQ(again.id(), queued.id());
  EXPECT_EQ(again.state(), v1::JOB_STATE_QUEUED);
  {
    v1::Job long_again;
    ASSERT_TRUE(Submit(long_spec, &long_again).ok());
    EXPECT_EQ(long_again.id(), running.id());
  }

  // The watch taken before the kill continues with seen+1.
  std::vector<v1::JobEvent> rest;
  grpc::Status watched = testing::WatchAll(stub_.get(), running.id(), seen, &rest, seconds(240));
  ASSERT_TRUE(watched.ok()) << watched.error_message() << server_->Logs();
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.front().sequence(), seen + 1);
  EXPECT_EQ(rest.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);

  // The whole log: gapless, and after the recovery the job resumed from its
  // newest checkpoint, not from step 0.
  std::vector<v1::JobEvent> all;
  ASSERT_TRUE(testing::WatchAll(stub_.get(), running.id(), 0, &all).ok());
  ExpectGapless(all);
  size_t recovered = 0;
  int64_t last_checkpoint = 0;
  for (size_t i = 0; i < all.size() && recovered == 0; ++i) {
    if (all[i].has_checkpoint()) last_checkpoint = all[i].checkpoint().step();
    if (all[i].has_state_change() && all[i].state_change().state() == v1::JOB_STATE_QUEUED &&
        all[i].state_change().message().find("restart") != std::string::npos) {
      recovered = i;
    }
  }
  ASSERT_GT(recovered, 0u) << "no recovery event";
  ASSERT_GE(last_checkpoint, 8);
  int64_t resumed_from = -1, first_step = -1;
  for (size_t i = recovered; i < all.size(); ++i) {
    const std::string& msg = all[i].notice().message();
    if (resumed_from < 0 && all[i].has_notice() && msg.find("resumed from checkpoint at step ") == 0) {
      resumed_from = std::stoll(msg.substr(std::string("resumed from checkpoint at step ").size()));
    }
    if (first_step < 0 && all[i].has_train()) first_step = all[i].train().step();
  }
  EXPECT_GE(resumed_from, last_checkpoint);  // a checkpoint written just before the kill may lack its event
  EXPECT_EQ(first_step, resumed_from + 1);
  EXPECT_EQ(all.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);

  // The queued job ran afterwards, with its own gapless log.
  v1::Job done = testing::WaitForState(stub_.get(), queued.id(), v1::JOB_STATE_SUCCEEDED, seconds(120));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  std::vector<v1::JobEvent> queued_events;
  ASSERT_TRUE(testing::WatchAll(stub_.get(), queued.id(), 0, &queued_events).ok());
  ExpectGapless(queued_events);
  EXPECT_TRUE(server_->Stop()) << server_->Logs();
}

TEST_F(ServerOpsTest, JobLimitFlagsNameTheFieldThatCrossedThem) {
  StartServer({"--max_dataset_bytes=4096", "--max_examples=50", "--max_seq_length=32",
               "--max_epochs=3", "--max_model_parameters=1500000"});
  struct Case {
    std::string name;
    std::function<void(v1::FineTuneJob*)> change;
    grpc::StatusCode code;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"dataset bytes", [](v1::FineTuneJob* j) { j->mutable_train()->set_uri(*root_ + "/big.jsonl"); },
       grpc::StatusCode::INVALID_ARGUMENT, "job.train"},
      {"examples", [](v1::FineTuneJob* j) { j->mutable_train()->set_uri(*root_ + "/many.jsonl"); },
       grpc::StatusCode::INVALID_ARGUMENT, "examples exceed the limit of 50"},
      {"seq length", [](v1::FineTuneJob* j) { j->mutable_hyperparameters()->set_max_seq_length(48); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_seq_length"},
      {"epochs", [](v1::FineTuneJob* j) { j->mutable_hyperparameters()->set_epochs(4); },
       grpc::StatusCode::INVALID_ARGUMENT, "epochs"},
      {"model size", [](v1::FineTuneJob* j) { j->set_model_uri(*root_ + "/big_model"); },
       grpc::StatusCode::INVALID_ARGUMENT, "over the limit of 1500000"},
      {"cuda", [](v1::FineTuneJob* j) { j->set_device("cuda"); },
       grpc::StatusCode::INVALID_ARGUMENT, "job.device: no CUDA device"},
  };
  for (const Case& c : cases) {
    v1::FineTuneJob spec = SmallJob();
    c.change(&spec);
    v1::Job job;
    grpc::Status status = Submit(spec, &job);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.want), std::string::npos)
        << c.name << ": " << status.error_message();
  }
  if (::testing::Test::HasFailure()) return;
  // The dataset-bytes error says why.
  {
    v1::FineTuneJob spec = SmallJob();
    spec.mutable_train()->set_uri(*root_ + "/big.jsonl");
    v1::Job job;
    grpc::Status status = Submit(spec, &job);
    EXPECT_NE(status.error_message().find("over the limit of 4096 bytes"), std::string::npos)
        << status.error_message();
  }
  // Right at the limits: accepted, runs on the CPU slot, succeeds.
  v1::FineTuneJob ok = SmallJob();
  ok.set_device("cpu");
  ok.mutable_hyperparameters()->set_epochs(3);
  ok.mutable_hyperparameters()->set_max_seq_length(32);
  v1::Job job;
  grpc::Status status = Submit(ok, &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::Job done = testing::WaitForState(stub_.get(), job.id(), v1::JOB_STATE_SUCCEEDED, seconds(120));
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error_message();
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(testing::WatchAll(stub_.get(), job.id(), 0, &events).ok());
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[1].state_change().message(), "running in slot 0 (cpu)");
  EXPECT_TRUE(server_->Stop());
}

TEST_F(ServerOpsTest, UnaryDeadlineFlag) {
  StartServer({"--unary_deadline=1us"});
  v1::Job job;
  grpc::Status status = Submit(SmallJob(), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  grpc::ClientContext context;
  v1::PlanFreezeRequest request;
  request.set_model_uri(*root_ + "/model");
  v1::PlanFreezeResponse plan;
  EXPECT_EQ(stub_->PlanFreeze(&context, request, &plan).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  grpc::ClientContext list_context;
  v1::ListJobsResponse list;
  ASSERT_TRUE(stub_->ListJobs(&list_context, v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
  EXPECT_TRUE(server_->Stop());
}

TEST_F(ServerOpsTest, JsonLogsCarryJobIdsAndRedactSecrets) {
  const std::string tokens = dir_ + "/tokens";
  std::ofstream(tokens) << "team-a s3cr3t-token-value\n";
  StartServer({"--log_format=json", "--auth_token_file=" + tokens});
  v1::Job job;
  ASSERT_TRUE(Submit(SmallJob(), &job, "s3cr3t-token-value").ok());
  v1::Job done;
  for (int i = 0; i < 1200 && done.state() != v1::JOB_STATE_SUCCEEDED; ++i) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer s3cr3t-token-value");
    v1::GetJobRequest request;
    request.set_job_id(job.id());
    stub_->GetJob(&context, request, &done);
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(server_->Stop());

  const std::string err = ReadWholeFile(server_->stderr_log());
  EXPECT_EQ(err.find("s3cr3t"), std::string::npos) << "a token reached the log";
  std::istringstream lines(err);
  std::string line;
  int parsed = 0;
  std::set<std::string> job_messages;
  bool config_seen = false;
  while (std::getline(lines, line)) {
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(line)) << "not JSON: " << line;
    ++parsed;
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* key : {"time", "level", "msg"}) {
      ASSERT_TRUE(j.contains(key) && j[key].is_string()) << key << " missing: " << line;
    }
    const std::string msg = j["msg"];
    if (msg.rfind("job ", 0) == 0) {
      ASSERT_TRUE(j.contains("job_id")) << line;
      EXPECT_EQ(j["job_id"], job.id()) << line;
      job_messages.insert(msg);
    }
    if (msg == "effective configuration") {
      config_seen = true;
      EXPECT_EQ(j["auth_token_file"], tokens);
      EXPECT_EQ(j["auth"], "1 bearer tokens");
      EXPECT_EQ(j["log_format"], "json");
      EXPECT_EQ(j["max_epochs"], "100");
      // Start-up tuning (base/process_tuning.h): CPU, BLAS core, policy.
      for (const char* key : {"cpu", "cpu_features", "blas", "blas_core", "blas_core_changed",
                              "blas_core_decision", "omp_wait_policy", "malloc"}) {
        EXPECT_TRUE(j.contains(key) && j[key].is_string()) << key << " missing: " << line;
      }
      const char* omp = std::getenv("OMP_WAIT_POLICY");
      EXPECT_EQ(j["omp_wait_policy"], omp != nullptr ? omp : "PASSIVE");
      EXPECT_EQ(j["blas_core_selection"], "true");  // the flag
    }
  }
  EXPECT_GE(parsed, 5);
  EXPECT_TRUE(config_seen);
  EXPECT_TRUE(job_messages.count("job queued")) << err;
  EXPECT_TRUE(job_messages.count("job running")) << err;
  EXPECT_TRUE(job_messages.count("job SUCCEEDED")) << err;
}

TEST_F(ServerOpsTest, HelpDocumentsEveryFlagWithItsDefault) {
  const std::string log = dir_ + "/help.txt";
  RunToCompletion({FREEZETUNE_SERVER_BIN, "--help"}, log);
  const std::string help = ReadWholeFile(log);
  // Every ABSL_FLAG of server/main.cc.
  const std::string source = ReadWholeFile(std::string(FREEZETUNE_SOURCE_DIR) + "/server/main.cc");
  int flags = 0;
  for (size_t pos = 0; (pos = source.find("ABSL_FLAG(", pos)) != std::string::npos; ++pos) {
    size_t comma = source.find(',', pos);
    size_t name_start = source.find_first_not_of(' ', comma + 1);
    size_t name_end = source.find(',', name_start);
    const std::string name = source.substr(name_start, name_end - name_start);
    ++flags;
    size_t at = help.find("--" + name + " (");
    ASSERT_NE(at, std::string::npos) << "--" << name << " is not in --help:\n" << help;
    size_t next = help.find("; default: ", at);
    ASSERT_NE(next, std::string::npos) << name;
    // A description of some substance precedes the default.
    EXPECT_GT(next - at, name.size() + 30) << name << " has too short a description";
  }
  EXPECT_GE(flags, 28);  // the parse found them all (28 today)
  EXPECT_EQ(help.find("Flags from "), help.rfind("Flags from "))
      << "--help should list only the server's own flags";
}

}  // namespace
}  // namespace freezetune
