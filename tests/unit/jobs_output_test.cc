// Where jobs may write and read (issue 14 item 1): JobManager with a real
// SQLite store and real directories, an injected runner instead of training.
// Every refusal is INVALID_ARGUMENT naming the field, stores nothing, and
// leaves the directory it named untouched; every rule has an accepted twin
// next to it, so a test cannot pass by refusing everything.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/jobs/job_manager.h"
#include "server/jobs/path_policy.h"

namespace freezetune::jobs {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A Hugging Face-looking model directory (only names matter here).
void MakeModel(const fs::path& dir) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << "{\"model_type\": \"bert\"}";
  std::ofstream(dir / "model.safetensors") << "victim weights";
  std::ofstream(dir / "vocab.txt") << "[PAD]\n";
}

class OutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("ft_output_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    root_ = fs::canonical(root_);
    options_.data_dir = (root_ / "state").string();
    options_.uris.data_roots = {root_.string()};
    options_.scheduler.cpu_slots = 1;
    MakeModel(root_ / "victim");
    std::ofstream(root_ / "train.tsv") << "sentence\tlabel\nok\t1\n";
  }
  void TearDown() override {
    manager_.reset();
    fs::remove_all(root_);
  }

  void Start() {
    manager_.reset();
    TrainHooks hooks;
    hooks.validate = [](const v1::FineTuneJob&, const data::UriOptions&,
                        const train::JobLimits&) { return absl::OkStatus(); };
    hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
        -> absl::StatusOr<v1::PlanFreezeResponse> { return v1::PlanFreezeResponse(); };
    hooks.run = [this](const v1::FineTuneJob& job, const train::RunContext& ctx)
        -> absl::StatusOr<v1::JobResult> {
      runs_.fetch_add(1);
      while (job.display_name() == "hold" && !ctx.should_stop()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      if (job.display_name() == "fail") return absl::InternalError("step 1: loss is NaN");
      std::ofstream(ctx.output_dir + "/model.safetensors") << "trained";
      v1::JobResult result;
      result.set_output_uri(ctx.output_dir);
      return result;
    };
    auto manager = JobManager::Create(options_, hooks);
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(manager).value();
  }

  v1::FineTuneJob Spec(const std::string& output) {
    v1::FineTuneJob spec;
    spec.set_model_uri("file://" + (root_ / "victim").string());
    spec.mutable_train()->set_uri((root_ / "train.tsv").string());
    spec.set_output_uri(output);
    return spec;
  }

  int Stored() {
    auto list = manager_->List(v1::ListJobsRequest());
    EXPECT_TRUE(list.ok());
    return list.ok() ? list->jobs_size() : -1;
  }

  v1::Job WaitForEnd(const std::string& id) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      auto job = manager_->Get(id);
      if (job.ok() && store::IsTerminal(job->state())) return *job;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << id << " did not end";
    return v1::Job();
  }

  // Expects `status` to be the refusal of `field` with `reason` in it.
  static void ExpectRefused(const absl::Status& status, const std::string& field,
                            const std::string& reason) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), StartsWith(field + ": "));
    EXPECT_THAT(std::string(status.message()), HasSubstr(reason));
  }

  fs::path root_;
  JobManagerOptions options_;
  std::atomic<int> runs_{0};
  std::unique_ptr<JobManager> manager_;
};

// The reproduction of issue 14 item 1: --output pointed at the input model.
TEST_F(OutputTest, OutputOntoTheInputModelIsRefusedAndTheModelIsUntouched) {
  Start();
  const std::string before = Read(root_ / "victim" / "model.safetensors");
  auto job = manager_->Submit(Spec("file://" + (root_ / "victim").string()), "");
  ExpectRefused(job.status(), "job.output_uri", "exists and is not empty");
  EXPECT_EQ(Stored(), 0);
  // Not even inside it, where the files would sit beside the model's.
  job = manager_->Submit(Spec((root_ / "victim" / "run1").string()), "");
  ExpectRefused(job.status(), "job.output_uri", "inside the model directory");
  EXPECT_FALSE(fs::exists(root_ / "victim" / "run1"));
  EXPECT_EQ(Stored(), 0);
  EXPECT_EQ(runs_.load(), 0);
  EXPECT_EQ(Read(root_ / "victim" / "model.safetensors"), before);

  // The accepted twin: a new directory beside it.
  job = manager_->Submit(Spec((root_ / "run1").string()), "");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->output_uri(), "file://" + (root_ / "run1").string());
  v1::Job done = WaitForEnd(job->id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error_message();
  EXPECT_EQ(Read(root_ / "run1" / "model.safetensors"), "trained");
  EXPECT_EQ(Read(root_ / "victim" / "model.safetensors"), before);
}

TEST_F(OutputTest, OutputUriFollowsTheInputUriRulesAtSubmit) {
  Start();
  fs::create_directories(root_ / "empty");
  fs::create_symlink(fs::temp_directory_path(), root_ / "up");
  struct Case {
    std::string uri;
    std::string reason;
  } cases[] = {
      {"gs://bucket/out", "unsupported URI scheme"},
      {"relative/out", "path must be absolute"},
      {(fs::temp_directory_path() / "ft_elsewhere_out").string(), "outside the data roots"},
      {(root_ / "a" / ".." / ".." / "escaped").string(), "\"..\" are not allowed"},
      {(root_ / "up" / "escaped").string(), "outside the data roots"},
      {(root_ / "train.tsv").string(), "not a directory"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.uri);
    ExpectRefused(manager_->Submit(Spec(c.uri), "").status(), "job.output_uri", c.reason);
  }
  EXPECT_EQ(Stored(), 0);
  EXPECT_FALSE(fs::exists(fs::temp_directory_path() / "ft_elsewhere_out"));
  EXPECT_FALSE(fs::exists(fs::temp_directory_path() / "escaped"));
  // An existing empty directory is fine.
  EXPECT_TRUE(manager_->Submit(Spec((root_ / "empty").string()), "").ok());
}

TEST_F(OutputTest, TheServersOwnStateIsNeverAnOutputOrAnInput) {
  Start();
  const fs::path state = options_.data_dir;
  for (const fs::path& target :
       {state, state / "checkpoints", state / "checkpoints" / "job-000000000001", state / "new",
        state / "outputs"}) {
    SCOPED_TRACE(target);
    auto job = manager_->Submit(Spec(target.string()), "");
    EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
    EXPECT_THAT(std::string(job.status().message()), StartsWith("job.output_uri: "));
  }
  EXPECT_EQ(Stored(), 0);
  // The store as a dataset or model.
  v1::FineTuneJob spec = Spec("");
  spec.mutable_train()->set_uri((state / "freezetune.db").string());
  ExpectRefused(manager_->Submit(spec, "").status(), "job.train.uri", "server's own state");
  v1::PlanFreezeRequest plan;
  plan.set_model_uri("file://" + state.string());
  ExpectRefused(manager_->PlanFreeze(plan, "").status(), "model_uri", "server's own state");
  EXPECT_EQ(Stored(), 0);
  // Below outputs/ is allowed (not shared with any default).
  EXPECT_TRUE(manager_->Submit(Spec((state / "outputs" / "mine").string()), "").ok());
}

TEST_F(OutputTest, TwoJobsNeverShareAnOutputNotEvenNested) {
  Start();
  // Holds the only slot, so the jobs below stay QUEUED and their output
  // directories are not created: only the claims stand in the way.
  v1::FineTuneJob hold = Spec("");
  hold.set_display_name("hold");
  ASSERT_TRUE(manager_->Submit(hold, "").ok());
  fs::create_directories(root_ / "runs");
  auto first = manager_->Submit(Spec((root_ / "runs" / "a").string()), "");
  ASSERT_TRUE(first.ok()) << first.status();
  for (const fs::path& target : {root_ / "runs" / "a", root_ / "runs" / "a" / "b"}) {
    SCOPED_TRACE(target);
    ExpectRefused(manager_->Submit(Spec(target.string()), "").status(), "job.output_uri",
                  "output directory of another job or sweep");
  }
  // Containing it: runs/ is still empty (the first job has not run yet).
  ExpectRefused(manager_->Submit(Spec((root_ / "runs").string()), "").status(), "job.output_uri",
                "contains the output directory");
  // Another job's default output.
  auto second = manager_->Submit(Spec(""), "");
  ASSERT_TRUE(second.ok());
  ExpectRefused(manager_->Submit(Spec(second->output_uri().substr(7)), "").status(),
                "job.output_uri", "output directory of another job or sweep");
  EXPECT_EQ(Stored(), 3);
  // The accepted twin: a sibling.
  EXPECT_TRUE(manager_->Submit(Spec((root_ / "runs" / "b").string()), "").ok());
}

// s3:// outputs are published at success; they are claimed by URI the same
// way (the hooks here do not touch S3).
TEST_F(OutputTest, S3OutputsAreClaimedByUri) {
  Start();
  v1::FineTuneJob hold = Spec("");
  hold.set_display_name("hold");  // keeps the only slot: nothing runs
  ASSERT_TRUE(manager_->Submit(hold, "").ok());
  auto first = manager_->Submit(Spec("s3://models/runs/a/"), "");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->output_uri(), "s3://models/runs/a");
  for (const char* uri : {"s3://models/runs/a", "s3://models/runs/a/b", "s3://models/runs"}) {
    SCOPED_TRACE(uri);
    ExpectRefused(manager_->Submit(Spec(uri), "").status(), "job.output_uri",
                  "output directory of another job or sweep");
  }
  EXPECT_TRUE(manager_->Submit(Spec("s3://models/runs/ab"), "").ok());  // a sibling
  // A tenant has no prefix in a bucket: only the operator can allow it.
  ExpectRefused(manager_->Submit(Spec("s3://models/t/x"), "alice").status(), "job.output_uri",
                "--allow_tenant_output_paths");
}

TEST_F(OutputTest, ClaimsAreAtomicAcrossConcurrentSubmits) {
  Start();
  std::atomic<int> accepted{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto job = manager_->Submit(Spec((root_ / "contested").string()), "");
      (job.ok() ? accepted : refused).fetch_add(1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(accepted.load(), 1);
  EXPECT_EQ(refused.load(), 7);
  EXPECT_EQ(Stored(), 1);
}

TEST_F(OutputTest, ClaimsSurviveARestartAndFailedJobsReleaseTheirs) {
  Start();
  auto kept = manager_->Submit(Spec((root_ / "kept").string()), "");
  v1::FineTuneJob failing = Spec((root_ / "released").string());
  failing.set_display_name("fail");
  auto failed = manager_->Submit(failing, "");
  ASSERT_TRUE(kept.ok() && failed.ok());
  EXPECT_EQ(WaitForEnd(failed->id()).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(WaitForEnd(kept->id()).state(), v1::JOB_STATE_SUCCEEDED);
  // The succeeded job's directory is emptied by hand: only the claim stands.
  fs::remove(root_ / "kept" / "model.safetensors");
  Start();  // a new manager on the same store
  ExpectRefused(manager_->Submit(Spec((root_ / "kept").string()), "").status(), "job.output_uri",
                "already the output directory of another job");
  // The failed job wrote nothing and holds nothing.
  EXPECT_TRUE(manager_->Submit(Spec((root_ / "released").string()), "").ok());
}

TEST_F(OutputTest, TenantOutputsGoUnderTheirPrefix) {
  Start();
  const fs::path outputs = fs::path(options_.data_dir) / "outputs";
  auto job = manager_->Submit(Spec(""), "alice");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->output_uri(), "file://" + (outputs / "alice" / job->id()).string());
  ExpectRefused(manager_->Submit(Spec((root_ / "mine").string()), "alice").status(),
                "job.output_uri", "outside this tenant's output directory");
  ExpectRefused(manager_->Submit(Spec((outputs / "bob" / "x").string()), "alice").status(),
                "job.output_uri", "outside this tenant's output directory");
  EXPECT_TRUE(manager_->Submit(Spec((outputs / "alice" / "named").string()), "alice").ok());
  // A tenant name is one path component, whatever it holds.
  EXPECT_EQ(TenantPathComponent("../x/y"), "%2E.%2Fx%2Fy");
  EXPECT_EQ(TenantPathComponent(".."), "%2E.");
  EXPECT_EQ(TenantPathComponent("team-a.b_c"), "team-a.b_c");

  options_.allow_tenant_output_paths = true;
  Start();
  EXPECT_TRUE(manager_->Submit(Spec((root_ / "mine").string()), "alice").ok());
  ExpectRefused(manager_->Submit(Spec((outputs / "bob" / "x").string()), "alice").status(),
                "job.output_uri", "another tenant's output directory");
}

TEST_F(OutputTest, ATenantCannotReadAnotherTenantsOutputs) {
  options_.allow_tenant_output_paths = true;
  Start();
  auto by_default = manager_->Submit(Spec(""), "alice");
  auto explicit_path = manager_->Submit(Spec((root_ / "alice-run").string()), "alice");
  ASSERT_TRUE(by_default.ok() && explicit_path.ok());
  ASSERT_EQ(WaitForEnd(by_default->id()).state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_EQ(WaitForEnd(explicit_path->id()).state(), v1::JOB_STATE_SUCCEEDED);
  for (const auto& output : {by_default->output_uri(), explicit_path->output_uri()}) {
    SCOPED_TRACE(output);
    v1::FineTuneJob spec = Spec("");
    spec.set_model_uri(output);
    ExpectRefused(manager_->Submit(spec, "bob").status(), "job.model_uri",
                  "not one of this tenant's outputs");
    // Nor as the base of a delta.
    v1::FineTuneJob on_base = Spec("");
    on_base.set_base_model_uri(output);
    ExpectRefused(manager_->Submit(on_base, "bob").status(), "job.base_model_uri",
                  "not one of this tenant's outputs");
    v1::PlanFreezeRequest plan;
    plan.set_model_uri(output);
    ExpectRefused(manager_->PlanFreeze(plan, "bob").status(), "model_uri",
                  "not one of this tenant's outputs");
    // Its owner chains on it.
    EXPECT_TRUE(manager_->Submit(spec, "alice").ok());
    EXPECT_TRUE(manager_->PlanFreeze(plan, "alice").ok());
  }
}

}  // namespace
}  // namespace freezetune::jobs
