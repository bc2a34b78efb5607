// Freeze sweeps: one FineTuneJob template, several freeze candidates, one
// trial job per candidate, a results table and a winner.
//
// A SweepManager sits on top of a JobManager: each trial is submitted as a
// normal job (Job.sweep_id links it), so scheduling, durability and job
// events come from the JobManager. A monitor thread follows the trials (by
// polling the JobManager every `poll_interval`, which also makes recovery
// after a restart trivial), fills the table, emits SweepEvents, and when
// every trial has ended picks the winner by the selection metric (ties go to
// fewer trainable parameters, then to the earlier candidate), copies the
// winner's output directory to the sweep's output directory and writes
// sweep.json (the final Sweep as JSON) there.
//
// Durability: sweeps and their events are stored in SQLite
// (<data_dir>/sweeps.db). At Create(), RUNNING sweeps are followed again.
// Per-trial "best so far" values of a running trial are rebuilt from its job
// events after a restart.
//
// Thread safety: every method may be called from any thread. The JobManager
// must outlive the SweepManager.
#ifndef FREEZETUNE_SERVER_JOBS_SWEEP_MANAGER_H_
#define FREEZETUNE_SERVER_JOBS_SWEEP_MANAGER_H_

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
#include "server/jobs/subscriber_hub.h"

struct sqlite3;

namespace freezetune::jobs {

struct SweepManagerOptions {
  // SQLite file for sweeps. Default: <jobs data_dir>/sweeps.db.
  std::string store_path;
  // How often the monitor thread looks at running trials.
  absl::Duration poll_interval = absl::Milliseconds(200);
};

// Returns the value of `metric` in `eval`, or false for an unknown metric.
bool SweepMetricValue(const v1::EvalMetrics& eval, const std::string& metric, double* value);
// "loss" and "mse" are lower-is-better; every other metric higher.
bool SweepMetricLowerIsBetter(const std::string& metric);
// Index of the winner among `trials` (only rows with has_best and state
// FINISHED or STOPPED_EARLY count): best metric, ties to fewer trainable
// parameters, then to the lower index. -1 when no row counts.
int PickSweepWinner(const std::vector<v1::SweepTrial>& trials, bool lower_is_better);

class SweepManager {
 public:
  // Opens (or creates) the sweep store and resumes following RUNNING sweeps.
  // `jobs` is not owned and must outlive the returned manager.
  // `metrics` is optional, not owned, and must outlive the manager.
  static absl::StatusOr<std::unique_ptr<SweepManager>> Create(
      JobManager* jobs, const SweepManagerOptions& options, metrics::Metrics* metrics = nullptr);
  // Calls Shutdown().
  ~SweepManager();
  SweepManager(const SweepManager&) = delete;
  SweepManager& operator=(const SweepManager&) = delete;

  // Validates every candidate synchronously (INVALID_ARGUMENT naming it,
  // e.g. "sweep.freeze_depths[2]: ..."; at least 2 candidates), then submits
  // one job per candidate and stores the sweep as RUNNING. If a trial's
  // submit fails, the trials already submitted are cancelled and the error
  // is returned.
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
  // of `sweep_id` is stored (and once more for every subscriber when
  // Shutdown() stops the monitor), on a thread of the manager's own, with no
  // manager lock held, so it may call ReadEvents/Get. Subscribe BEFORE
  // reading events: an event is then either read or announced. Contract as
  // SubscriberHub's: after Unsubscribe(id) returns the callback is not
  // running and never runs again. Every subscriber must unsubscribe before
  // the manager is destroyed.
  SubscriberHub::SubscriptionId Subscribe(const std::string& sweep_id,
                                          std::function<void()> on_new_events);
  void Unsubscribe(SubscriberHub::SubscriptionId id);
  // Subscriptions now (all sweeps, or one sweep's).
  size_t subscriber_count() const;
  size_t subscriber_count(const std::string& sweep_id) const;
  // True once Shutdown() has stopped the monitor: running sweeps emit no
  // more events in this process (a watcher that caught up should end and
  // resume against the restarted server).
  bool stopped() const { return stopped_.load(); }

  // Stops the monitor thread. Idempotent. Sweeps stay RUNNING in the store.
  void Shutdown();

 private:
  struct Entry {
    v1::Sweep sweep;
    std::vector<v1::SweepEvent> events;
    // Newest job event sequence already folded into each trial's row.
    std::vector<int64_t> seen_job_sequence;
    // Successive halving: per trial, the first rung not yet judged; per
    // rung, the best-so-far metric of each trial that reached it.
    std::vector<int> next_rung;
    std::vector<std::map<int, double>> rung_values;
  };

  SweepManager(JobManager* jobs, const SweepManagerOptions& options, metrics::Metrics* metrics);
  // Refreshes the sweep gauges (counts by state, per-sweep progress).
  void UpdateMetrics(const Entry* changed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Open() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Load() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MonitorLoop();
  // Brings one running sweep up to date.
  void Poll(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Folds trial i's new job events into its row (best so far, rungs); true
  // when its best metric improved.
  bool FoldEvents(Entry& entry, int i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records trial i's best metric at every rung up to `step` and prunes it
  // (cancels its job) when it misses a rung's cut.
  void JudgeRungs(Entry& entry, int i, int64_t step) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Assigns the next sequence, stores the event and the sweep record.
  void Emit(Entry& entry, v1::SweepEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Store(const v1::Sweep& sweep, const v1::SweepEvent* event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  JobManager* const jobs_;
  const SweepManagerOptions options_;
  metrics::Metrics* const metrics_;
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, Entry> sweeps_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread monitor_;
  // Set by Shutdown() after the monitor has stopped; see stopped().
  std::atomic<bool> stopped_{false};
  // WatchSweep subscribers, keyed by sweep id. Emit() posts to it while
  // holding mu_, so callbacks run on the hub's delivery thread (they read
  // events under mu_). Last member: destroyed, its thread joined, first.
  SubscriberHub watchers_;
};

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_SWEEP_MANAGER_H_
