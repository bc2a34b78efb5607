// Limits of the in-process Server, each crossed: max message size, max
// concurrent streams per connection, keepalive enforcement (too_many_pings),
// the server-side unary deadline, per-tenant queued and running limits, and
// device slots (a "cuda" job on a CPU-only server is INVALID_ARGUMENT; a
// job runs with its slot's device). Plus a stalled watcher that never reads
// while the job floods events: training and another watcher are not held up.
// Jobs are scripted (TrainHooks), not trained.
#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/service/server.h"
#include "tests/integration/server_test_util.h"

namespace freezetune::service {
namespace {

using freezetune::testing::WaitForState;
using freezetune::testing::WatchAll;
using std::chrono::milliseconds;
using std::chrono::seconds;

// display_name picks the script: "loop" emits a step every 5 ms until
// stopped; "slow-validate" takes 300 ms to validate; "flood" emits 1500
// notices of 4 KiB; anything else emits one step. The result's output_uri
// is the RunContext.device the job ran with.
jobs::TrainHooks Hooks() {
  jobs::TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob& job, const data::UriOptions&,
                      const train::JobLimits&) -> absl::Status {
    if (job.display_name() == "slow-validate") std::this_thread::sleep_for(milliseconds(300));
    return absl::OkStatus();
  };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest& r, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> {
    if (r.model_uri() == "/slow") std::this_thread::sleep_for(milliseconds(300));
    return v1::PlanFreezeResponse();
  };
  hooks.run = [](const v1::FineTuneJob& job,
                 const train::RunContext& ctx) -> absl::StatusOr<v1::JobResult> {
    if (job.display_name() == "loop") {
      for (int64_t step = 1;; ++step) {
        if (ctx.should_stop()) return absl::CancelledError("stopped");
        v1::JobEvent e;
        e.mutable_train()->set_step(step);
        ctx.emit(e);
        std::this_thread::sleep_for(milliseconds(5));
      }
    }
    if (job.display_name() == "flood") {
      for (int i = 0; i < 1500; ++i) {
        v1::JobEvent e;
        e.mutable_notice()->set_message(std::string(4096, 'a' + i % 26));
        ctx.emit(e);
      }
    } else {
      v1::JobEvent e;
      e.mutable_train()->set_step(1);
      ctx.emit(e);
    }
    v1::JobResult result;
    result.set_output_uri(ctx.device);
    return result;
  };
  return hooks;
}

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("ft_limits_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
    options_.listen_address = "127.0.0.1:0";
    options_.metrics.listen_address = "";
    options_.metrics.build_info = {"test", "none", "none", "cpu"};
    options_.jobs.data_dir = dir_;
    options_.hooks = Hooks();
  }
  void Start() {
    auto server = Server::Start(options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    channel_ = Channel(grpc::ChannelArguments());
    stub_ = v1::FineTuneService::NewStub(channel_);
  }
  std::shared_ptr<grpc::Channel> Channel(const grpc::ChannelArguments& args) {
    return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(server_->port()),
                                     grpc::InsecureChannelCredentials(), args);
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  grpc::Status Submit(const std::string& name, v1::Job* job, const std::string& token = "",
                      const std::string& device = "") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(20));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::SubmitJobRequest request;
    request.mutable_job()->set_model_uri("/m");
    request.mutable_job()->set_display_name(name);
    request.mutable_job()->set_device(device);
    return stub_->SubmitJob(&context, request, job);
  }
  v1::Job MustSubmit(const std::string& name, const std::string& token = "") {
    v1::Job job;
    grpc::Status s = Submit(name, &job, token);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return job;
  }
  v1::Job Get(const std::string& id, const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    EXPECT_TRUE(stub_->GetJob(&context, request, &job).ok());
    return job;
  }
  void Cancel(const std::string& id, const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::CancelJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    stub_->CancelJob(&context, request, &job);
  }
  int ListCount() {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    EXPECT_TRUE(stub_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    return response.jobs_size();
  }

  std::string dir_;
  ServerOptions options_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::FineTuneService::Stub> stub_;
};

TEST_F(LimitsTest, RequestOverMaxMessageBytesIsResourceExhausted) {
  options_.max_message_bytes = 4096;
  Start();
  grpc::ClientContext context;
  v1::SubmitJobRequest request;
  request.mutable_job()->set_model_uri("/" + std::string(8000, 'm'));
  v1::Job job;
  grpc::Status status = stub_->SubmitJob(&context, request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_EQ(ListCount(), 0);
  v1::Job small;
  EXPECT_TRUE(Submit("short", &small).ok());  // under the limit
}

TEST_F(LimitsTest, CallsBeyondMaxConcurrentStreamsWaitUntilOneEnds) {
  options_.max_concurrent_streams = 2;
  Start();
  v1::Job job = MustSubmit("loop");
  grpc::ClientContext w1, w2;
  v1::WatchJobRequest request;
  request.set_job_id(job.id());
  auto r1 = stub_->WatchJob(&w1, request);
  auto r2 = stub_->WatchJob(&w2, request);
  v1::JobEvent event;
  ASSERT_TRUE(r1->Read(&event));
  ASSERT_TRUE(r2->Read(&event));
  {
    // A third stream on the same connection has to wait.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + milliseconds(500));
    v1::GetJobRequest get;
    get.set_job_id(job.id());
    v1::Job out;
    EXPECT_EQ(stub_->GetJob(&context, get, &out).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  w1.TryCancel();
  while (r1->Read(&event)) {
  }
  r1->Finish();
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(5));
    v1::GetJobRequest get;
    get.set_job_id(job.id());
    v1::Job out;
    EXPECT_TRUE(stub_->GetJob(&context, get, &out).ok());
  }
  w2.TryCancel();
  while (r2->Read(&event)) {
  }
  r2->Finish();
  Cancel(job.id());
}

TEST_F(LimitsTest, TooFrequentKeepalivePingsGetGoawayAndTheCallFailsUnavailable) {
  options_.keepalive_min_ping_interval = absl::Seconds(10);
  Start();
  // A loop job holds the only slot, so the watched job stays QUEUED and its
  // stream carries no data: only pings.
  v1::Job loop = MustSubmit("loop");
  v1::Job queued = MustSubmit("short");
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 200);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 200);
  auto pinger = v1::FineTuneService::NewStub(Channel(args));
  std::vector<v1::JobEvent> events;
  auto start = std::chrono::steady_clock::now();
  grpc::Status status = WatchAll(pinger.get(), queued.id(), 0, &events, seconds(30));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(20));
  EXPECT_EQ(events.size(), 1u);  // "queued", then only pings
  Cancel(loop.id());
}

TEST_F(LimitsTest, PolitePingsAreAllowed) {
  options_.keepalive_min_ping_interval = absl::Milliseconds(100);
  Start();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 200);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 200);
  auto pinger = v1::FineTuneService::NewStub(Channel(args));
  v1::Job loop = MustSubmit("loop");
  v1::Job queued = MustSubmit("short");
  std::vector<v1::JobEvent> events;
  grpc::Status status;
  std::thread watch([&] { status = WatchAll(pinger.get(), queued.id(), 0, &events, seconds(30)); });
  std::this_thread::sleep_for(seconds(2));  // ~10 pings
  Cancel(loop.id());
  watch.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(LimitsTest, UnaryDeadlineEndsSlowValidationAndStoresNothing) {
  options_.service.unary_deadline = absl::Milliseconds(100);
  Start();
  v1::Job job;
  grpc::Status slow = Submit("slow-validate", &job);
  EXPECT_EQ(slow.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << slow.error_message();
  EXPECT_NE(slow.error_message().find("validating the job"), std::string::npos);
  EXPECT_EQ(ListCount(), 0);
  {
    grpc::ClientContext context;
    v1::PlanFreezeRequest request;
    request.set_model_uri("/slow");
    v1::PlanFreezeResponse plan;
    EXPECT_EQ(stub_->PlanFreeze(&context, request, &plan).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(Submit("short", &job).ok());  // fast validation is in time
}

TEST_F(LimitsTest, PerTenantQueuedLimitIsResourceExhaustedNamingTheTenant) {
  options_.jobs.scheduler.max_queued_per_tenant = 1;
  options_.service.auth = *Authenticator::FromText("alice tok-a\nbob tok-b\n", "test");
  Start();
  v1::Job running = MustSubmit("loop", "tok-a");
  v1::Job job;
  for (int i = 0; i < 200 && Get(running.id(), "tok-a").state() != v1::JOB_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  v1::Job queued = MustSubmit("short", "tok-a");
  grpc::Status over = Submit("short", &job, "tok-a");
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over.error_message().find("tenant \"alice\""), std::string::npos) << over.error_message();
  EXPECT_NE(over.error_message().find("max_queued_per_tenant 1"), std::string::npos);
  // Another tenant is not affected.
  v1::Job bobs;
  EXPECT_TRUE(Submit("short", &bobs, "tok-b").ok());
  Cancel(running.id(), "tok-a");
}

TEST_F(LimitsTest, PerTenantRunningLimitHoldsBackOnlyThatTenant) {
  options_.jobs.scheduler.cpu_slots = 3;
  options_.jobs.scheduler.max_running_per_tenant = 1;
  options_.service.auth =
      *Authenticator::FromText("alice tok-a\nbob tok-b\ncarol tok-c\n", "test");
  Start();
  v1::Job a1 = MustSubmit("loop", "tok-a");
  v1::Job b1 = MustSubmit("loop", "tok-b");
  auto state = [&](const v1::Job& j, const std::string& token) { return Get(j.id(), token).state(); };
  for (int i = 0; i < 500 && (state(a1, "tok-a") != v1::JOB_STATE_RUNNING ||
                              state(b1, "tok-b") != v1::JOB_STATE_RUNNING);
       ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(state(a1, "tok-a"), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(state(b1, "tok-b"), v1::JOB_STATE_RUNNING);
  // One slot is free. alice's second job is queued first, carol's behind
  // it: carol's running proves the scheduler filled the slot and passed
  // alice's over (no sleep-and-hope).
  v1::Job a2 = MustSubmit("loop", "tok-a");
  v1::Job c1 = MustSubmit("loop", "tok-c");
  for (int i = 0; i < 500 && state(c1, "tok-c") != v1::JOB_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(state(c1, "tok-c"), v1::JOB_STATE_RUNNING);
  // The slot went to carol although alice's job was ahead: she already
  // runs her one job.
  EXPECT_EQ(state(a2, "tok-a"), v1::JOB_STATE_QUEUED);
  Cancel(a1.id(), "tok-a");
  for (int i = 0; i < 500 && state(a2, "tok-a") != v1::JOB_STATE_RUNNING; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(state(a2, "tok-a"), v1::JOB_STATE_RUNNING);
  Cancel(a2.id(), "tok-a");
  Cancel(b1.id(), "tok-b");
  Cancel(c1.id(), "tok-c");
}

TEST_F(LimitsTest, CudaJobOnACpuOnlyServerIsInvalidArgument) {
  Start();
  v1::Job job;
  for (const char* device : {"cuda", "cuda:0"}) {
    grpc::Status status = Submit("short", &job, "", device);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << device;
    EXPECT_NE(status.error_message().find("job.device: no CUDA device"), std::string::npos)
        << status.error_message();
  }
  grpc::Status bad = Submit("short", &job, "", "gpu");
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("job.device"), std::string::npos);
  EXPECT_EQ(ListCount(), 0);

  ASSERT_TRUE(Submit("short", &job, "", "cpu").ok());
  v1::Job done = WaitForState(stub_.get(), job.id(), v1::JOB_STATE_SUCCEEDED, seconds(10));
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.result().output_uri(), "cpu");  // RunContext.device
}

TEST_F(LimitsTest, JobsRunOnTheSlotTheirDeviceAsksFor) {
  // Two pretend GPUs: the scheduler only hands the slot's device string on.
  options_.jobs.scheduler.gpu_devices = {"cuda:0", "cuda:1"};
  Start();
  std::map<std::string, std::string> want = {
      {"cuda:1", "cuda:1"}, {"cpu", "cpu"}, {"cuda", "cuda:"}};
  for (const auto& [device, prefix] : want) {
    v1::Job job;
    ASSERT_TRUE(Submit("short", &job, "", device).ok()) << device;
    v1::Job done = WaitForState(stub_.get(), job.id(), v1::JOB_STATE_SUCCEEDED, seconds(10));
    ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << device;
    EXPECT_EQ(done.result().output_uri().rfind(prefix, 0), 0u)
        << device << " ran on " << done.result().output_uri();
  }
  v1::Job job;
  EXPECT_EQ(Submit("short", &job, "", "cuda:2").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(LimitsTest, StalledWatcherBlocksNeitherTrainingNorOtherWatchers) {
  Start();
  // Own connection for the staller, so its full flow-control window cannot
  // slow the other calls' connection.
  auto stall_stub = v1::FineTuneService::NewStub(Channel(grpc::ChannelArguments()));
  v1::Job job = MustSubmit("flood");
  grpc::ClientContext stalled;
  v1::WatchJobRequest request;
  request.set_job_id(job.id());
  // Starts the stream and never reads (~6 MB of events are coming).
  auto stalled_reader = stall_stub->WatchJob(&stalled, request);

  std::vector<v1::JobEvent> events;
  grpc::Status status = WatchAll(stub_.get(), job.id(), 0, &events, seconds(60));
  ASSERT_TRUE(status.ok()) << status.error_message();
  // queued, running, 1500 notices, result, succeeded; in order, no gaps.
  ASSERT_EQ(events.size(), 1504u);
  for (size_t i = 0; i < events.size(); ++i) ASSERT_EQ(events[i].sequence(), int64_t(i) + 1);
  EXPECT_EQ(events.back().state_change().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Get(job.id()).state(), v1::JOB_STATE_SUCCEEDED);

  // The stalled stream is still open and, once read, still delivers every
  // event in order (it fell behind the in-memory tail: served from the store).
  v1::JobEvent event;
  int64_t expect = 1;
  while (stalled_reader->Read(&event)) {
    ASSERT_EQ(event.sequence(), expect);
    ++expect;
  }
  EXPECT_TRUE(stalled_reader->Finish().ok());
  EXPECT_EQ(expect, 1505);
}

}  // namespace
}  // namespace freezetune::service
