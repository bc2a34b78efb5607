// The assembled Server in-process on 127.0.0.1:0, with TrainHooks that
// script jobs instead of training (the e2e test uses the real trainer):
// every RPC through the raw generated stub, WatchJob replay/resume/live
// follow/cancel, WatchSweep's subscription and drain, ListSweeps' field
// errors, health, and the /metrics endpoint.
#include "server/service/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/server_test_util.h"

namespace freezetune::service {
namespace {

using freezetune::testing::HealthStatus;
using freezetune::testing::WatchAll;
using freezetune::testing::WaitForState;
using std::chrono::milliseconds;
using std::chrono::seconds;

jobs::TrainHooks ScriptedHooks() {
  jobs::TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob& job, const data::UriOptions&,
                      const train::JobLimits&) -> absl::Status {
    if (job.model_uri().empty()) return absl::InvalidArgumentError("job.model_uri: required");
    return absl::OkStatus();
  };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest& r, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> {
    v1::PlanFreezeResponse response;
    response.set_num_layers(2);
    return response;
  };
  // "loop..." (also a sweep "loop"'s trials, "loop depth=N"): emits a step
  // every few ms until stopped; otherwise 5 steps.
  hooks.run = [](const v1::FineTuneJob& job,
                 const train::RunContext& ctx) -> absl::StatusOr<v1::JobResult> {
    bool loop = job.display_name().rfind("loop", 0) == 0;
    for (int64_t step = 1; loop || step <= 5; ++step) {
      if (ctx.should_stop()) return absl::CancelledError("stopped");
      v1::JobEvent e;
      e.mutable_train()->set_step(step);
      e.mutable_train()->set_total_steps(loop ? 1000000 : 5);
      e.mutable_train()->set_loss(0.5f);
      if (ctx.on_step) ctx.on_step(0.002, 8);  // what the trainer reports per step
      ctx.emit(e);
      if (loop && step == 1) {
        v1::JobEvent eval;
        eval.mutable_eval()->set_accuracy(0.75f);
        eval.mutable_eval()->set_loss(0.25f);
        ctx.emit(eval);
      }
      std::this_thread::sleep_for(milliseconds(loop ? 5 : 1));
    }
    v1::JobResult result;
    result.set_steps(5);
    return result;
  };
  return hooks;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_dir_ = (std::filesystem::temp_directory_path() /
                 ("ft_service_" + std::to_string(::getpid()) + "_" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                    .string();
    std::filesystem::remove_all(data_dir_);
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.metrics.listen_address = "127.0.0.1:0";
    options.metrics.build_info = {"test", "none", "none", "cpu"};
    options.metrics.blas_info = {{"cpu", "Test CPU"}, {"blas_core", "SkylakeX"},
                                 {"blas_default_core", "Prescott"},
                                 {"blas_core_selection", "selected"}};
    options.jobs.data_dir = data_dir_;
    options.hooks = ScriptedHooks();
    auto server = Server::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::FineTuneService::NewStub(channel_);
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(data_dir_);
  }

  v1::Job Submit(const std::string& name) {
    grpc::ClientContext context;
    v1::SubmitJobRequest request;
    request.mutable_job()->set_model_uri("/m");
    request.mutable_job()->set_display_name(name);
    v1::Job job;
    grpc::Status status = stub_->SubmitJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  int ListCount() {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    return response.jobs_size();
  }

  static void ExpectGapless(const std::vector<v1::JobEvent>& events, int64_t first) {
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].sequence(), first + static_cast<int64_t>(i));
    }
  }

  std::string data_dir_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::FineTuneService::Stub> stub_;
};

TEST_F(ServerTest, HealthIsServingUntilToldOtherwise) {
  EXPECT_EQ(HealthStatus(channel_, ""), 1);
  EXPECT_EQ(HealthStatus(channel_, "freezetune.v1.FineTuneService"), 1);
  server_->SetServing(false);
  EXPECT_EQ(HealthStatus(channel_, "freezetune.v1.FineTuneService"), 2);
}

TEST_F(ServerTest, ReflectionListsTheServices) {
  std::string services = freezetune::testing::ReflectionListServices(channel_);
  EXPECT_NE(services.find("freezetune.v1.FineTuneService"), std::string::npos) << services;
  EXPECT_NE(services.find("grpc.health.v1.Health"), std::string::npos);
}

TEST_F(ServerTest, WatchReplaysAllEventsAndResumesFromTheMiddle) {
  v1::Job job = Submit("short");
  std::vector<v1::JobEvent> events;
  grpc::Status status = WatchAll(stub_.get(), job.id(), 0, &events);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // queued, running, 5 x train, result, succeeded
  ASSERT_EQ(events.size(), 9u);
  ExpectGapless(events, 1);
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(events.front().job_id(), job.id());

  std::vector<v1::JobEvent> tail;
  ASSERT_TRUE(WatchAll(stub_.get(), job.id(), 4, &tail).ok());
  ASSERT_EQ(tail.size(), 5u);
  ExpectGapless(tail, 5);

  std::vector<v1::JobEvent> none;
  ASSERT_TRUE(WatchAll(stub_.get(), job.id(), 9, &none).ok());
  EXPECT_TRUE(none.empty());
  grpc::Status past = WatchAll(stub_.get(), job.id(), 10, &none);
  EXPECT_EQ(past.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(past.error_message(), "after_sequence: 10 is past the job's last sequence 9");
}

TEST_F(ServerTest, CancelRunningJobEndsItsLiveWatchWithCancelled) {
  v1::Job job = Submit("loop");
  std::vector<v1::JobEvent> events;
  grpc::Status watch_status;
  std::thread watcher([&] { watch_status = WatchAll(stub_.get(), job.id(), 0, &events); });
  v1::Job running = WaitForState(stub_.get(), job.id(), v1::JOB_STATE_RUNNING, seconds(10));
  ASSERT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  // While it runs, its per-job series exist (once its first step and
  // evaluation are in).
  const std::string series = "{job_id=\"" + job.id() + "\"}";
  std::string metrics;
  for (int i = 0; i < 1000; ++i) {
    metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
    if (metrics.find("freezetune_job_eval_accuracy" + series) != std::string::npos) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_NE(metrics.find("freezetune_job_eval_accuracy" + series + " 0.75"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("freezetune_job_train_loss" + series + " 0.5"), std::string::npos);
  EXPECT_NE(metrics.find("freezetune_job_last_step_timestamp_seconds" + series), std::string::npos);
  {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_job_id(job.id());
    v1::Job response;
    ASSERT_TRUE(stub_->CancelJob(&context, request, &response).ok());
  }
  watcher.join();
  ASSERT_TRUE(watch_status.ok()) << watch_status.error_message();
  ASSERT_GT(events.size(), 3u);
  ExpectGapless(events, 1);
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_CANCELLED);

  // ...and go away when it ends.
  metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_EQ(metrics.find(series), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("freezetune_jobs_finished_total{state=\"cancelled\"} 1"),
            std::string::npos);

  grpc::ClientContext context;
  v1::CancelJobRequest request;
  request.set_job_id(job.id());
  v1::Job response;
  grpc::Status again = stub_->CancelJob(&context, request, &response);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(again.error_message(), "job " + job.id() + " already CANCELLED");
}

TEST_F(ServerTest, ClientCancellingAWatchReleasesItsSubscription) {
  v1::Job job = Submit("loop");
  WaitForState(stub_.get(), job.id(), v1::JOB_STATE_RUNNING, seconds(10));
  for (int round = 0; round < 3; ++round) {
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_job_id(job.id());
    auto reader = stub_->WatchJob(&context, request);
    v1::JobEvent event;
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(reader->Read(&event));
    context.TryCancel();
    while (reader->Read(&event)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (server_->job_manager()->subscriber_count() > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(server_->job_manager()->subscriber_count(), 0u);
  std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("freezetune_watch_streams 0"), std::string::npos) << metrics;
}

TEST_F(ServerTest, ShutdownEndsLiveWatchesPromptlyWithUnavailable) {
  v1::Job job = Submit("loop");
  WaitForState(stub_.get(), job.id(), v1::JOB_STATE_RUNNING, seconds(10));
  grpc::ClientContext context;
  v1::WatchJobRequest request;
  request.set_job_id(job.id());
  auto reader = stub_->WatchJob(&context, request);
  v1::JobEvent event;
  ASSERT_TRUE(reader->Read(&event));
  auto start = std::chrono::steady_clock::now();
  std::thread stopper([&] { server_->Shutdown(absl::Now() + absl::Seconds(20)); });
  int64_t last = event.sequence();
  bool saw_requeue = false;
  while (reader->Read(&event)) {
    EXPECT_EQ(event.sequence(), last + 1);
    last = event.sequence();
    saw_requeue |= event.has_state_change() &&
                   event.state_change().state() == v1::JOB_STATE_QUEUED;
  }
  grpc::Status status = reader->Finish();
  stopper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(10));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(status.error_message(),
            "server shutting down; resume with after_sequence=" + std::to_string(last));
  EXPECT_TRUE(saw_requeue);
}

TEST_F(ServerTest, BadRequestsGetTheRightCodes) {
  {
    grpc::ClientContext context;
    v1::Job job;
    grpc::Status s = stub_->GetJob(&context, v1::GetJobRequest(), &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "job_id: required");
  }
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id("job-000000000000");
    v1::Job job;
    EXPECT_EQ(stub_->GetJob(&context, request, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    std::vector<v1::JobEvent> events;
    EXPECT_EQ(WatchAll(stub_.get(), "job-000000000000", 0, &events).error_code(),
              grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(WatchAll(stub_.get(), "", 0, &events).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    v1::Job job;
    grpc::Status s = stub_->SubmitJob(&context, v1::SubmitJobRequest(), &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "job: required");
  }
  {
    grpc::ClientContext context;
    v1::SubmitJobRequest request;
    request.mutable_job()->set_display_name("no model");
    v1::Job job;
    grpc::Status s = stub_->SubmitJob(&context, request, &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(), "job.model_uri: required");
  }
  {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    request.set_page_token("garbage!");
    v1::ListJobsResponse response;
    EXPECT_EQ(stub_->ListJobs(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    v1::PlanFreezeRequest request;
    v1::PlanFreezeResponse response;
    EXPECT_EQ(stub_->PlanFreeze(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    v1::PlanFreezeRequest request;
    request.set_model_uri("/m");
    v1::PlanFreezeResponse response;
    ASSERT_TRUE(stub_->PlanFreeze(&context, request, &response).ok());
    EXPECT_EQ(response.num_layers(), 2);
  }
  EXPECT_EQ(ListCount(), 0);

  std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("freezetune_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"SubmitJob\"} 2"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("freezetune_build_info{"), std::string::npos);
  EXPECT_NE(metrics.find("freezetune_blas_info{blas_core=\"SkylakeX\",blas_core_selection=\"selected\","
                         "blas_default_core=\"Prescott\",cpu=\"Test CPU\"} 1"),
            std::string::npos)
      << metrics;
}

TEST_F(ServerTest, ListPagesThroughJobsNewestFirst) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Submit("short").id());
  for (const std::string& id : ids) {
    EXPECT_EQ(WaitForState(stub_.get(), id, v1::JOB_STATE_SUCCEEDED, seconds(20)).state(),
              v1::JOB_STATE_SUCCEEDED);
  }
  std::vector<std::string> listed;
  v1::ListJobsRequest request;
  request.set_page_size(2);
  while (true) {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    ASSERT_TRUE(stub_->ListJobs(&context, request, &response).ok());
    for (const auto& j : response.jobs()) listed.push_back(j.id());
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  ASSERT_EQ(listed.size(), 5u);
  EXPECT_EQ(listed, std::vector<std::string>(ids.rbegin(), ids.rend()));
  std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  // A store of its own: queue="sqlite:<host>:<data dir>" on the queue's gauges.
  const std::string queue_label = "freezetune_queue_depth{queue=\"sqlite:";
  const size_t label_at = metrics.find(queue_label);
  ASSERT_NE(label_at, std::string::npos) << metrics;
  const size_t queue_begin = label_at + queue_label.size() - std::string("sqlite:").size();
  const std::string queue = metrics.substr(queue_begin, metrics.find('"', queue_begin) - queue_begin);
  EXPECT_TRUE(absl::EndsWith(queue, ":" + data_dir_)) << queue;
  EXPECT_NE(metrics.find(absl::StrCat("freezetune_jobs{queue=\"", queue, "\",state=\"succeeded\"} 5")),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("freezetune_train_steps_total 25"), std::string::npos);
  EXPECT_NE(metrics.find("freezetune_train_samples_total 200"), std::string::npos);
  // One observation per step, not one per logging interval.
  EXPECT_NE(metrics.find("freezetune_train_step_duration_seconds_count 25"), std::string::npos);
  EXPECT_NE(metrics.find(absl::StrCat("freezetune_queue_oldest_age_seconds{queue=\"", queue, "\"} 0\n")),
            std::string::npos);
  EXPECT_NE(testing::HttpGet(server_->metrics_port(), "/nope").find("404"), std::string::npos);
}

// A sweep whose trials loop until cancelled.
v1::Sweep SubmitLoopSweep(v1::FineTuneService::Stub* stub) {
  grpc::ClientContext context;
  v1::SubmitSweepRequest request;
  request.mutable_sweep()->set_display_name("loop");
  request.mutable_sweep()->mutable_job()->set_model_uri("/m");
  request.mutable_sweep()->add_freeze_depths(0);
  request.mutable_sweep()->add_freeze_depths(1);
  v1::Sweep sweep;
  grpc::Status status = stub->SubmitSweep(&context, request, &sweep);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return sweep;
}

// Waits until the sweep has `n` subscribers; returns the last count seen.
size_t WaitForSweepSubscribers(sweeps::SweepManager* sweeps, const std::string& id, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (sweeps->subscriber_count(id) != n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  return sweeps->subscriber_count(id);
}

// WatchSweep follows a live sweep by subscribing to the SweepManager (which
// notifies on each Emit) rather than by polling it: while the stream is
// open the sweep has exactly one subscriber, and none once it ended.
TEST_F(ServerTest, WatchSweepSubscribesToTheSweepAndEndsAfterTheResult) {
  v1::Sweep sweep = SubmitLoopSweep(stub_.get());
  ASSERT_FALSE(sweep.id().empty());
  grpc::ClientContext context;
  v1::WatchSweepRequest request;
  request.set_sweep_id(sweep.id());
  auto reader = stub_->WatchSweep(&context, request);
  v1::SweepEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.sequence(), 1);
  sweeps::SweepManager* sweeps = server_->sweep_manager();
  EXPECT_EQ(WaitForSweepSubscribers(sweeps, sweep.id(), 1), 1u);

  {
    grpc::ClientContext cancel_context;
    v1::CancelSweepRequest cancel;
    cancel.set_sweep_id(sweep.id());
    v1::Sweep cancelled;
    ASSERT_TRUE(stub_->CancelSweep(&cancel_context, cancel, &cancelled).ok());
  }
  int64_t last = event.sequence();
  bool saw_result = false;
  while (reader->Read(&event)) {
    EXPECT_EQ(event.sequence(), last + 1);
    last = event.sequence();
    saw_result = event.has_result();
  }
  grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(saw_result);
  EXPECT_EQ(event.result().state(), v1::SWEEP_STATE_CANCELLED);
  EXPECT_EQ(WaitForSweepSubscribers(sweeps, sweep.id(), 0), 0u);
  std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("freezetune_grpc_requests_total{code=\"OK\",method=\"WatchSweep\"} 1"),
            std::string::npos)
      << metrics;
}

TEST_F(ServerTest, ShutdownEndsLiveSweepWatchesPromptlyWithUnavailable) {
  v1::Sweep sweep = SubmitLoopSweep(stub_.get());
  ASSERT_FALSE(sweep.id().empty());
  grpc::ClientContext context;
  v1::WatchSweepRequest request;
  request.set_sweep_id(sweep.id());
  auto reader = stub_->WatchSweep(&context, request);
  v1::SweepEvent event;
  ASSERT_TRUE(reader->Read(&event));
  auto start = std::chrono::steady_clock::now();
  std::thread stopper([&] { server_->Shutdown(absl::Now() + absl::Seconds(20)); });
  int64_t last = event.sequence();
  while (reader->Read(&event)) last = event.sequence();
  grpc::Status status = reader->Finish();
  stopper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(10));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(status.error_message(),
            "server shutting down; resume with after_sequence=" + std::to_string(last));
}

TEST_F(ServerTest, ListSweepsValidatesItsFields) {
  SubmitLoopSweep(stub_.get());
  auto list = [&](const v1::ListSweepsRequest& request, v1::ListSweepsResponse* response) {
    grpc::ClientContext context;
    return stub_->ListSweeps(&context, request, response);
  };
  v1::ListSweepsResponse response;
  ASSERT_TRUE(list(v1::ListSweepsRequest(), &response).ok());
  EXPECT_EQ(response.sweeps_size(), 1);
  v1::ListSweepsRequest bad;
  bad.set_page_size(-3);
  grpc::Status status = list(bad, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "page_size: must not be negative");
  bad.set_page_size(0);
  bad.set_page_token("%%%");
  status = list(bad, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "page_token: malformed");
  std::string metrics = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(
      metrics.find("freezetune_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"ListSweeps\"} 2"),
      std::string::npos)
      << metrics;
}

}  // namespace
}  // namespace freezetune::service
