// The assembled server: metrics registry and exporter, job manager (store,
// scheduler, event log), the FineTuneService, gRPC health
// (grpc.health.v1) and reflection, listening on one address.
//
// Start() returns a running server; Shutdown() drains it in the order the
// design asks: health NOT_SERVING, no new jobs and running ones stopped
// (they go back to QUEUED for the next start; one still inside a training
// step shortly before the deadline is handed back and its thread abandoned,
// see JobManager::Shutdown and abandoned_runs()), the completion-callback
// worker stopped (pending callbacks stay queued for the next start), then
// the gRPC server's Shutdown(deadline), which waits for in-flight RPCs until
// the deadline and cancels the rest (open WatchJob streams end CANCELLED).
// Until then, health also follows whether the job store can be reached (a
// replica cut off from its PostgreSQL is NOT_SERVING until it is back).
//
// Thread safety: port()/metrics_port()/job_manager() are safe anywhere;
// Shutdown() may be called from any one thread, once or more.
#ifndef FREEZETUNE_SERVER_SERVICE_SERVER_H_
#define FREEZETUNE_SERVER_SERVICE_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/jobs/job_manager.h"
#include "server/metrics/metrics.h"
#include "server/metrics/notify_metrics.h"
#include "server/notify/notifier.h"
#include "server/notify/sqlite_queue.h"
#include "server/service/finetune_service.h"
#include "server/store/store_probe.h"

namespace freezetune::service {

struct ServerOptions {
  // host:port; port 0 picks a free port (read it back with port()).
  std::string listen_address = "127.0.0.1:50051";
  jobs::JobManagerOptions jobs;
  // The train layer; main() passes jobs::DefaultTrainHooks(prefix cache bytes).
  jobs::TrainHooks hooks;
  metrics::MetricsOptions metrics;
  ServiceOptions service;
  // Freeze sweeps (SubmitSweep, ...); kept in the job manager's store.
  sweeps::SweepManagerOptions sweeps;
  // Completion callbacks (server/notify): secrets, URL rules, backoff. The
  // hooks are set by Start() (metrics, logs). Their queue is
  // <jobs.data_dir>/notifications.db.
  notify::NotifierOptions notify;
  // TLS: PEM files. Empty cert and key: plaintext. With a client CA, clients
  // must present a certificate it signed (mutual TLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Largest request or response message; a bigger request fails with
  // RESOURCE_EXHAUSTED before it reaches the service.
  int max_message_bytes = 16 << 20;
  // Concurrent streams (calls) per HTTP/2 connection; further calls wait on
  // the client until one ends. 0: gRPC's default (unlimited).
  int max_concurrent_streams = 1000;
  // Keepalive enforcement: a client pinging more often than this (with no
  // data in between) gets GOAWAY "too_many_pings" after a few strikes.
  absl::Duration keepalive_min_ping_interval = absl::Seconds(60);
  // Whether clients may ping while they have no call open.
  bool keepalive_permit_without_calls = false;
  // How often the server pings idle connections to find dead clients
  // (and half-open WatchJob streams); 0: gRPC's default (2 hours).
  absl::Duration keepalive_time = absl::Minutes(5);
  // How often readiness checks the job store (store/store_probe.h): health
  // is NOT_SERVING while the store cannot be reached. 0: never checked.
  absl::Duration store_probe_interval = absl::Seconds(5);
};

class Server {
 public:
  // UNAVAILABLE when an address cannot be bound; INVALID_ARGUMENT for
  // unreadable or inconsistent TLS files; the job store's errors as they are.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);
  // If Shutdown has not run: waits for running jobs to stop (at most one
  // step each) and cancels in-flight RPCs at once.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return port_; }
  int metrics_port() const { return metrics_ != nullptr ? metrics_->port() : 0; }
  jobs::JobManager* job_manager() const { return manager_.get(); }
  sweeps::SweepManager* sweep_manager() const { return sweeps_.get(); }

  // Health status of "" and "freezetune.v1.FineTuneService". Besides
  // this, the server reports NOT_SERVING on its own while the job store
  // refuses writes (store.h, issue 14.3) and from Shutdown on.
  void SetServing(bool serving);
  // The store probe's report; ignored once draining.
  void OnStoreReachable(bool reachable);
  // The store's writability (Store::AddWriteListener); ignored once
  // draining.
  void OnStoreWritable(bool writable);

  // The drain, all of it by `deadline`: running jobs until shortly before
  // it (then handed back), in-flight RPCs until it.
  void Shutdown(absl::Time deadline);
  // After Shutdown: training threads still running (JobManager::Shutdown).
  // When not 0 the process must end with std::_Exit, not destroy the
  // server (its destructor would wait for those steps).
  size_t abandoned_runs() const { return manager_ != nullptr ? manager_->abandoned_runs() : 0; }

 private:
  Server() = default;
  // Shutdown's steps: jobs stop (or are handed back) by `jobs_deadline`,
  // RPCs are cancelled at `rpc_deadline`. Runs once.
  void Drain(absl::Time jobs_deadline, absl::Time rpc_deadline);

  std::unique_ptr<metrics::Metrics> metrics_;
  std::unique_ptr<metrics::NotifyMetrics> notify_metrics_;
  // Declared before the managers, whose end hooks call into the notifier:
  // destroyed after them.
  std::unique_ptr<notify::SqliteQueue> notify_queue_;
  std::unique_ptr<notify::Notifier> notifier_;
  std::unique_ptr<jobs::JobManager> manager_;
  // Declared after manager_: destroyed (monitor joined) before it.
  std::unique_ptr<sweeps::SweepManager> sweeps_;
  std::unique_ptr<FineTuneServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  // Declared after manager_ (it pings manager_'s store): destroyed first.
  std::unique_ptr<store::StoreProbe> store_probe_;
  int port_ = 0;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
  // Health = the store can be reached (store probe) and accepts writes
  // (store write listener, issue 14.3), until draining starts. Not
  // shutdown_mu_: Shutdown() joins the probe while holding that; a leaf
  // otherwise (held only across the health service's SetServingStatus).
  absl::Mutex serving_mu_;
  bool draining_ ABSL_GUARDED_BY(serving_mu_) = false;
  bool store_reachable_ ABSL_GUARDED_BY(serving_mu_) = true;
  bool store_writable_ ABSL_GUARDED_BY(serving_mu_) = true;
};

}  // namespace freezetune::service

#endif  // FREEZETUNE_SERVER_SERVICE_SERVER_H_
