// The training metrics a JobManager records (issue 14 item 7), with a runner
// that behaves like a resumed trainer: its TrainMetrics carry the global step
// numbers 41..43 (the checkpoint held 40), and it reports each of the three
// steps it takes through RunContext.on_step.
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/jobs/job_manager.h"

namespace freezetune::jobs {
namespace {

std::string Scrape(metrics::Metrics& m) {
  return prometheus::TextSerializer().Serialize(m.registry()->Collect());
}

TEST(JobMetricsTest, AResumedJobCountsOnlyTheStepsItTakesAndEachStepOnce) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("ft_jobs_metrics_" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  metrics::MetricsOptions metrics_options;
  metrics_options.listen_address = "";  // the registry only
  auto metrics = metrics::Metrics::Create(metrics_options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  TrainHooks hooks;
  hooks.validate = [](const v1::FineTuneJob&, const data::UriOptions&,
                      const train::JobLimits&) { return absl::OkStatus(); };
  hooks.plan_freeze = [](const v1::PlanFreezeRequest&, const data::UriOptions&)
      -> absl::StatusOr<v1::PlanFreezeResponse> { return v1::PlanFreezeResponse(); };
  hooks.run = [](const v1::FineTuneJob&, const train::RunContext& ctx)
      -> absl::StatusOr<v1::JobResult> {
    for (int64_t step = 41; step <= 43; ++step) {
      ctx.on_step(0.25 * static_cast<double>(step - 40), 16);  // 0.25, 0.5, 0.75 s
      v1::JobEvent e;
      e.mutable_train()->set_step(step);
      e.mutable_train()->set_total_steps(100);
      e.mutable_train()->set_loss(0.5f);
      ctx.emit(e);
    }
    return v1::JobResult();
  };
  JobManagerOptions options;
  options.data_dir = dir;
  auto manager = JobManager::Create(options, hooks, metrics->get());
  ASSERT_TRUE(manager.ok()) << manager.status();
  v1::FineTuneJob spec;
  spec.set_model_uri("/m");
  auto job = (*manager)->Submit(spec, "");
  ASSERT_TRUE(job.ok()) << job.status();
  for (int i = 0; i < 2000; ++i) {
    auto got = (*manager)->Get(job->id());
    if (got.ok() && store::IsTerminal(got->state())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ((*manager)->Get(job->id())->state(), v1::JOB_STATE_SUCCEEDED);
  const std::string text = Scrape(**metrics);
  // Before: 43 steps (the first event's step number minus zero) and one
  // mean observation per event.
  EXPECT_NE(text.find("freezetune_train_steps_total 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("freezetune_train_samples_total 48\n"), std::string::npos) << text;
  EXPECT_NE(text.find("freezetune_train_step_duration_seconds_count 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("freezetune_train_step_duration_seconds_sum 1.5\n"), std::string::npos)
      << text;
  // Each step lands in its own bucket: 0.25 in le=0.25, 0.5 in le=0.5, 0.75 in le=1.
  EXPECT_NE(text.find("freezetune_train_step_duration_seconds_bucket{le=\"0.25\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("freezetune_train_step_duration_seconds_bucket{le=\"0.5\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("freezetune_train_step_duration_seconds_bucket{le=\"1\"} 3\n"),
            std::string::npos);
  manager->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace freezetune::jobs
