// The server's Prometheus metrics: every family is built once, here, with
// bounded label sets (job states, gRPC method and code names, and one series
// per RUNNING job, removed when the job ends), and served on its own port by
// HttpExposer (see there for why not prometheus::Exposer).
//
// Names follow Prometheus conventions: freezetune_ prefix, base units
// (seconds), _total for counters.
//
// Thread safety: every method may be called from any thread. prometheus-cpp
// metrics are atomic; the per-job map is guarded by a mutex.
#ifndef FREEZETUNE_SERVER_METRICS_METRICS_H_
#define FREEZETUNE_SERVER_METRICS_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

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
  void SetQueueDepth(int64_t depth);

  // Training progress of a running job. `steps` and `samples` are increments
  // since the previous call; `step_seconds` the mean duration of those steps.
  void TrainProgress(const std::string& job_id, int64_t steps, int64_t samples,
                     double step_seconds, double loss, double learning_rate, double progress);
  // Drops the job's per-job series.
  void JobEnded(const std::string& job_id);

  // gRPC.
  void RpcFinished(const std::string& method, const std::string& code, double seconds);
  void WatchStreamOpened();
  void WatchStreamClosed();

 private:
  Metrics() = default;
  absl::Status StartExposer(const std::string& address);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<HttpExposer> exposer_;
  int port_ = 0;

  prometheus::Family<prometheus::Gauge>* jobs_by_state_ = nullptr;
  std::map<JobStateLabel, prometheus::Gauge*> jobs_gauges_;
  prometheus::Counter* jobs_submitted_ = nullptr;
  prometheus::Family<prometheus::Counter>* jobs_finished_ = nullptr;
  std::map<JobStateLabel, prometheus::Counter*> finished_counters_;
  prometheus::Gauge* queue_depth_ = nullptr;
  prometheus::Counter* train_steps_ = nullptr;
  prometheus::Counter* train_samples_ = nullptr;
  prometheus::Histogram* step_seconds_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_loss_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_lr_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_progress_ = nullptr;
  prometheus::Family<prometheus::Counter>* rpc_requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* rpc_seconds_ = nullptr;
  prometheus::Gauge* watch_streams_ = nullptr;

  struct JobSeries {
    prometheus::Gauge* loss;
    prometheus::Gauge* learning_rate;
    prometheus::Gauge* progress;
  };
  absl::Mutex mu_;
  std::map<std::string, JobSeries> job_series_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, prometheus::Histogram*> rpc_histograms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace freezetune::metrics

#endif  // FREEZETUNE_SERVER_METRICS_METRICS_H_
