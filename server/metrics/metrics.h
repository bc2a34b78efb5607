// The server's Prometheus metrics: every family is built once, here, with
// bounded label sets (job states, gRPC method and code names, and one series
// per RUNNING job, removed when the job ends), and served on its own port by
// HttpExposer (see there for why not prometheus::Exposer).
//
// Names follow Prometheus conventions: freezetune_ prefix, base units
// (seconds), _total for counters. The endpoint also serves the standard
// process_* series (process_collector.h).
//
// Thread safety: every method may be called from any thread. prometheus-cpp
// metrics are atomic; the per-job map is guarded by a mutex.
#ifndef FREEZETUNE_SERVER_METRICS_METRICS_H_
#define FREEZETUNE_SERVER_METRICS_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/http_exposer.h"

namespace freezetune::metrics {

// Job states as metric label values (lower case, stable).
enum class JobStateLabel { kQueued, kRunning, kSucceeded, kFailed, kCancelled };
const char* ToLabel(JobStateLabel state);

struct BuildInfo {
  std::string version;
  std::string torch;
  std::string blas;
  std::string device;
};

struct MetricsOptions {
  // host:port for the /metrics endpoint; port 0 picks a free one (IPv4
  // hosts only; read it back with Metrics::port()). Empty
  // disables the endpoint (the registry still works, e.g. in tests).
  std::string listen_address = "127.0.0.1:9464";
  BuildInfo build_info;
  // Labels of the freezetune_blas_info series (CPU model, OpenBLAS core,
  // whether the selection changed it: base::ProcessTuning::MetricLabels());
  // empty: no such series.
  std::vector<std::pair<std::string, std::string>> blas_info;
  // When set, /metrics answers only requests with "Authorization: Bearer
  // <token>" (job ids are labels: keep them from whoever can reach the port).
  std::string bearer_token;
};

class Metrics {
 public:
  // Builds every family and, unless options.listen_address is empty, starts
  // the HTTP endpoint. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const MetricsOptions& options);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Port the endpoint listens on; 0 when it is disabled.
  int port() const { return port_; }
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Jobs.
  void SetJobsInState(JobStateLabel state, int64_t count);
  void JobStateChanged(JobStateLabel from, JobStateLabel to);  // moves one job between gauges
  void JobCreated();                                           // +1 queued, +1 submitted
  void JobFinished(JobStateLabel state);                       // finished_total{state}
  // Labels the queue's gauges (freezetune_jobs, queue_depth,
  // queue_oldest_age_seconds) with queue="<name>": one name per queue, so
  // that replicas sharing a queue can be told apart from servers with queues
  // of their own. Call once, before anything sets those gauges.
  void SetQueueName(const std::string& queue);
  void SetQueueDepth(int64_t depth);
  // A store write the engine refused (ok = false: failures_total + 1,
  // store_writable 0), or the first one that succeeded after (writable 1).
  void StoreWrite(bool ok);
  // A corrupt store record was quarantined (its job or sweep marked FAILED).
  void StoreRecordQuarantined();

  // The shared queue (issue 12.2). A lease renewal's outcome: "renewed",
  // "lost" (another replica took the job or sweep over) or "error" (the
  // store did not answer).
  void LeaseRenewal(const std::string& result);
  // A job or sweep whose lease expired was taken over by this replica.
  void LeaseTakeover();
  // How long one claim of a queued job took (the database round trip).
  void JobClaim(double seconds);

  // One optimizer step a job took in this process: counted in
  // train_steps_total and train_samples_total, and its duration observed in
  // the step-duration histogram (one observation per step).
  void TrainStep(double seconds, int64_t samples);
  // Latest training loss, learning rate and progress of a running job.
  void TrainProgress(const std::string& job_id, double loss, double learning_rate,
                     double progress);
  // Latest validation result of a running job.
  void EvalProgress(const std::string& job_id, double loss, double accuracy);
  // A running job's device memory (CUDA caching allocator): bytes allocated
  // by tensors, reserved by the allocator, and the peak allocated.
  void DeviceMemory(const std::string& job_id, int64_t allocated, int64_t reserved, int64_t peak);
  // Drops the job's per-job series.
  void JobEnded(const std::string& job_id);
  // Age of the oldest queued job (0 when none).
  void SetQueueOldestAge(double seconds);

  // Called before every scrape (on the scrape thread) to refresh gauges that
  // are cheaper to compute on demand. At most one hook; SetCollectHook(nullptr)
  // returns only after a running hook has finished, so an owner can clear it
  // in its destructor.
  void SetCollectHook(std::function<void()> hook);
  // Runs the hook; HttpExposer calls it before serializing.
  void RunCollectHook();

  // Sweeps. freezetune_sweeps{state} with state one of "running",
  // "succeeded", "failed", "cancelled".
  void SetSweepsInState(const std::string& state, int64_t count);
  // Per running sweep: trials ended out of total, and the best selection
  // metric so far (the best-metric series exists once a trial evaluated).
  void SweepProgress(const std::string& sweep_id, int64_t trials_done, int64_t trials_total,
                     bool has_best, double best_metric);
  // Drops the sweep's per-sweep series.
  void SweepEnded(const std::string& sweep_id);

  // gRPC.
  void RpcFinished(const std::string& method, const std::string& code, double seconds);
  void WatchStreamOpened();
  void WatchStreamClosed();

 private:
  Metrics() = default;
  absl::Status StartExposer(const std::string& address, const std::string& bearer_token);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_;
  std::unique_ptr<HttpExposer> exposer_;
  int port_ = 0;

  prometheus::Family<prometheus::Gauge>* jobs_by_state_ = nullptr;
  std::map<JobStateLabel, prometheus::Gauge*> jobs_gauges_;
  prometheus::Counter* jobs_submitted_ = nullptr;
  prometheus::Family<prometheus::Counter>* jobs_finished_ = nullptr;
  std::map<JobStateLabel, prometheus::Counter*> finished_counters_;
  prometheus::Family<prometheus::Gauge>* queue_depth_family_ = nullptr;
  prometheus::Gauge* queue_depth_ = nullptr;
  prometheus::Gauge* store_writable_ = nullptr;
  prometheus::Counter* store_write_failures_ = nullptr;
  prometheus::Counter* store_quarantined_ = nullptr;
  prometheus::Family<prometheus::Counter>* lease_renewals_ = nullptr;
  prometheus::Counter* lease_takeovers_ = nullptr;
  prometheus::Histogram* claim_seconds_ = nullptr;
  prometheus::Counter* train_steps_ = nullptr;
  prometheus::Counter* train_samples_ = nullptr;
  prometheus::Histogram* step_seconds_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_loss_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_lr_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_progress_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_last_step_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_eval_loss_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_eval_accuracy_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_device_memory_ = nullptr;
  prometheus::Family<prometheus::Gauge>* queue_oldest_age_family_ = nullptr;
  prometheus::Gauge* queue_oldest_age_ = nullptr;
  prometheus::Family<prometheus::Counter>* rpc_requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* rpc_seconds_ = nullptr;
  prometheus::Gauge* watch_streams_ = nullptr;
  prometheus::Family<prometheus::Gauge>* sweeps_by_state_ = nullptr;
  prometheus::Family<prometheus::Gauge>* sweep_trials_done_ = nullptr;
  prometheus::Family<prometheus::Gauge>* sweep_trials_total_ = nullptr;
  prometheus::Family<prometheus::Gauge>* sweep_best_metric_ = nullptr;

  // Created on a job's first TrainMetrics/EvalMetrics; null until then.
  struct JobSeries {
    prometheus::Gauge* loss = nullptr;
    prometheus::Gauge* learning_rate = nullptr;
    prometheus::Gauge* progress = nullptr;
    prometheus::Gauge* last_step = nullptr;
    prometheus::Gauge* eval_loss = nullptr;
    prometheus::Gauge* eval_accuracy = nullptr;
    prometheus::Gauge* memory_allocated = nullptr;
    prometheus::Gauge* memory_reserved = nullptr;
    prometheus::Gauge* memory_peak = nullptr;
  };
  absl::Mutex mu_;
  std::map<std::string, JobSeries> job_series_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, prometheus::Histogram*> rpc_histograms_ ABSL_GUARDED_BY(mu_);
  // Held while the hook runs, so clearing it waits for a running scrape.
  absl::Mutex hook_mu_;
  std::function<void()> collect_hook_ ABSL_GUARDED_BY(hook_mu_);
};

}  // namespace freezetune::metrics

#endif  // FREEZETUNE_SERVER_METRICS_METRICS_H_
