// End-to-end through the real freezetune-server process: submit and watch a
// tiny fine-tuning job to SUCCEEDED (gapless sequences), resume a watch from
// the middle, cancel a long job, list, NOT_FOUND, health, and bad jobs that
// are rejected with INVALID_ARGUMENT naming the field while nothing is
// queued. Then SIGTERM and a clean exit.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/integration/server_process.h"
#include "tests/integration/server_test_util.h"

namespace freezetune {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

class ServerE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string((fs::temp_directory_path() /
                            ("ft_e2e_" + std::to_string(::getpid())))
                               .string());
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);

    // A tiny BERT (2 layers, hidden 32) in Hugging Face format, with the
    // repository's copy of the bert-base-uncased vocab.
    std::string error;
    ASSERT_TRUE(testing::MakeTinyModel(FREEZETUNE_MODEL_BIN, *dir_ + "/model", &error)) << error;

    // 40 short sentences, two classes.
    std::ofstream train(*dir_ + "/train.jsonl");
    const char* good[] = {"a great movie", "wonderful acting", "i loved it", "truly delightful",
                          "a joy to watch"};
    const char* bad[] = {"a terrible movie", "awful acting", "i hated it", "truly dreadful",
                         "a pain to watch"};
    for (int i = 0; i < 20; ++i) {
      train << "{\"text\": \"" << good[i % 5] << "\", \"label\": 1}\n";
      train << "{\"text\": \"" << bad[i % 5] << "\", \"label\": 0}\n";
    }
    train.close();
    std::ofstream(*dir_ + "/train.xyz") << "{\"text\": \"x\", \"label\": 0}\n";
    std::ofstream bad_label(*dir_ + "/bad_label.jsonl");
    bad_label << "{\"text\": \"fine\", \"label\": 0}\n{\"text\": \"odd\", \"label\": 5}\n";
    bad_label.close();

    server_ = new testing::ServerProcess(FREEZETUNE_SERVER_BIN, *dir_);
    StartServer();
  }

  // The real server on port 0; the same data dir every time, so a restart
  // finds its store.
  static void StartServer() {
    std::string error;
    ASSERT_TRUE(server_->Start({"--metrics_listen=127.0.0.1:0", "--data_dir=" + *dir_ + "/server",
                                "--data_roots=" + *dir_, "--threads=1", "--cpu_slots=1",
                                "--drain_grace_period=2s"},
                               &error))
        << error;
    delete channel_;
    channel_ = new std::shared_ptr<grpc::Channel>(server_->Channel());
  }

  static void TearDownTestSuite() {
    EXPECT_TRUE(server_->Stop()) << "server did not exit 0 on SIGTERM:\n" << server_->Logs();
    delete server_;
    if (!::testing::Test::HasFailure()) fs::remove_all(*dir_);
  }

  void SetUp() override {
    ASSERT_NE(channel_, nullptr);
    stub_ = v1::FineTuneService::NewStub(*channel_);
  }

  // Two-layer model, small train set, bottom(1) frozen, 1 epoch of batches
  // of 8 with a TrainMetrics event every step.
  v1::FineTuneJob SmallJob() const {
    v1::FineTuneJob job;
    job.set_model_uri("file://" + *dir_ + "/model");
    job.mutable_train()->set_uri(*dir_ + "/train.jsonl");
    job.mutable_freeze()->mutable_bottom()->set_num_layers(1);
    auto* hp = job.mutable_hyperparameters();
    hp->set_epochs(1);
    hp->set_batch_size(8);
    hp->set_max_seq_length(16);
    hp->set_log_every_steps(1);
    hp->set_learning_rate(1e-3f);
    job.set_display_name("e2e small");
    return job;
  }

  grpc::Status Submit(const v1::FineTuneJob& spec, v1::Job* job) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(60));
    v1::SubmitJobRequest request;
    *request.mutable_job() = spec;
    return stub_->SubmitJob(&context, request, job);
  }

  std::vector<v1::Job> ListAll() {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    v1::ListJobsRequest request;
    request.set_page_size(500);
    EXPECT_TRUE(stub_->ListJobs(&context, request, &response).ok());
    return {response.jobs().begin(), response.jobs().end()};
  }

  static std::string* dir_;
  static testing::ServerProcess* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  std::unique_ptr<v1::FineTuneService::Stub> stub_;
};

std::string* ServerE2ETest::dir_ = nullptr;
testing::ServerProcess* ServerE2ETest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ServerE2ETest::channel_ = nullptr;

TEST_F(ServerE2ETest, HealthIsServing) {
  EXPECT_EQ(testing::HealthStatus(*channel_, ""), 1);
  EXPECT_EQ(testing::HealthStatus(*channel_, "freezetune.v1.FineTuneService"), 1);
}

TEST_F(ServerE2ETest, TrainWatchResumeCancelList) {
  // 1. A small job, watched from the start to SUCCEEDED.
  v1::Job small;
  grpc::Status submitted = Submit(SmallJob(), &small);
  ASSERT_TRUE(submitted.ok()) << submitted.error_message();
  EXPECT_EQ(small.state(), v1::JOB_STATE_QUEUED);
  std::vector<v1::JobEvent> events;
  grpc::Status watched = testing::WatchAll(stub_.get(), small.id(), 0, &events);
  ASSERT_TRUE(watched.ok()) << watched.error_message() << "\n" << server_->Logs();
  ASSERT_GE(events.size(), 5u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(events[i].job_id(), small.id());
  }
  EXPECT_EQ(events.front().state_change().state(), v1::JOB_STATE_QUEUED);
  ASSERT_TRUE(events.back().has_state_change());
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_SUCCEEDED)
      << events.back().state_change().message();
  int train_events = 0;
  bool has_result = false;
  for (const auto& e : events) {
    train_events += e.has_train();
    has_result |= e.has_result();
  }
  EXPECT_GE(train_events, 1);
  EXPECT_TRUE(has_result);

  v1::Job done;
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(small.id());
    ASSERT_TRUE(stub_->GetJob(&context, request, &done).ok());
  }
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  const int64_t n = static_cast<int64_t>(events.size());
  EXPECT_EQ(done.last_sequence(), n);
  EXPECT_GT(done.result().steps(), 0);
  EXPECT_TRUE(done.result().frozen_weights_verified());
  std::string output = done.result().output_uri();
  if (output.rfind("file://", 0) == 0) output.erase(0, 7);
  EXPECT_TRUE(fs::exists(fs::path(output) / "config.json")) << done.result().output_uri();
  EXPECT_TRUE(fs::exists(fs::path(output) / "model.safetensors"));

  // 2. Resume from the middle: exactly k+1..N.
  const int64_t k = n / 2;
  std::vector<v1::JobEvent> resumed;
  ASSERT_TRUE(testing::WatchAll(stub_.get(), small.id(), k, &resumed).ok());
  ASSERT_EQ(static_cast<int64_t>(resumed.size()), n - k);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].sequence(), k + 1 + static_cast<int64_t>(i));
    EXPECT_EQ(resumed[i].SerializeAsString(), events[k + i].SerializeAsString());
  }

  // 3. A long job, cancelled once it trains; its watch ends with CANCELLED.
  v1::FineTuneJob long_spec = SmallJob();
  long_spec.mutable_hyperparameters()->set_epochs(100);
  long_spec.set_display_name("e2e long");
  v1::Job long_job;
  ASSERT_TRUE(Submit(long_spec, &long_job).ok());
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + seconds(120));
  v1::WatchJobRequest watch_request;
  watch_request.set_job_id(long_job.id());
  auto reader = stub_->WatchJob(&watch_context, watch_request);
  v1::JobEvent event;
  std::vector<v1::JobEvent> long_events;
  bool cancel_sent = false;
  while (reader->Read(&event)) {
    long_events.push_back(event);
    if (!cancel_sent && event.has_train()) {
      grpc::ClientContext context;
      v1::CancelJobRequest request;
      request.set_job_id(long_job.id());
      v1::Job response;
      grpc::Status cancelled = stub_->CancelJob(&context, request, &response);
      ASSERT_TRUE(cancelled.ok()) << cancelled.error_message();
      cancel_sent = true;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(cancel_sent);
  ASSERT_FALSE(long_events.empty());
  EXPECT_EQ(long_events.back().state_change().state(), v1::JOB_STATE_CANCELLED);
  for (size_t i = 0; i < long_events.size(); ++i) {
    EXPECT_EQ(long_events[i].sequence(), static_cast<int64_t>(i + 1));
  }
  v1::Job cancelled =
      testing::WaitForState(stub_.get(), long_job.id(), v1::JOB_STATE_CANCELLED, seconds(10));
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(cancelled.progress().step(), cancelled.progress().total_steps());

  // 4. Both listed, newest first.
  std::vector<v1::Job> jobs = ListAll();
  ASSERT_GE(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].id(), long_job.id());
  EXPECT_EQ(jobs[1].id(), small.id());
}

TEST_F(ServerE2ETest, UnknownJobIsNotFound) {
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_job_id("job-000000000000");
  v1::Job job;
  EXPECT_EQ(stub_->GetJob(&context, request, &job).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerE2ETest, BadJobsAreRejectedWithTheFieldAndNothingIsQueued) {
  const size_t before = ListAll().size();
  struct Case {
    const char* name;
    std::function<void(v1::FineTuneJob*)> mutate;
    const char* field;  // the message must start with this
  };
  const std::string dir = *dir_;
  const std::vector<Case> cases = {
      {"missing file", [&](v1::FineTuneJob* j) { j->mutable_train()->set_uri(dir + "/missing.jsonl"); },
       "job.train.uri"},
      {"unknown format", [&](v1::FineTuneJob* j) { j->mutable_train()->set_uri(dir + "/train.xyz"); },
       "job.train.format"},
      {"bad regex",
       [](v1::FineTuneJob* j) {
         auto* rule = j->mutable_freeze()->add_rules();
         rule->set_pattern("bert\\.encoder\\.(");
         rule->set_action(v1::FREEZE_ACTION_FREEZE);
       },
       "job.freeze.rules[0].pattern"},
      {"rule matching nothing",
       [](v1::FineTuneJob* j) {
         auto* rule = j->mutable_freeze()->add_rules();
         rule->set_pattern("no\\.such\\.parameter\\..*");
         rule->set_action(v1::FREEZE_ACTION_TRAIN);
       },
       "job.freeze.rules[0]"},
      {"freeze everything",
       [](v1::FineTuneJob* j) {
         auto* rule = j->mutable_freeze()->add_rules();
         rule->set_pattern(".*");
         rule->set_action(v1::FREEZE_ACTION_FREEZE);
       },
       "job.freeze"},
      {"zero epochs", [](v1::FineTuneJob* j) { j->mutable_hyperparameters()->set_epochs(0); },
       "job.hyperparameters.epochs"},
      {"label out of range",
       [&](v1::FineTuneJob* j) {
         j->mutable_train()->set_uri(dir + "/bad_label.jsonl");
         j->mutable_task()->set_num_labels(2);
       },
       "job.train"},
      {"model outside the data roots",
       [](v1::FineTuneJob* j) { j->set_model_uri("file:///etc"); }, "job.model_uri"},
      // Issue 14 item 1: `freezetune submit --model file://$D/model --output
      // file://$D/model` used to succeed and replace the model's weights.
      {"output onto the input model",
       [&](v1::FineTuneJob* j) { j->set_output_uri("file://" + dir + "/model"); },
       "job.output_uri"},
      {"output inside the input model",
       [&](v1::FineTuneJob* j) { j->set_output_uri(dir + "/model/run"); }, "job.output_uri"},
      {"output outside the data roots",
       [](v1::FineTuneJob* j) { j->set_output_uri("/tmp/freezetune-e2e-out"); }, "job.output_uri"},
      {"output into the server's checkpoints",
       [&](v1::FineTuneJob* j) { j->set_output_uri(dir + "/server/checkpoints/x"); },
       "job.output_uri"},
  };
  const std::string weights = *dir_ + "/model/model.safetensors";
  const auto weights_before = fs::last_write_time(weights);
  const auto size_before = fs::file_size(weights);
  for (const Case& c : cases) {
    v1::FineTuneJob spec = SmallJob();
    c.mutate(&spec);
    v1::Job job;
    grpc::Status status = Submit(spec, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name << ": " << status.error_code() << " " << status.error_message();
    EXPECT_EQ(status.error_message().rfind(c.field, 0), 0u)
        << c.name << ": \"" << status.error_message() << "\" should start with " << c.field;
  }
  EXPECT_EQ(ListAll().size(), before);
  // The victim is untouched, and nothing was created for the refused outputs.
  EXPECT_EQ(fs::last_write_time(weights), weights_before);
  EXPECT_EQ(fs::file_size(weights), size_before);
  EXPECT_FALSE(fs::exists(*dir_ + "/model/run"));
  EXPECT_FALSE(fs::exists("/tmp/freezetune-e2e-out"));
}

TEST_F(ServerE2ETest, PlanFreezePreviewsTheSpec) {
  v1::PlanFreezeRequest request;
  request.set_model_uri("file://" + *dir_ + "/model");
  request.mutable_freeze()->mutable_bottom()->set_num_layers(1);
  v1::PlanFreezeResponse plan;
  {
    grpc::ClientContext context;
    grpc::Status status = stub_->PlanFreeze(&context, request, &plan);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(plan.num_layers(), 2);
  EXPECT_EQ(plan.frozen_prefix_layers(), 1);
  EXPECT_GT(plan.frozen_parameters(), 0);
  EXPECT_GT(plan.trainable_parameters(), 0);
  EXPECT_EQ(plan.total_parameters(), plan.frozen_parameters() + plan.trainable_parameters());
  ASSERT_GT(plan.parameters_size(), 0);
  for (const auto& p : plan.parameters()) {
    if (p.name().find("encoder.layer.1.") != std::string::npos) {
      EXPECT_TRUE(p.trainable()) << p.name();
    }
    if (p.name().find("embeddings.") != std::string::npos) {
      EXPECT_FALSE(p.trainable()) << p.name();
    }
  }

  auto* rule = request.mutable_freeze()->add_rules();
  rule->set_pattern("bert\\.encoder\\.(");
  rule->set_action(v1::FREEZE_ACTION_FREEZE);
  grpc::ClientContext context;
  grpc::Status bad = stub_->PlanFreeze(&context, request, &plan);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("freeze.rules[0].pattern"), std::string::npos)
      << bad.error_message();
}

// Runs last: SIGTERM while a job trains, restart on the same data dir, and
// the job resumes from the checkpoint the drain wrote and succeeds; its
// event log continues without gaps across the restart.
TEST_F(ServerE2ETest, DrainRequeuesAndRestartResumesFromCheckpoint) {
  v1::FineTuneJob spec = SmallJob();
  spec.mutable_hyperparameters()->set_epochs(60);
  spec.set_display_name("e2e restart");
  v1::Job job;
  ASSERT_TRUE(Submit(spec, &job).ok());

  int64_t seen = 0;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(60));
    v1::WatchJobRequest request;
    request.set_job_id(job.id());
    auto reader = stub_->WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      EXPECT_EQ(event.sequence(), seen + 1);
      seen = event.sequence();
      if (event.has_train() && event.train().step() >= 10) break;
    }
    context.TryCancel();
    reader->Finish();
  }
  ASSERT_GT(seen, 0);
  ASSERT_TRUE(server_->Stop()) << server_->Logs();
  StartServer();
  stub_ = v1::FineTuneService::NewStub(*channel_);

  std::vector<v1::JobEvent> rest;
  grpc::Status watched = testing::WatchAll(stub_.get(), job.id(), seen, &rest);
  ASSERT_TRUE(watched.ok()) << watched.error_message();
  ASSERT_FALSE(rest.empty());
  bool requeued = false, resumed = false;
  for (size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(rest[i].sequence(), seen + 1 + static_cast<int64_t>(i));
    if (rest[i].has_state_change() && rest[i].state_change().state() == v1::JOB_STATE_QUEUED) {
      requeued = true;
    }
    if (rest[i].has_notice() &&
        rest[i].notice().message().find("resumed from checkpoint") != std::string::npos) {
      resumed = true;
    }
  }
  EXPECT_TRUE(requeued);
  EXPECT_TRUE(resumed) << "no resume notice; server log:\n" << server_->Logs();
  EXPECT_EQ(rest.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);
}

}  // namespace
}  // namespace freezetune
