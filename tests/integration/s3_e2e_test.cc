// s3:// end to end through the real freezetune-server process and a real
// S3-protocol server (s3rver) on loopback:
//  - a job whose model directory, training data and output are all on S3
//    succeeds; its output is published with a manifest and reads back as a
//    model (PlanFreeze on it); its checkpoints went to --checkpoint_uri and
//    are deleted when it ends;
//  - at submit, an output_uri that already holds objects, a missing dataset
//    object and a missing model file are INVALID_ARGUMENT naming the field
//    and the S3 error code, and nothing is queued;
//  - a job killed (-9) mid-training resumes on a second server process with
//    its own, empty data directory (only the job store copied over: what
//    another replica sees) from the checkpoint in S3, not from step 0.
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/data/s3_client.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_test_util.h"
#include "tests/s3server/s3_test_server.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::ReadWholeFile;
using testing::ServerProcess;
using testing::Submit;

class S3EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(s3_.ok()) << s3_.startup_output();
    root_ = (fs::temp_directory_path() / ("ft_s3e2e_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
    // The server reads these (S3OptionsFromEnv); the child inherits them.
    ::setenv("AWS_ENDPOINT_URL", s3_.endpoint().c_str(), 1);
    ::setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    ::setenv("AWS_REGION", "us-east-1", 1);
    data::S3Options o = data::S3OptionsFromEnv(/*path_style=*/true);
    client_ = std::make_unique<data::S3Client>(o);

    std::string error;
    ASSERT_TRUE(testing::MakeTinyModel(FREEZETUNE_MODEL_BIN, root_ + "/model", &error)) << error;
    for (const auto& entry : fs::directory_iterator(root_ + "/model")) {
      if (!entry.is_regular_file()) continue;
      ASSERT_TRUE(client_->PutFile({"bkt", "models/tiny/" + entry.path().filename().string()},
                                   entry.path().string(), "test")
                      .ok());
    }
    std::string train;
    const char* good[] = {"a great movie", "wonderful acting", "i loved it", "truly delightful"};
    const char* bad[] = {"a terrible movie", "awful acting", "i hated it", "truly dreadful"};
    for (int i = 0; i < 20; ++i) {
      train += std::string("{\"text\": \"") + good[i % 4] + "\", \"label\": 1}\n";
      train += std::string("{\"text\": \"") + bad[i % 4] + "\", \"label\": 0}\n";
    }
    ASSERT_TRUE(client_->Put({"bkt", "data/train.jsonl"}, train, "test").ok());
  }
  void TearDown() override {
    for (auto& s : servers_) s->Kill();
    if (!HasFailure()) fs::remove_all(root_);
  }

  ServerProcess* StartServer(const std::string& name) {
    const std::string dir = root_ + "/" + name;
    fs::create_directories(dir);
    servers_.push_back(std::make_unique<ServerProcess>(FREEZETUNE_SERVER_BIN, dir));
    std::string error;
    EXPECT_TRUE(servers_.back()->Start({"--metrics_listen=", "--data_dir=" + dir + "/data",
                                        "--data_roots=" + root_, "--threads=1", "--cpu_slots=1",
                                        "--s3_path_style", "--checkpoint_uri=s3://bkt/ckpt"},
                                       &error))
        << error;
    return servers_.back().get();
  }

  static v1::FineTuneJob S3Job(const std::string& output) {
    v1::FineTuneJob job;
    job.set_model_uri("s3://bkt/models/tiny");
    job.mutable_train()->set_uri("s3://bkt/data/train.jsonl");
    job.set_output_uri(output);
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(1);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_log_every_steps(1);
    hp->set_learning_rate(1e-3f);
    return job;
  }

  std::vector<std::string> Keys(const std::string& prefix) {
    auto listed = client_->List("bkt", prefix, "test");
    EXPECT_TRUE(listed.ok()) << listed.status();
    std::vector<std::string> keys;
    if (listed.ok()) {
      for (const auto& o : *listed) keys.push_back(o.key);
    }
    return keys;
  }

  freezetune::testing::S3TestServer s3_{{"bkt"}};
  std::unique_ptr<data::S3Client> client_;
  std::string root_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
};

TEST_F(S3EndToEndTest, ModelDataAndOutputOnS3) {
  ServerProcess* server = StartServer("a");
  ASSERT_NE(server, nullptr);
  auto stub = v1::FineTuneService::NewStub(server->Channel());
  v1::FineTuneJob spec = S3Job("s3://bkt/out/job1");
  spec.mutable_hyperparameters()->set_checkpoint_every_steps(2);
  v1::Job job;
  grpc::Status submitted = Submit(stub.get(), spec, &job);
  ASSERT_TRUE(submitted.ok()) << submitted.error_message() << server->Logs();
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(testing::WatchAll(stub.get(), job.id(), 0, &events, seconds(240)).ok());
  v1::Job done = testing::WaitForState(stub.get(), job.id(), v1::JOB_STATE_SUCCEEDED, seconds(30));
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error_message() << server->Logs();
  EXPECT_EQ(done.result().output_uri(), "s3://bkt/out/job1");
  const std::vector<std::string> out = Keys("out/");
  EXPECT_THAT(out, ::testing::IsSupersetOf({"out/job1/config.json",
                                            "out/job1/freezetune.manifest.json",
                                            "out/job1/model.safetensors", "out/job1/vocab.txt"}));
  for (const std::string& k : out) EXPECT_THAT(k, StartsWith("out/job1/")) << "leftover";
  int checkpoints = 0;
  for (const v1::JobEvent& e : events) {
    if (!e.has_checkpoint()) continue;
    ++checkpoints;
    EXPECT_THAT(e.checkpoint().uri(), StartsWith("s3://bkt/ckpt/" + job.id() + "/step-"));
  }
  EXPECT_GT(checkpoints, 0);
  // Deleted right after the final state is recorded.
  for (int i = 0; i < 100 && !Keys("ckpt/").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(Keys("ckpt/").empty()) << "checkpoints of a finished job are deleted";

  // The output reads back as a model.
  {
    grpc::ClientContext context;
    v1::PlanFreezeRequest request;
    request.set_model_uri("s3://bkt/out/job1");
    request.mutable_freeze()->mutable_head_only();
    v1::PlanFreezeResponse plan;
    grpc::Status planned = stub->PlanFreeze(&context, request, &plan);
    ASSERT_TRUE(planned.ok()) << planned.error_message();
    EXPECT_GT(plan.trainable_parameters(), 0);
  }

  // Submit-time refusals, each naming the field and the S3 code.
  struct Case {
    v1::FineTuneJob spec;
    std::string prefix;
  };
  std::vector<Case> cases;
  cases.push_back({S3Job("s3://bkt/out/job1"),
                   "job.output_uri: s3://bkt/out/job1 already holds objects"});
  cases.push_back({S3Job("s3://bkt/out/job2"), "job.train.uri: s3 NoSuchKey for bucket 'bkt'"});
  cases.back().spec.mutable_train()->set_uri("s3://bkt/data/missing.jsonl");
  cases.push_back({S3Job("s3://bkt/out/job3"), "job.model_uri: s3 NotFound for bucket 'bkt'"});
  cases.back().spec.set_model_uri("s3://bkt/models/none");
  for (const Case& c : cases) {
    v1::Job refused;
    grpc::Status status = Submit(stub.get(), c.spec, &refused);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.prefix;
    EXPECT_THAT(status.error_message(), StartsWith(c.prefix));
  }
  grpc::ClientContext context;
  v1::ListJobsRequest list;
  v1::ListJobsResponse listed;
  ASSERT_TRUE(stub->ListJobs(&context, list, &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 1) << "refused jobs are not stored";
}

TEST_F(S3EndToEndTest, AnotherServerResumesFromTheCheckpointInS3) {
  ServerProcess* a = StartServer("a");
  ASSERT_NE(a, nullptr);
  auto stub = v1::FineTuneService::NewStub(a->Channel());
  v1::FineTuneJob spec = S3Job("s3://bkt/out/long");
  spec.mutable_hyperparameters()->set_epochs(60);  // 300 steps
  spec.mutable_hyperparameters()->set_checkpoint_every_steps(4);
  v1::Job job;
  ASSERT_TRUE(Submit(stub.get(), spec, &job).ok());
  int64_t checkpoint_step = 0;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(180));
    v1::WatchJobRequest request;
    request.set_job_id(job.id());
    auto reader = stub->WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      if (event.has_checkpoint() && event.checkpoint().step() >= 8) {
        checkpoint_step = event.checkpoint().step();
        EXPECT_THAT(event.checkpoint().uri(), StartsWith("s3://bkt/ckpt/"));
        break;
      }
    }
    a->Kill();
    context.TryCancel();
    reader->Finish();
  }
  ASSERT_GT(checkpoint_step, 0) << a->Logs();
  EXPECT_FALSE(Keys("ckpt/" + job.id() + "/").empty());

  // "Replica" b: the job store is shared (copied here, as a stand-in for a
  // shared database); checkpoints, outputs and caches are not.
  const std::string b_data = root_ + "/b/data";
  fs::create_directories(b_data);
  for (const auto& entry : fs::directory_iterator(root_ + "/a/data")) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && absl::StartsWith(name, "freezetune.db")) {
      fs::copy_file(entry.path(), b_data + "/" + name);
    }
  }
  ServerProcess* b = StartServer("b");
  ASSERT_NE(b, nullptr);
  auto stub_b = v1::FineTuneService::NewStub(b->Channel());
  v1::Job done = testing::WaitForState(stub_b.get(), job.id(), v1::JOB_STATE_SUCCEEDED, seconds(300));
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error_message() << b->Logs();
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(testing::WatchAll(stub_b.get(), job.id(), 0, &events).ok());
  int64_t resumed_at = -1;
  const std::string kResumed = "resumed from checkpoint at step ";
  for (const v1::JobEvent& e : events) {
    const std::string& m = e.notice().message();
    if (e.has_notice() && absl::StrContains(m, kResumed)) {
      resumed_at = std::stoll(m.substr(m.find(kResumed) + kResumed.size()));
    }
  }
  // From the checkpoint seen before the kill, or a later one written
  // before the kill landed.
  EXPECT_GE(resumed_at, checkpoint_step) << "b did not resume from S3";
  EXPECT_EQ(done.result().output_uri(), "s3://bkt/out/long");
  EXPECT_FALSE(fs::exists(b_data + "/checkpoints/" + job.id() + "/step-000000000000"));
}

}  // namespace
}  // namespace freezetune
