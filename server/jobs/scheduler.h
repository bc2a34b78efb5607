// The scheduler: a bounded priority queue of job ids and one worker thread
// per device slot. Workers run jobs through an injected function, so the
// scheduler knows nothing of stores, events or training (JobManager supplies
// the function; tests supply their own).
//
// Slots: cpu_slots CPU slots (indices 0..cpu_slots-1, device "cpu"), then one
// slot per entry of gpu_devices ("cuda:0", ...). A job's device constrains
// where it runs: "" any slot, "cpu" a CPU slot, "cuda" any GPU slot,
// "cuda:N" that GPU's slot.
//
// Order: higher priority first; equal priorities in enqueue order (FIFO). A
// worker takes the first queued job that fits its slot and whose tenant is
// under max_running_per_tenant; jobs that do not fit keep their place.
//
// Gang jobs (data-parallel, `slots` > 1) take that many slots of their device
// kind at once: the worker that picks one also holds slots-1 other idle
// slots that fit, all under one lock, so two gang jobs never each hold part
// of what they need (no deadlock). While a gang job waits at the head of the
// queue for enough slots, the slots it could use start no later job, so it
// is not starved by a stream of single-slot jobs. A held slot's worker
// starts nothing until the gang job ends.
//
// Thread safety: every method may be called from any thread. A job id is
// either queued, running (between being popped and its run function
// returning) or unknown to the scheduler; popping a job and registering its
// stop flag happen under one lock, so Cancel() never misses a starting job.
#ifndef FREEZETUNE_SERVER_JOBS_SCHEDULER_H_
#define FREEZETUNE_SERVER_JOBS_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/metrics/metrics.h"

namespace freezetune::jobs {

struct SchedulerOptions {
  // Concurrent jobs on the CPU (worker threads). At least 1.
  int cpu_slots = 1;
  // Jobs waiting at most; Enqueue beyond it is RESOURCE_EXHAUSTED.
  int max_queue = 1000;
  // Torch devices of GPU slots, one slot each (e.g. {"cuda:0", "cuda:1"}).
  std::vector<std::string> gpu_devices;
  // Per tenant: queued jobs at most (Enqueue beyond is RESOURCE_EXHAUSTED)
  // and running jobs at most (further ones wait in the queue). 0: no limit.
  int max_queued_per_tenant = 0;
  int max_running_per_tenant = 0;
  // Optional, not owned, must outlive the scheduler: receives queue depth.
  metrics::Metrics* metrics = nullptr;
  // Optional: called on the worker thread, with no scheduler lock held,
  // each time a job's run has ended and its slots are free again.
  std::function<void()> on_slots_freed;
};

// Why a running job should stop. Set by the scheduler, polled by the run
// function (the trainer polls it at least once per step).
struct StopFlag {
  std::atomic<bool> cancelled{false};  // the user cancelled the job
  std::atomic<bool> shutdown{false};   // the server is shutting down
  bool requested() const { return cancelled.load() || shutdown.load(); }
};

class Scheduler {
 public:
  // Runs one job to its end on a worker thread; `slot` is in
  // [0, slot_count()), its device is slot_device(slot).
  // Must persist the job's outcome before returning.
  using RunFn = std::function<void(const std::string& job_id, int slot, const StopFlag& stop)>;

  Scheduler(const SchedulerOptions& options, RunFn run);
  // Calls Shutdown().
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the worker threads. Jobs enqueued before Start wait for it (so
  // startup recovery can enqueue everything first, in order).
  void Start();

  // RESOURCE_EXHAUSTED "queue is full (N jobs waiting)" unless `force`
  // (startup recovery); UNAVAILABLE after Shutdown; ALREADY_EXISTS if the id
  // is queued or running.
  // `queued_since` (default: now) feeds OldestQueuedSince().
  // `tenant` counts against the per-tenant limits; `device` is the job's
  // device constraint (see above): CanAccept's errors apply (also with force).
  // `slots`: a gang job's slot count (see above); CanAccept's limits apply.
  absl::Status Enqueue(const std::string& job_id, int priority, bool force = false,
                       absl::Time queued_since = absl::Now(), const std::string& tenant = "",
                       const std::string& device = "", int slots = 1);

  // True when Enqueue (without force) would not fail for lack of room.
  bool HasRoom() const;

  // OK when Enqueue(force=false) of a job of `tenant` on `device` would
  // succeed now: UNAVAILABLE after Shutdown; INVALID_ARGUMENT "job.device:
  // ..." for a malformed device, and "job.device: no CUDA device ..." when
  // no slot can ever run it; RESOURCE_EXHAUSTED when the queue or the
  // tenant's queued-job limit is full. `slots`: the job's ranks (a gang job
  // needs that many slots). `extra`: jobs of the same tenant the caller is
  // about to enqueue besides this one.
  absl::Status CanAccept(const std::string& tenant, const std::string& device,
                         int slots = 1, size_t extra = 0) const;

  // Only the device part of CanAccept: OK when `slots` slots can run a job
  // asking for `device` (INVALID_ARGUMENT "job.resources.data_parallel: ..."
  // when the server has fewer).
  absl::Status CheckDevice(const std::string& device, int slots = 1) const;

  // The slots a running job holds, its own first (one, unless a gang job);
  // empty when it is not running.
  std::vector<int> SlotsOf(const std::string& job_id) const;

  int slot_count() const { return static_cast<int>(slot_devices_.size()); }
  const std::string& slot_device(int slot) const { return slot_devices_[slot]; }

  enum class CancelOutcome {
    kRemovedFromQueue,  // it will never run
    kStopRequested,     // it is running; its stop flag is set
    kNotFound,          // neither queued nor running
  };
  CancelOutcome Cancel(const std::string& job_id);

  // Stops accepting jobs, forgets the queue (jobs stay in whatever state
  // the caller persisted), sets `shutdown` on every running job's flag and
  // waits until `deadline` for the running jobs' run functions to return.
  // Returns the ids of the jobs still running at the deadline (empty when
  // every worker ended; they are then joined). Their workers are left
  // running, not joined: a step cannot be interrupted, so the caller decides
  // what becomes of those jobs (the server records them QUEUED and exits).
  // A later call (the destructor's) waits for them again. Idempotent.
  std::vector<std::string> Shutdown(absl::Time deadline = absl::InfiniteFuture());

  // Idle slots a shared queue may claim jobs for (JobManager): none while
  // any job waits in this scheduler's own queue, or before Start or after
  // Shutdown.
  struct IdleSlots {
    int cpu = 0;
    int gpu = 0;
  };
  IdleSlots IdleSlotsToClaimFor() const;

  size_t queue_depth() const;
  // queued_since of the longest-waiting queued job; InfiniteFuture if none.
  absl::Time OldestQueuedSince() const;
  size_t running_count() const;

 private:
  // Ordered by (priority desc, enqueue order asc).
  using QueueKey = std::tuple<int, uint64_t>;  // (-priority, order)
  void WorkerLoop(int slot);
  void ReportDepthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first queued job the slot may run now; queue_.end() if none.
  struct Entry;
  std::map<QueueKey, Entry>::iterator RunnableLocked(int slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CanAcceptLocked(const std::string& tenant, const std::string& device,
                               int slots, size_t extra) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Idle, unheld slots other than `except` that a job on `device` fits.
  std::vector<int> FreeSlotsLocked(const std::string& device, int except) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SchedulerOptions options_;
  const std::vector<std::string> slot_devices_;
  const RunFn run_;
  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  struct Entry {
    std::string job_id;
    absl::Time queued_since;
    std::string tenant;
    std::string device;
    int slots = 1;
  };
  std::map<QueueKey, Entry> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, QueueKey> queued_ids_ ABSL_GUARDED_BY(mu_);
  struct Running {
    std::shared_ptr<StopFlag> flag;
    std::string tenant;
    std::vector<int> slots;  // its own first
  };
  // Per slot: running a job, or held by a gang job running on another slot.
  std::vector<bool> busy_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> held_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> queued_by_tenant_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> running_by_tenant_ ABSL_GUARDED_BY(mu_);
  // Workers whose loop has not returned yet (Shutdown waits for 0).
  int live_workers_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_;  // touched only by Start/Shutdown
  absl::Mutex lifecycle_mu_;          // serializes Start and Shutdown
};

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_SCHEDULER_H_
