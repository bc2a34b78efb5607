#include "server/metrics/metrics.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/metrics/process_collector.h"

namespace freezetune::metrics {
namespace {

constexpr JobStateLabel kAllStates[] = {JobStateLabel::kQueued, JobStateLabel::kRunning,
                                        JobStateLabel::kSucceeded, JobStateLabel::kFailed,
                                        JobStateLabel::kCancelled};

}  // namespace

const char* ToLabel(JobStateLabel state) {
  switch (state) {
    case JobStateLabel::kQueued:
      return "queued";
    case JobStateLabel::kRunning:
      return "running";
    case JobStateLabel::kSucceeded:
      return "succeeded";
    case JobStateLabel::kFailed:
      return "failed";
    case JobStateLabel::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const MetricsOptions& options) {
  std::unique_ptr<Metrics> m(new Metrics());
  m->registry_ = std::make_shared<prometheus::Registry>();
  prometheus::Registry& r = *m->registry_;

  m->jobs_by_state_ = &prometheus::BuildGauge()
                           .Name("freezetune_jobs")
                           .Help("Jobs in the server's store, by queue (replicas sharing a "
                                 "PostgreSQL store report the same queue) and state.")
                           .Register(r);
  m->jobs_finished_ = &prometheus::BuildCounter()
                           .Name("freezetune_jobs_finished_total")
                           .Help("Jobs that reached a final state, by state.")
                           .Register(r);
  for (JobStateLabel s : kAllStates) {
    m->jobs_gauges_[s] = &m->jobs_by_state_->Add({{"state", ToLabel(s)}});
    if (s != JobStateLabel::kQueued && s != JobStateLabel::kRunning) {
      m->finished_counters_[s] = &m->jobs_finished_->Add({{"state", ToLabel(s)}});
    }
  }
  m->jobs_submitted_ = &prometheus::BuildCounter()
                            .Name("freezetune_jobs_submitted_total")
                            .Help("Jobs accepted by SubmitJob.")
                            .Register(r)
                            .Add({});
  m->queue_depth_family_ = &prometheus::BuildGauge()
                                .Name("freezetune_queue_depth")
                                .Help("Jobs waiting for a device slot, by queue (replicas "
                                      "sharing a PostgreSQL store report the same queue).")
                                .Register(r);
  m->queue_depth_ = &m->queue_depth_family_->Add({});
  m->store_writable_ = &prometheus::BuildGauge()
                            .Name("freezetune_store_writable")
                            .Help("1 while the job store accepts writes, 0 from a write it "
                                  "refused (disk full, I/O error) until one succeeds.")
                            .Register(r)
                            .Add({});
  m->store_writable_->Set(1);
  m->store_write_failures_ = &prometheus::BuildCounter()
                                  .Name("freezetune_store_write_failures_total")
                                  .Help("Job store writes the storage engine refused.")
                                  .Register(r)
                                  .Add({});
  m->store_quarantined_ = &prometheus::BuildCounter()
                               .Name("freezetune_store_quarantined_records_total")
                               .Help("Job store records that did not parse and were quarantined "
                                     "(their job or sweep marked FAILED).")
                               .Register(r)
                               .Add({});
  m->lease_renewals_ = &prometheus::BuildCounter()
                            .Name("freezetune_lease_renewals_total")
                            .Help("Lease renewals of the jobs and sweeps this replica holds on "
                                  "the shared queue, by result: renewed, lost (another replica "
                                  "took it over), error (the store did not answer).")
                            .Register(r);
  for (const char* result : {"renewed", "lost", "error"}) m->lease_renewals_->Add({{"result", result}});
  m->lease_takeovers_ = &prometheus::BuildCounter()
                             .Name("freezetune_lease_takeovers_total")
                             .Help("Jobs and sweeps whose lease expired that this replica took "
                                   "over (their replica died or lost the store).")
                             .Register(r)
                             .Add({});
  m->claim_seconds_ = &prometheus::BuildHistogram()
                           .Name("freezetune_job_claim_duration_seconds")
                           .Help("Duration of one claim of a queued job from the shared queue.")
                           .Register(r)
                           .Add({}, prometheus::Histogram::BucketBoundaries{
                                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25, 0.5, 1, 2.5});
  m->train_steps_ = &prometheus::BuildCounter()
                         .Name("freezetune_train_steps_total")
                         .Help("Optimizer steps taken by all jobs.")
                         .Register(r)
                         .Add({});
  m->train_samples_ = &prometheus::BuildCounter()
                           .Name("freezetune_train_samples_total")
                           .Help("Training examples processed by all jobs.")
                           .Register(r)
                           .Add({});
  m->step_seconds_ = &prometheus::BuildHistogram()
                          .Name("freezetune_train_step_duration_seconds")
                          .Help("Duration of one optimizer step.")
                          .Register(r)
                          .Add({}, prometheus::Histogram::BucketBoundaries{
                                       0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                       1, 2.5, 5, 10, 30});
  m->job_loss_ = &prometheus::BuildGauge()
                      .Name("freezetune_job_train_loss")
                      .Help("Latest mean training loss of a running job.")
                      .Register(r);
  m->job_lr_ = &prometheus::BuildGauge()
                    .Name("freezetune_job_learning_rate")
                    .Help("Current peak-group learning rate of a running job.")
                    .Register(r);
  m->job_progress_ = &prometheus::BuildGauge()
                          .Name("freezetune_job_progress_ratio")
                          .Help("Fraction of a running job's total steps done (0..1).")
                          .Register(r);
  m->job_last_step_ = &prometheus::BuildGauge()
                           .Name("freezetune_job_last_step_timestamp_seconds")
                           .Help("Unix time of a running job's latest TrainMetrics event.")
                           .Register(r);
  m->job_eval_loss_ = &prometheus::BuildGauge()
                           .Name("freezetune_job_eval_loss")
                           .Help("Validation loss of a running job at its last evaluation.")
                           .Register(r);
  m->sweeps_by_state_ = &prometheus::BuildGauge()
                             .Name("freezetune_sweeps")
                             .Help("Freeze sweeps by state.")
                             .Register(r);
  for (const char* state : {"running", "succeeded", "failed", "cancelled"}) {
    m->sweeps_by_state_->Add({{"state", state}});
  }
  m->sweep_trials_done_ = &prometheus::BuildGauge()
                               .Name("freezetune_sweep_trials_done")
                               .Help("Trials of a running sweep that have ended.")
                               .Register(r);
  m->sweep_trials_total_ = &prometheus::BuildGauge()
                                .Name("freezetune_sweep_trials")
                                .Help("Trials of a running sweep.")
                                .Register(r);
  m->sweep_best_metric_ = &prometheus::BuildGauge()
                               .Name("freezetune_sweep_best_metric")
                               .Help("Best selection metric of a running sweep so far.")
                               .Register(r);
  m->job_device_memory_ = &prometheus::BuildGauge()
                               .Name("freezetune_job_device_memory_bytes")
                               .Help("Device memory of a running job's GPU (CUDA caching "
                                     "allocator): kind=allocated|reserved|peak.")
                               .Register(r);
  m->job_eval_accuracy_ = &prometheus::BuildGauge()
                               .Name("freezetune_job_eval_accuracy")
                               .Help("Validation accuracy (0..1) of a running job at its last "
                                     "evaluation.")
                               .Register(r);
  m->queue_oldest_age_family_ = &prometheus::BuildGauge()
                                     .Name("freezetune_queue_oldest_age_seconds")
                                     .Help("Age of the oldest queued job, by queue; 0 when "
                                           "the queue is empty.")
                                     .Register(r);
  m->queue_oldest_age_ = &m->queue_oldest_age_family_->Add({});
  m->rpc_requests_ = &prometheus::BuildCounter()
                          .Name("freezetune_grpc_requests_total")
                          .Help("Finished gRPC calls by method and status code.")
                          .Register(r);
  m->rpc_seconds_ = &prometheus::BuildHistogram()
                         .Name("freezetune_grpc_request_duration_seconds")
                         .Help("gRPC call latency by method (WatchJob: whole stream).")
                         .Register(r);
  m->watch_streams_ = &prometheus::BuildGauge()
                           .Name("freezetune_watch_streams")
                           .Help("Open WatchJob and WatchSweep streams.")
                           .Register(r)
                           .Add({});
  prometheus::BuildGauge()
      .Name("freezetune_build_info")
      .Help("Build and runtime information; the value is always 1.")
      .Register(r)
      .Add({{"version", options.build_info.version},
            {"torch", options.build_info.torch},
            {"blas", options.build_info.blas},
            {"device", options.build_info.device}})
      .Set(1);
  if (!options.blas_info.empty()) {
    std::map<std::string, std::string> labels(options.blas_info.begin(), options.blas_info.end());
    prometheus::BuildGauge()
        .Name("freezetune_blas_info")
        .Help("The CPU and the BLAS kernel (OpenBLAS core) training runs on, and whether the "
              "start-up selection changed it; the value is always 1.")
        .Register(r)
        .Add(labels)
        .Set(1);
  }

  m->process_ = std::make_shared<ProcessCollector>();
  if (!options.listen_address.empty()) {
    FT_RETURN_IF_ERROR(m->StartExposer(options.listen_address, options.bearer_token));
  }
  return m;
}

absl::Status Metrics::StartExposer(const std::string& address, const std::string& bearer_token) {
  FT_ASSIGN_OR_RETURN(exposer_, HttpExposer::Start(address, {registry_, process_},
                                                   [this] { RunCollectHook(); }, bearer_token));
  port_ = exposer_->port();
  return absl::OkStatus();
}

Metrics::~Metrics() {
  // The endpoint reads the registry from its own thread: stop it first.
  exposer_.reset();
  // The last RpcFinished ran on a gRPC thread before the server's Wait
  // returned; taking the lock orders the maps' destruction after it in a
  // way ThreadSanitizer can see too.
  absl::MutexLock lock(&mu_);
}

void Metrics::SetJobsInState(JobStateLabel state, int64_t count) {
  jobs_gauges_.at(state)->Set(static_cast<double>(count));
}

void Metrics::JobStateChanged(JobStateLabel from, JobStateLabel to) {
  if (from == to) return;
  jobs_gauges_.at(from)->Decrement();
  jobs_gauges_.at(to)->Increment();
}

void Metrics::JobCreated() {
  jobs_submitted_->Increment();
  jobs_gauges_.at(JobStateLabel::kQueued)->Increment();
}

void Metrics::JobFinished(JobStateLabel state) {
  auto it = finished_counters_.find(state);
  if (it != finished_counters_.end()) it->second->Increment();
}

void Metrics::SetQueueName(const std::string& queue) {
  for (auto& [state, gauge] : jobs_gauges_) {
    jobs_by_state_->Remove(gauge);
    gauge = &jobs_by_state_->Add({{"queue", queue}, {"state", ToLabel(state)}});
  }
  queue_depth_family_->Remove(queue_depth_);
  queue_depth_ = &queue_depth_family_->Add({{"queue", queue}});
  queue_oldest_age_family_->Remove(queue_oldest_age_);
  queue_oldest_age_ = &queue_oldest_age_family_->Add({{"queue", queue}});
}

void Metrics::SetQueueDepth(int64_t depth) { queue_depth_->Set(static_cast<double>(depth)); }

void Metrics::StoreRecordQuarantined() { store_quarantined_->Increment(); }

void Metrics::LeaseRenewal(const std::string& result) {
  lease_renewals_->Add({{"result", result}}).Increment();
}

void Metrics::LeaseTakeover() { lease_takeovers_->Increment(); }

void Metrics::JobClaim(double seconds) { claim_seconds_->Observe(seconds); }

void Metrics::StoreWrite(bool ok) {
  if (!ok) store_write_failures_->Increment();
  store_writable_->Set(ok ? 1 : 0);
}

void Metrics::TrainStep(double seconds, int64_t samples) {
  train_steps_->Increment();
  if (samples > 0) train_samples_->Increment(static_cast<double>(samples));
  if (seconds >= 0) step_seconds_->Observe(seconds);
}

void Metrics::TrainProgress(const std::string& job_id, double loss, double learning_rate,
                            double progress) {
  absl::MutexLock lock(&mu_);
  JobSeries& series = job_series_[job_id];
  prometheus::Labels labels{{"job_id", job_id}};
  if (series.loss == nullptr) {
    series.loss = &job_loss_->Add(labels);
    series.learning_rate = &job_lr_->Add(labels);
    series.progress = &job_progress_->Add(labels);
    series.last_step = &job_last_step_->Add(labels);
  }
  series.loss->Set(loss);
  series.learning_rate->Set(learning_rate);
  series.progress->Set(progress);
  series.last_step->SetToCurrentTime();
}

void Metrics::EvalProgress(const std::string& job_id, double loss, double accuracy) {
  absl::MutexLock lock(&mu_);
  JobSeries& series = job_series_[job_id];
  if (series.eval_loss == nullptr) {
    prometheus::Labels labels{{"job_id", job_id}};
    series.eval_loss = &job_eval_loss_->Add(labels);
    series.eval_accuracy = &job_eval_accuracy_->Add(labels);
  }
  series.eval_loss->Set(loss);
  series.eval_accuracy->Set(accuracy);
}

void Metrics::DeviceMemory(const std::string& job_id, int64_t allocated, int64_t reserved,
                           int64_t peak) {
  absl::MutexLock lock(&mu_);
  JobSeries& series = job_series_[job_id];
  if (series.memory_allocated == nullptr) {
    series.memory_allocated = &job_device_memory_->Add({{"job_id", job_id}, {"kind", "allocated"}});
    series.memory_reserved = &job_device_memory_->Add({{"job_id", job_id}, {"kind", "reserved"}});
    series.memory_peak = &job_device_memory_->Add({{"job_id", job_id}, {"kind", "peak"}});
  }
  series.memory_allocated->Set(static_cast<double>(allocated));
  series.memory_reserved->Set(static_cast<double>(reserved));
  series.memory_peak->Set(static_cast<double>(peak));
}

void Metrics::SetQueueOldestAge(double seconds) { queue_oldest_age_->Set(seconds); }

void Metrics::SetCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&hook_mu_);
  collect_hook_ = std::move(hook);
}

void Metrics::RunCollectHook() {
  absl::MutexLock lock(&hook_mu_);
  if (collect_hook_) collect_hook_();
}

void Metrics::JobEnded(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = job_series_.find(job_id);
  if (it == job_series_.end()) return;
  const JobSeries& s = it->second;
  if (s.loss != nullptr) job_loss_->Remove(s.loss);
  if (s.learning_rate != nullptr) job_lr_->Remove(s.learning_rate);
  if (s.progress != nullptr) job_progress_->Remove(s.progress);
  if (s.last_step != nullptr) job_last_step_->Remove(s.last_step);
  if (s.eval_loss != nullptr) job_eval_loss_->Remove(s.eval_loss);
  if (s.eval_accuracy != nullptr) job_eval_accuracy_->Remove(s.eval_accuracy);
  for (prometheus::Gauge* g : {s.memory_allocated, s.memory_reserved, s.memory_peak}) {
    if (g != nullptr) job_device_memory_->Remove(g);
  }
  job_series_.erase(it);
}

void Metrics::SetSweepsInState(const std::string& state, int64_t count) {
  sweeps_by_state_->Add({{"state", state}}).Set(static_cast<double>(count));
}

void Metrics::SweepProgress(const std::string& sweep_id, int64_t trials_done,
                            int64_t trials_total, bool has_best, double best_metric) {
  const std::map<std::string, std::string> labels = {{"sweep_id", sweep_id}};
  sweep_trials_done_->Add(labels).Set(static_cast<double>(trials_done));
  sweep_trials_total_->Add(labels).Set(static_cast<double>(trials_total));
  if (has_best) sweep_best_metric_->Add(labels).Set(best_metric);
}

void Metrics::SweepEnded(const std::string& sweep_id) {
  const std::map<std::string, std::string> labels = {{"sweep_id", sweep_id}};
  sweep_trials_done_->Remove(&sweep_trials_done_->Add(labels));
  sweep_trials_total_->Remove(&sweep_trials_total_->Add(labels));
  sweep_best_metric_->Remove(&sweep_best_metric_->Add(labels));
}

void Metrics::RpcFinished(const std::string& method, const std::string& code, double seconds) {
  rpc_requests_->Add({{"method", method}, {"code", code}}).Increment();
  prometheus::Histogram* histogram = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = rpc_histograms_.find(method);
    if (it == rpc_histograms_.end()) {
      it = rpc_histograms_
               .emplace(method, &rpc_seconds_->Add({{"method", method}},
                                                   prometheus::Histogram::BucketBoundaries{
                                                       0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                       0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60,
                                                       300, 3600}))
               .first;
    }
    histogram = it->second;
  }
  histogram->Observe(seconds);
}

void Metrics::WatchStreamOpened() { watch_streams_->Increment(); }
void Metrics::WatchStreamClosed() { watch_streams_->Decrement(); }

}  // namespace freezetune::metrics
