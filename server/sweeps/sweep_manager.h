// Freeze sweeps: one FineTuneJob template, several freeze candidates, one
// trial job per candidate, a results table and a winner. This file is the
// coordination (I/O); the decisions are sweep_policy.h's.
//
// A SweepManager sits on top of a JobManager and its store: each trial is a
// normal job (Job.sweep_id links it), so scheduling, durability and job
// events come from the JobManager. Submit() writes the sweep and all its
// trial jobs in ONE store transaction (a crash leaves all or nothing), and is
// idempotent on (tenant, SweepSpec.client_request_id) as SubmitJob is.
//
// A monitor thread follows the running sweeps' trials (by polling the jobs
// every `poll_interval`, which also makes recovery after a restart
// trivial), fills the table, appends SweepEvents to the store, and when every
// trial has ended picks the winner (ties go to fewer trainable parameters,
// then to the earlier candidate), copies the winner's output directory to
// the sweep's output directory and writes sweep.json (the final Sweep as
// JSON) there.
//
// Replicas (issue 12.2): over a shared queue (a PostgreSQL store) each
// RUNNING sweep is driven by one replica at a time, the one holding its
// lease (store::Store::ClaimSweeps). Every replica's monitor renews its
// leases and claims the sweeps nobody drives (new ones, or those of a
// replica that died) every JobManagerOptions.lease_renew_interval, and
// every sweep write carries the lease epoch. Cancel on another replica
// cancels the trials at once and asks the driver, which records the sweep
// CANCELLED at its next renewal. The winner's output is copied from where
// its trial wrote it: with several replicas that must be storage they all
// mount at the same path.
//
// Durability: the store is the source of truth (Get, List and ReadEvents
// read it). At Create(), RUNNING sweeps are followed again; what their ended
// trials reached at each halving rung is rebuilt from the trials' events.
// Trial jobs still QUEUED or RUNNING whose sweep does not exist (orphans left
// by servers before the atomic submit) are cancelled.
//
// Locking (LevelDB style: decide under a lock, do I/O outside it): mu_
// guards only the map of running sweeps and the state counts, and is never
// held across I/O or a call into another component. Each running sweep has
// its own writer mutex (Running::mu), held by whichever thread changes that
// sweep (the monitor, Cancel) across its store writes and the output copy;
// readers never take it. Lock order: Running::mu, then mu_; the JobManager's
// and the store's locks are taken inside either, never the reverse.
//
// Thread safety: every method may be called from any thread. The JobManager
// must outlive the SweepManager.
#ifndef FREEZETUNE_SERVER_SWEEPS_SWEEP_MANAGER_H_
#define FREEZETUNE_SERVER_SWEEPS_SWEEP_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/jobs/job_manager.h"
#include "server/store/store.h"
#include "server/sweeps/sweep_policy.h"

namespace freezetune::sweeps {

struct SweepManagerOptions {
  // How often the monitor thread looks at running trials.
  absl::Duration poll_interval = absl::Milliseconds(200);
  // After a sweep's final event (SUCCEEDED, FAILED, CANCELLED) is appended,
  // with the final Sweep, holding that sweep's lock only: it must only queue
  // (server/notify). Null: nothing.
  std::function<void(const v1::Sweep&)> sweep_ended;
};

class SweepManager {
 public:
  // Resumes following RUNNING sweeps from the JobManager's store. `jobs` is
  // not owned and must outlive the returned manager. `metrics` is optional,
  // not owned, and must outlive the manager.
  static absl::StatusOr<std::unique_ptr<SweepManager>> Create(
      jobs::JobManager* jobs, const SweepManagerOptions& options,
      metrics::Metrics* metrics = nullptr);
  // Calls Shutdown().
  ~SweepManager();
  SweepManager(const SweepManager&) = delete;
  SweepManager& operator=(const SweepManager&) = delete;

  // Validates every candidate synchronously (INVALID_ARGUMENT naming it,
  // e.g. "sweep.freeze_depths[2]: ..."; at least 2 candidates), then stores
  // the sweep (RUNNING) and one queued job per candidate in one transaction
  // and queues the jobs. A repeated (tenant, client_request_id) returns the
  // first sweep without validating or storing anything. RESOURCE_EXHAUSTED
  // when the queue has no room for every trial; nothing is stored on error.
  absl::StatusOr<v1::Sweep> Submit(const v1::SweepSpec& spec, const std::string& tenant,
                                   absl::Time deadline = absl::InfiniteFuture());
  // NOT_FOUND for an unknown id.
  absl::StatusOr<v1::Sweep> Get(const std::string& sweep_id);
  // Cancels every unfinished trial and marks the sweep CANCELLED (final
  // event emitted). FAILED_PRECONDITION when the sweep already ended.
  absl::StatusOr<v1::Sweep> Cancel(const std::string& sweep_id);
  // Events with sequence > after_sequence, ascending, at most `limit` (<= 0:
  // all). NOT_FOUND for an unknown sweep.
  absl::StatusOr<std::vector<v1::SweepEvent>> ReadEvents(const std::string& sweep_id,
                                                         int64_t after_sequence, int limit);

  // Sweeps newest first (create_time, then id, descending), one page at a
  // time, as JobManager::List: page_size 0 means 50, more than 500 means
  // 500; states filters (empty: all); page_token continues from a previous
  // page's next_page_token (empty on the last page). `tenant` restricts the
  // listing when set. INVALID_ARGUMENT naming the field for a negative
  // page_size ("page_size: ..."), an unknown state ("states: ...") or a
  // token this method did not produce ("page_token: ...").
  absl::StatusOr<v1::ListSweepsResponse> List(const v1::ListSweepsRequest& request,
                                              std::optional<std::string> tenant = std::nullopt);

  // Live notifications for WatchSweep: `on_new_events` runs after each event
  // of `sweep_id` is stored (on the thread that stored it, with no manager
  // lock held that ReadEvents/Get take), and once more for every subscriber
  // when Shutdown() stops the monitor. Subscribe BEFORE reading events: an
  // event is then either read or announced. Store::Subscribe's contract:
  // after Unsubscribe(id) returns the callback is not running and never runs
  // again. Every subscriber must unsubscribe before the manager is
  // destroyed.
  store::Store::SubscriptionId Subscribe(const std::string& sweep_id,
                                         std::function<void()> on_new_events);
  void Unsubscribe(store::Store::SubscriptionId id);
  // Sweep subscriptions now (all sweeps, or one sweep's).
  size_t subscriber_count() const;
  size_t subscriber_count(const std::string& sweep_id) const;
  // True once Shutdown() has stopped the monitor: running sweeps emit no
  // more events in this process (a watcher that caught up should end and
  // resume against the restarted server).
  bool stopped() const { return stopped_.load(); }

  // Stops the monitor thread. Idempotent. Sweeps stay RUNNING in the store.
  void Shutdown();

 private:
  // One running sweep: its working state and writer lock.
  struct Running {
    absl::Mutex mu;
    v1::Sweep sweep ABSL_GUARDED_BY(mu);
    // Newest job event sequence already folded into each trial's row.
    std::vector<int64_t> seen_job_sequence ABSL_GUARDED_BY(mu);
    HalvingPolicy halving ABSL_GUARDED_BY(mu);
    // Set (with the final event stored) when the sweep ended.
    bool ended ABSL_GUARDED_BY(mu) = false;
    // Shared queue: the epoch of this replica's lease on the sweep.
    int64_t lease_epoch ABSL_GUARDED_BY(mu) = 0;
  };

  SweepManager(jobs::JobManager* jobs, const SweepManagerOptions& options,
               metrics::Metrics* metrics);
  absl::Status Load();
  absl::Status CancelOrphanTrials();
  // Follows `sweep` from now on (shared queue: under lease `lease_epoch`),
  // rebuilding what its ended trials reached at each halving rung.
  std::shared_ptr<Running> Track(const v1::Sweep& sweep, int64_t lease_epoch = 0);
  // Shared queue: renews this replica's sweep leases (a lost one is no
  // longer followed; a pending cancel is carried out) and takes the leases
  // of the sweeps nobody drives.
  void KeepLeases();
  void ClaimSweeps();
  std::shared_ptr<Running> FindRunning(const std::string& sweep_id);
  void MonitorLoop();
  // Brings one running sweep up to date.
  void Poll(Running& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(run.mu);
  // Folds trial i's new job events into its row (best so far, rungs); true
  // when its best metric improved.
  bool FoldEvents(Running& run, int i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(run.mu);
  void Finish(Running& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(run.mu);
  // Stores `event` with the sweep record (the store assigns the sequence).
  void Emit(Running& run, v1::SweepEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(run.mu);
  // Marks the sweep ended: counts, gauges, no longer followed.
  void Ended(Running& run, v1::SweepState from) ABSL_EXCLUSIVE_LOCKS_REQUIRED(run.mu);
  // Refreshes the sweep gauges (counts by state; one sweep's progress).
  void UpdateMetrics(const v1::Sweep* changed);

  jobs::JobManager* const jobs_;
  store::Store* const store_;
  const SweepManagerOptions options_;
  metrics::Metrics* const metrics_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Running>> running_ ABSL_GUARDED_BY(mu_);
  std::map<v1::SweepState, int64_t> counts_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // store_->shared_queue(), and when the monitor next keeps the leases.
  const bool shared_;
  absl::Time next_lease_tick_ = absl::InfinitePast();  // monitor thread only
  std::thread monitor_;
  // Set by Shutdown() after the monitor has stopped; see stopped().
  std::atomic<bool> stopped_{false};
};

}  // namespace freezetune::sweeps

#endif  // FREEZETUNE_SERVER_SWEEPS_SWEEP_MANAGER_H_
