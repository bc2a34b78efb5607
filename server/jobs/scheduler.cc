#include "server/jobs/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace freezetune::jobs {

Scheduler::Scheduler(const SchedulerOptions& options, RunFn run)
    : options_(options), run_(std::move(run)) {}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::Start() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (started_ || shutting_down_) return;
    started_ = true;
  }
  int slots = std::max(1, options_.cpu_slots);
  for (int slot = 0; slot < slots; ++slot) {
    workers_.emplace_back([this, slot] { WorkerLoop(slot); });
  }
}

absl::Status Scheduler::Enqueue(const std::string& job_id, int priority, bool force,
                                absl::Time queued_since) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("server is shutting down");
  if (queued_ids_.count(job_id) > 0 || running_.count(job_id) > 0) {
    return absl::AlreadyExistsError(absl::StrCat("job ", job_id, " is already scheduled"));
  }
  if (!force && queue_.size() >= static_cast<size_t>(std::max(0, options_.max_queue))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue is full (", queue_.size(), " jobs waiting); retry later"));
  }
  QueueKey key{-priority, next_order_++};
  queue_.emplace(key, Entry{job_id, queued_since});
  queued_ids_.emplace(job_id, key);
  ReportDepthLocked();
  return absl::OkStatus();
}

bool Scheduler::HasRoom() const {
  absl::MutexLock lock(&mu_);
  return !shutting_down_ && queue_.size() < static_cast<size_t>(std::max(0, options_.max_queue));
}

Scheduler::CancelOutcome Scheduler::Cancel(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto queued = queued_ids_.find(job_id);
  if (queued != queued_ids_.end()) {
    queue_.erase(queued->second);
    queued_ids_.erase(queued);
    ReportDepthLocked();
    return CancelOutcome::kRemovedFromQueue;
  }
  auto running = running_.find(job_id);
  if (running != running_.end()) {
    running->second->cancelled.store(true);
    return CancelOutcome::kStopRequested;
  }
  return CancelOutcome::kNotFound;
}

void Scheduler::Shutdown() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    queue_.clear();
    queued_ids_.clear();
    ReportDepthLocked();
    for (auto& [id, flag] : running_) flag->shutdown.store(true);
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

size_t Scheduler::queue_depth() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

absl::Time Scheduler::OldestQueuedSince() const {
  absl::MutexLock lock(&mu_);
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& [key, entry] : queue_) oldest = std::min(oldest, entry.queued_since);
  return oldest;
}

size_t Scheduler::running_count() const {
  absl::MutexLock lock(&mu_);
  return running_.size();
}

void Scheduler::ReportDepthLocked() {
  if (options_.metrics != nullptr) options_.metrics->SetQueueDepth(static_cast<int64_t>(queue_.size()));
}

void Scheduler::WorkerLoop(int slot) {
  while (true) {
    std::string job_id;
    std::shared_ptr<StopFlag> flag;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Scheduler* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
            return s->shutting_down_ || !s->queue_.empty();
          },
          this));
      if (shutting_down_) return;
      auto first = queue_.begin();
      job_id = first->second.job_id;
      queued_ids_.erase(job_id);
      queue_.erase(first);
      flag = std::make_shared<StopFlag>();
      running_.emplace(job_id, flag);
      ReportDepthLocked();
    }
    run_(job_id, slot, *flag);
    absl::MutexLock lock(&mu_);
    running_.erase(job_id);
  }
}

}  // namespace freezetune::jobs
