// The scheduler: a bounded priority queue of job ids and one worker thread
// per device slot. Workers run jobs through an injected function, so the
// scheduler knows nothing of stores, events or training (JobManager supplies
// the function; tests supply their own).
//
// Order: higher priority first; equal priorities in enqueue order (FIFO).
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
  // Optional, not owned, must outlive the scheduler: receives queue depth.
  metrics::Metrics* metrics = nullptr;
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
  // Runs one job to its end on a worker thread; `slot` is in [0, cpu_slots).
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
  absl::Status Enqueue(const std::string& job_id, int priority, bool force = false,
                       absl::Time queued_since = absl::Now());

  // True when Enqueue (without force) would not fail for lack of room.
  bool HasRoom() const;

  enum class CancelOutcome {
    kRemovedFromQueue,  // it will never run
    kStopRequested,     // it is running; its stop flag is set
    kNotFound,          // neither queued nor running
  };
  CancelOutcome Cancel(const std::string& job_id);

  // Stops accepting jobs, forgets the queue (jobs stay in whatever state
  // the caller persisted), sets `shutdown` on every running job's flag and
  // joins the workers. Idempotent.
  void Shutdown();

  size_t queue_depth() const;
  // queued_since of the longest-waiting queued job; InfiniteFuture if none.
  absl::Time OldestQueuedSince() const;
  size_t running_count() const;

 private:
  // Ordered by (priority desc, enqueue order asc).
  using QueueKey = std::tuple<int, uint64_t>;  // (-priority, order)
  void WorkerLoop(int slot);
  void ReportDepthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SchedulerOptions options_;
  const RunFn run_;
  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  struct Entry {
    std::string job_id;
    absl::Time queued_since;
  };
  std::map<QueueKey, Entry> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, QueueKey> queued_ids_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<StopFlag>> running_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // touched only by Start/Shutdown
  absl::Mutex lifecycle_mu_;          // serializes Start and Shutdown
};

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_SCHEDULER_H_
