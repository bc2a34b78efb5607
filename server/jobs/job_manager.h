// The gRPC-free core API of the server: submit, get, list and cancel jobs,
// preview freeze plans, and read/follow a job's events. service/ is a thin
// gRPC skin over this class.
//
// A JobManager owns the store (server/store/: jobs, sweeps, their events and
// watchers) and the scheduler. Jobs run on scheduler threads through
// TrainHooks (train::RunFineTune in the server; tests may inject their own
// runner). Every event a job emits is appended to the store, which assigns
// the sequence and then wakes the job's watchers.
//
// Durability: the store is the source of truth. At Create(), jobs left QUEUED
// are re-queued in their original order, and jobs left RUNNING by a crash are
// moved back to QUEUED (with a StateChange event) and re-queued. Jobs
// interrupted by Shutdown() are put back to QUEUED the same way. A re-run
// gets the same checkpoint_dir (<data_dir>/checkpoints/<job id>), and the
// trainer resumes from the newest checkpoint there (it writes one when
// stopped), so a drained job loses no finished steps; after a crash, or
// when the drain's deadline came during one of its steps (Shutdown), it
// loses the steps since its last periodic checkpoint. A job's checkpoints
// are deleted once it finishes.
//
// Replicas (issue 12.2): over a PostgreSQL store every replica serves the
// whole API and shares one queue. Submit only stores the job; a claimer
// thread takes a QUEUED job whenever this replica has an idle slot
// (Store::ClaimJob, SKIP LOCKED) and queues it on the local scheduler,
// holding its lease. A keeper thread renews the leases every
// lease_renew_interval and takes over the RUNNING jobs whose lease expired
// (their replica died or was cut off): they are re-queued, and whoever
// claims them resumes from the last checkpoint under checkpoint_uri. Every
// store write of a job carries its lease epoch (a Fence), so a replica that
// lost its lease writes nothing more; it stops the run when its renewal
// fails, and checks the lease again before it uploads a checkpoint or
// publishes an output. Cancel on a replica that does not hold the job asks
// the owner (NOTIFY), which stops it within a second; a QUEUED job nobody
// holds is claimed and cancelled on the spot. Startup recovery: a replica
// is named after its host and data dir, so a restarted one re-queues the
// jobs its previous process held at once; those of a replica that does not
// come back wait for their leases to expire.
//
// Devices: a job runs on the device of the scheduler slot that picked it
// (RunContext.device), within the constraint of FineTuneJob.device.
//
// Logs (see server/base/log.h): one line with the job id when a job is queued, starts,
// and ends (with its state).
//
// Thread safety: every method may be called from any thread.
#ifndef FREEZETUNE_SERVER_JOBS_JOB_MANAGER_H_
#define FREEZETUNE_SERVER_JOBS_JOB_MANAGER_H_

#include <atomic>
#include <thread>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/data/uri.h"
#include "server/jobs/path_policy.h"
#include "server/jobs/scheduler.h"
#include "server/metrics/metrics.h"
#include "server/store/store.h"
#include "server/train/fine_tune.h"

namespace freezetune::jobs {

// The train layer's entry points, as functions so that tests can drive the
// scheduler without training. Same contracts as server/train/fine_tune.h.
struct TrainHooks {
  std::function<absl::Status(const v1::FineTuneJob&, const data::UriOptions&,
                             const train::JobLimits&)>
      validate;
  std::function<absl::StatusOr<v1::PlanFreezeResponse>(const v1::PlanFreezeRequest&,
                                                       const data::UriOptions&)>
      plan_freeze;
  std::function<absl::StatusOr<v1::JobResult>(const v1::FineTuneJob&, const train::RunContext&)>
      run;
};

// train::ValidateJob, train::PlanFreeze and train::RunFineTune. Defined in
// train_hooks.cc, which is only built when
// the freezetune_train library exists.
// `data_parallel_timeout` bounds a data-parallel job's rendezvous and every
// collective (train::RunContext::data_parallel_timeout_ms).
TrainHooks DefaultTrainHooks(int64_t prefix_cache_bytes, bool prefix_cache_shared = false,
                             absl::Duration data_parallel_timeout = absl::Minutes(5));

// Completion callbacks (server/notify; wired by service/server.cc), as
// functions so that jobs/ does not depend on them. Null members: a job with
// notify set is refused at Submit, and nothing is called when jobs end.
struct NotifyHooks {
  // Submit-time check of a set Notify; `field` is "job.notify" or
  // "sweep.notify". Errors name the field.
  std::function<absl::Status(const v1::Notify&, const std::string& tenant,
                             const std::string& field)>
      validate;
  // After a job's terminal state (SUCCEEDED, FAILED, CANCELLED) is stored,
  // with the final record, on the thread that stored it. Must not block on
  // the network (it queues).
  std::function<void(const v1::Job&)> job_ended;
};

struct JobManagerOptions {
  // Root of the server's state; created if missing. Required.
  std::string data_dir;
  // SQLite file. Default: <data_dir>/freezetune.db.
  std::string store_path;
  // Non-empty: jobs, sweeps and events live in this PostgreSQL database (a
  // libpq URI, store/postgres_backend.h) instead of the SQLite file.
  std::string postgres_uri;
  // A sweeps.db of servers before the unified store, imported into the
  // store once. Default: <data_dir>/sweeps.db (if it exists).
  std::string legacy_sweeps_path;
  // Caps the store file at this many pages (store::StoreOptions); 0: no cap.
  int64_t store_max_page_count = 0;
  // While the store refuses writes, how often it is probed (and how often a
  // job waiting to record its end retries).
  absl::Duration store_retry_interval = absl::Seconds(1);
  SchedulerOptions scheduler;
  data::UriOptions uris;
  // s3://bucket/prefix for resumable checkpoints (remote_files.h); empty:
  // local, under <data_dir>/checkpoints.
  std::string checkpoint_uri;
  train::JobLimits limits;
  // Tenants (auth) may name outputs outside <data_dir>/outputs/<tenant>/
  // (see path_policy.h).
  bool allow_tenant_output_paths = false;
  // Intra-op threads shared by the jobs running on the CPU: each gets
  // cpu_threads / (CPU jobs running now), at least 1, rebalanced before
  // every batch. 0: jobs keep the process default.
  int cpu_threads = 0;
  // Completion callbacks; see NotifyHooks.
  NotifyHooks notify;
  // The shared queue (PostgreSQL store; see the top of this file): this
  // replica's name in leases and logs (empty: <hostname>:<data dir>); at
  // most one live process may use a name, and one that starts under the
  // name of one that died takes its jobs over at once. How long a lease
  // lasts unless renewed, and how often it is renewed.
  std::string replica_id;
  absl::Duration lease_duration = absl::Seconds(30);
  absl::Duration lease_renew_interval = absl::Seconds(10);
};

class JobManager {
 public:
  // Locks the data dir (FAILED_PRECONDITION if another manager, in this or
  // another process, holds it: two schedulers would run the same jobs),
  // opens (or creates) the store, recovers unfinished jobs and starts the
  // workers. `metrics` is optional, not owned, and must outlive the manager.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(const JobManagerOptions& options,
                                                            TrainHooks hooks,
                                                            metrics::Metrics* metrics = nullptr);
  // Calls Shutdown().
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Validates synchronously (on the caller's thread: it may read the model
  // config and datasets), then persists the job as QUEUED with event #1 and
  // queues it. A repeated (tenant, client_request_id) returns the first job
  // without validating or queueing again. INVALID_ARGUMENT for a bad job,
  // INVALID_ARGUMENT "job.device: no CUDA device ..." when no slot can run
  // it, RESOURCE_EXHAUSTED when the queue or the tenant's queued-job limit
  // is full, DEADLINE_EXCEEDED when validation ends after `deadline`,
  // UNAVAILABLE while shutting down; nothing is stored on error. The
  // output directory is planned and claimed here (path_policy.h; recorded as
  // Job.output_uri) and created when the job runs.
  // `sweep_id` links the job to a sweep (Job.sweep_id); empty for none.
  absl::StatusOr<v1::Job> Submit(const v1::FineTuneJob& job, const std::string& tenant,
                                 absl::Time deadline = absl::InfiniteFuture(),
                                 const std::string& sweep_id = {});

  // Submit's validation only (the tenant's input paths, then
  // TrainHooks.validate with this manager's URI options and limits); stores
  // nothing. May read the model and datasets.
  absl::Status Validate(const v1::FineTuneJob& job, const std::string& tenant);

  // Where an output of `owner_id` (a sweep) goes, checked as a job's
  // output_uri is (path_policy.h): the canonical directory, not created.
  // Local only: s3:// is INVALID_ARGUMENT.
  absl::StatusOr<std::string> PlanOutput(std::string_view uri, const std::string& tenant,
                                         const std::string& owner_id, std::string_view field);

  // Submit-time check of a completion callback for `tenant` (options.notify;
  // FAILED_PRECONDITION "<field>: ..." when the server has none).
  absl::Status ValidateNotify(const v1::Notify& notify, const std::string& tenant,
                              const std::string& field);

  absl::StatusOr<v1::Job> Get(const std::string& job_id);

  // `tenant` restricts the listing when set.
  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& request,
                                            std::optional<std::string> tenant = std::nullopt);

  // QUEUED: becomes CANCELLED now. RUNNING: its stop flag is set and the job
  // is returned as it is (RUNNING); it becomes CANCELLED within one training
  // step (on another replica: once its owner hears of it, within a second). Finished: FAILED_PRECONDITION "job <id> already SUCCEEDED".
  // Unknown: NOT_FOUND.
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);

  // Reads the model as `tenant` may (path_policy.h). DEADLINE_EXCEEDED
  // when planning ends after `deadline`.
  absl::StatusOr<v1::PlanFreezeResponse> PlanFreeze(const v1::PlanFreezeRequest& request,
                                                    const std::string& tenant,
                                                    absl::Time deadline = absl::InfiniteFuture());

  // Events after `after_sequence`, ascending, at most `limit` (<= 0: all),
  // from the in-memory tail when possible, otherwise from the store.
  absl::StatusOr<std::vector<v1::JobEvent>> ReadEvents(const std::string& job_id,
                                                       int64_t after_sequence, int limit);

  // Live notifications of a job's new events (Store::Subscribe's contract:
  // the callback runs on the appending thread and must not block).
  // Subscribe BEFORE reading events.
  store::Store::SubscriptionId Subscribe(const std::string& job_id,
                                         std::function<void()> on_new_events);
  void Unsubscribe(store::Store::SubscriptionId id);
  // Job watchers now.
  size_t subscriber_count() const;

  // Batch submit for callers that store jobs together with a record of
  // their own (a sweep and its trials, in one transaction): NewJobRecords
  // checks that `specs` fit (as Submit, for all of them together) and
  // returns QUEUED records (ids assigned, linked to `sweep_id`, outputs
  // planned as Submit's) and the output claims the caller must take with
  // them, without storing anything; once the caller has stored them (with
  // QueuedEvent() as each one's first event), EnqueueStored queues them in
  // order. Jobs stored but never enqueued (a crash in between) are queued at
  // the next start.
  struct NewJobs {
    std::vector<v1::Job> jobs;
    std::vector<store::OutputClaim> claims;
  };
  absl::StatusOr<NewJobs> NewJobRecords(const std::vector<v1::FineTuneJob>& specs,
                                        const std::string& tenant, const std::string& sweep_id);
  void EnqueueStored(const std::vector<v1::Job>& jobs);
  // --max_queue and --max_queued_per_tenant for the store to count at the
  // insert (a shared queue's, over every replica); none where the scheduler
  // counts them (a queue of its own), checked by Submit and NewJobRecords.
  store::QueueLimits StoreQueueLimits() const;
  // RESOURCE_EXHAUSTED for a submit of `adding` jobs the store's count
  // refused.
  absl::Status QueueFullError(const std::string& tenant, const store::QueueFull& full,
                              int64_t adding) const;
  static v1::JobEvent QueuedEvent();

  // The store, shared with the sweep manager. Owned by this manager.
  store::Store* store() const { return store_.get(); }

  // Stops accepting jobs and stops running ones: each goes back to QUEUED
  // and resumes from its newest checkpoint at the next start. A job whose
  // run has not returned by `deadline` (it checks for stop only between
  // micro-batches, so one step can outlast any grace period) is handed
  // back instead (issue 14.2): from then on the store refuses its training
  // thread's writes, the job is recorded QUEUED (the steps since its last
  // checkpoint are redone), and its worker is left running, not joined;
  // abandoned_runs() counts them and the caller must then end the process
  // (std::_Exit) rather than destroy the manager, whose destructor would
  // wait for those steps. Every store write is committed before it
  // returns, so exiting loses nothing the store acknowledged. Then marks
  // the manager drained() and wakes every event-log subscriber so that
  // watchers notice. Idempotent; a later call (the destructor's) waits for
  // the abandoned workers.
  void Shutdown(absl::Time deadline = absl::InfiniteFuture());
  bool shutting_down() const { return shutting_down_.load(); }
  // True once no job emits events any more: every worker has stopped or
  // its job was handed back.
  bool drained() const { return drained_.load(); }
  // Training threads Shutdown left running (their jobs handed back).
  size_t abandoned_runs() const { return abandoned_runs_.load(); }

  size_t queue_depth() const { return scheduler_->queue_depth(); }
  const JobManagerOptions& options() const { return options_; }
  // This replica's name in leases (options.replica_id or its default).
  const std::string& replica_id() const { return replica_id_; }

 private:
  JobManager(const JobManagerOptions& options, TrainHooks hooks, metrics::Metrics* metrics);
  absl::Status Recover();
  void RunJob(const std::string& job_id, int slot, const StopFlag& stop);
  // One run's claim on its job's record. RunJob makes every store write of
  // the job under `mu` and only while !handed_back; Shutdown sets
  // handed_back at its deadline, after which the record is the drain's.
  struct RunGuard {
    absl::Mutex mu;
    bool handed_back ABSL_GUARDED_BY(mu) = false;
  };
  // Runs `write` under the run's guard unless the job was handed back
  // (ABORTED "job <id> was handed back by the drain"; nothing written).
  static absl::Status WriteAsRunner(RunGuard& guard, const std::string& job_id,
                                    const std::function<absl::Status()>& write);
  // Shutdown at its deadline: refuses the run's further writes and records
  // the job QUEUED if it is RUNNING in the store.
  void HandBack(const std::string& job_id);
  // Appends `event` (setting job's last_sequence) and, when `update_job`,
  // the job record in the same transaction.
  absl::StatusOr<v1::JobEvent> Append(v1::Job& job, v1::JobEvent event, bool update_job);
  // Moves `job` to `state` with a StateChange event, atomically.
  absl::Status Transition(v1::Job& job, v1::JobState state, const std::string& message);
  absl::StatusOr<std::string> OutputDir(const v1::Job& job);
  void RemoveCheckpoints(const std::string& job_id);
  // Logs an error when the store holds no job but <data_dir>/outputs is not
  // empty (issue 14.5).
  void WarnIfStoreLost(const std::string& store_path);
  // freezetune_jobs{state} from the store's counts (metrics_ must be set).
  void SetJobsInStates(std::map<v1::JobState, int64_t> counts);
  // Probes the store every store_retry_interval while it refuses writes.
  void ProbeLoop();
  // Retries `write` every store_retry_interval while the store refuses
  // writes, until it succeeds or the manager shuts down (a job left RUNNING
  // in the store is re-queued at the next start). Returns the last result.
  absl::Status RetryWhileUnwritable(const std::string& job_id, const char* what,
                                    const std::function<absl::Status()>& write);

  // --- The shared queue ---
  // The fence of a write of `job_id` (this replica's lease), releasing the
  // lease when `release`; nullopt without a shared queue. FAILED_PRECONDITION
  // when this replica holds no lease on the job.
  absl::StatusOr<std::optional<store::Fence>> FenceFor(const std::string& job_id, bool release);
  bool HoldsLease(const std::string& job_id);
  // The epoch of this replica's lease on the job; 0 when it holds none.
  int64_t LeaseEpoch(const std::string& job_id);
  // Renews this replica's lease on the job now: false when it was lost
  // (then handled by LoseLease). True without a shared queue.
  bool LeaseStillHeld(const std::string& job_id);
  // Wakes the claimer (a job may be claimable, or a cancel is pending).
  void WakeClaimer();
  void ClaimLoop();
  // Claims jobs while this replica has idle slots and nothing queued.
  void ClaimWhileIdle();
  // A lease just taken (a claim or a takeover): queues the job, or cancels
  // it when that was asked meanwhile, or re-queues it (`requeue_message`,
  // a takeover).
  void Adopt(const store::ResourceLease& lease, const std::string& requeue_message);
  // Ends this replica's lease on the job, if it holds one (the job stays
  // as it is in the store, for another replica to claim).
  void ReleaseLeaseIfHeld(const std::string& job_id);
  void KeepLeases();
  // Another replica took the job over: stop its run here, store nothing.
  void LoseLease(const std::string& job_id, int64_t epoch);

  const JobManagerOptions options_;
  const TrainHooks hooks_;
  int lock_fd_ = -1;  // flock'ed <data_dir>/LOCK, held for the manager's life
  metrics::Metrics* const metrics_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<PathPolicy> paths_;
  std::unique_ptr<Scheduler> scheduler_;
  std::atomic<int> running_cpu_jobs_{0};
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> drained_{false};
  std::atomic<size_t> abandoned_runs_{0};
  // The guards of the runs in progress, by job id. A leaf: never held
  // across a store write or a RunGuard::mu.
  absl::Mutex runs_mu_;
  std::map<std::string, std::shared_ptr<RunGuard>> runs_ ABSL_GUARDED_BY(runs_mu_);
  absl::Notification prober_stop_;
  std::thread prober_;
  // The shared queue (store_->shared_queue()).
  bool shared_queue_ = false;
  std::string replica_id_;
  // Leases this replica holds: job id -> epoch. A leaf lock.
  absl::Mutex leases_mu_;
  std::map<std::string, int64_t> leases_ ABSL_GUARDED_BY(leases_mu_);
  absl::Mutex wake_mu_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread claimer_;
  absl::Notification keeper_stop_;
  std::thread keeper_;
  // Serializes the capacity check, insert and enqueue of Submit, and
  // Cancel's state changes of jobs no worker owns.
  absl::Mutex submit_mu_;
};

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_JOB_MANAGER_H_
