#include "server/jobs/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace freezetune::jobs {
namespace {

std::vector<std::string> SlotDevices(const SchedulerOptions& options) {
  std::vector<std::string> devices(static_cast<size_t>(std::max(1, options.cpu_slots)), "cpu");
  for (const std::string& gpu : options.gpu_devices) devices.push_back(gpu);
  return devices;
}

bool WellFormedDevice(const std::string& device) {
  if (device.empty() || device == "cpu" || device == "cuda") return true;
  if (!absl::StartsWith(device, "cuda:")) return false;
  absl::string_view index(device);
  index.remove_prefix(5);
  int n = 0;
  return !index.empty() && index.size() <= 3 &&
         std::all_of(index.begin(), index.end(), [](char c) { return absl::ascii_isdigit(c); }) &&
         absl::SimpleAtoi(index, &n);
}

// Whether a job asking for `wanted` may run on a slot of `slot_device`.
bool Fits(const std::string& wanted, const std::string& slot_device) {
  if (wanted.empty()) return true;
  if (wanted == "cuda") return absl::StartsWith(slot_device, "cuda");
  return wanted == slot_device;
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options, RunFn run)
    : options_(options),
      slot_devices_(SlotDevices(options)),
      run_(std::move(run)),
      busy_(slot_devices_.size(), false),
      held_(slot_devices_.size(), false) {}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::Start() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (started_ || shutting_down_) return;
    started_ = true;
    live_workers_ = slot_count();
  }
  for (int slot = 0; slot < slot_count(); ++slot) {
    workers_.emplace_back([this, slot] { WorkerLoop(slot); });
  }
}

absl::Status Scheduler::CheckDevice(const std::string& device, int slots) const {
  if (!WellFormedDevice(device)) {
    return absl::InvalidArgumentError(
        absl::StrCat("job.device: must be \"cpu\", \"cuda\" or \"cuda:N\" (got \"", device, "\")"));
  }
  if (std::none_of(slot_devices_.begin(), slot_devices_.end(),
                   [&](const std::string& d) { return Fits(device, d); })) {
    // INVALID_ARGUMENT (issue 13): the job names a device this server
    // cannot offer, which no retry fixes.
    return absl::InvalidArgumentError(absl::StrCat(
        "job.device: no CUDA device \"", device, "\" on this server (its slots: ",
        absl::StrJoin(slot_devices_, ", "), ")"));
  }
  const auto fitting = std::count_if(slot_devices_.begin(), slot_devices_.end(),
                                     [&](const std::string& d) { return Fits(device, d); });
  if (slots > fitting) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job.resources.data_parallel: ", slots, " ranks need ", slots, " slots for job.device \"",
        device, "\" at once; this server has ", fitting, " (its slots: ",
        absl::StrJoin(slot_devices_, ", "), ")"));
  }
  return absl::OkStatus();
}

std::vector<int> Scheduler::SlotsOf(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = running_.find(job_id);
  return it == running_.end() ? std::vector<int>{} : it->second.slots;
}

std::vector<int> Scheduler::FreeSlotsLocked(const std::string& device, int except) const {
  std::vector<int> free;
  for (int s = 0; s < slot_count(); ++s) {
    if (s != except && !busy_[s] && !held_[s] && Fits(device, slot_devices_[s])) free.push_back(s);
  }
  return free;
}

absl::Status Scheduler::CanAcceptLocked(const std::string& tenant, const std::string& device,
                                        int slots, size_t extra) const {
  if (shutting_down_) return absl::UnavailableError("server is shutting down");
  if (absl::Status s = CheckDevice(device, slots); !s.ok()) return s;
  if (queue_.size() + extra >= static_cast<size_t>(std::max(0, options_.max_queue))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue is full (", queue_.size(), " jobs waiting); retry later"));
  }
  if (options_.max_queued_per_tenant > 0) {
    auto it = queued_by_tenant_.find(tenant);
    int queued = it == queued_by_tenant_.end() ? 0 : it->second;
    if (queued + static_cast<int>(extra) >= options_.max_queued_per_tenant) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant \"", tenant, "\" has ", queued, " queued jobs, its limit (max_queued_per_tenant ",
          options_.max_queued_per_tenant, "); retry when one starts"));
    }
  }
  return absl::OkStatus();
}

absl::Status Scheduler::CanAccept(const std::string& tenant, const std::string& device,
                                  int slots, size_t extra) const {
  absl::MutexLock lock(&mu_);
  return CanAcceptLocked(tenant, device, slots, extra);
}

absl::Status Scheduler::Enqueue(const std::string& job_id, int priority, bool force,
                                absl::Time queued_since, const std::string& tenant,
                                const std::string& device, int slots) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("server is shutting down");
  if (queued_ids_.count(job_id) > 0 || running_.count(job_id) > 0) {
    return absl::AlreadyExistsError(absl::StrCat("job ", job_id, " is already scheduled"));
  }
  if (!force) {
    if (absl::Status s = CanAcceptLocked(tenant, device, slots, /*extra=*/0); !s.ok()) return s;
  }
  QueueKey key{-priority, next_order_++};
  queue_.emplace(key, Entry{job_id, queued_since, tenant, device, std::max(1, slots)});
  queued_ids_.emplace(job_id, key);
  ++queued_by_tenant_[tenant];
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
    auto entry = queue_.find(queued->second);
    if (entry != queue_.end()) {
      if (--queued_by_tenant_[entry->second.tenant] <= 0) {
        queued_by_tenant_.erase(entry->second.tenant);
      }
      queue_.erase(entry);
    }
    queued_ids_.erase(queued);
    ReportDepthLocked();
    return CancelOutcome::kRemovedFromQueue;
  }
  auto running = running_.find(job_id);
  if (running != running_.end()) {
    running->second.flag->cancelled.store(true);
    return CancelOutcome::kStopRequested;
  }
  return CancelOutcome::kNotFound;
}

std::vector<std::string> Scheduler::Shutdown(absl::Time deadline) {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    queue_.clear();
    queued_ids_.clear();
    queued_by_tenant_.clear();
    ReportDepthLocked();
    for (auto& [id, running] : running_) running.flag->shutdown.store(true);
    // A worker's loop returns once its run function has (shutting_down_
    // is set, so it takes no further job).
    if (!mu_.AwaitWithDeadline(absl::Condition(
                                   +[](int* live) { return *live == 0; }, &live_workers_),
                               deadline)) {
      std::vector<std::string> still_running;
      for (const auto& [id, running] : running_) still_running.push_back(id);
      return still_running;
    }
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  return {};
}

Scheduler::IdleSlots Scheduler::IdleSlotsToClaimFor() const {
  absl::MutexLock lock(&mu_);
  IdleSlots idle;
  if (!started_ || shutting_down_ || !queue_.empty()) return idle;
  for (int slot = 0; slot < slot_count(); ++slot) {
    if (busy_[slot] || held_[slot]) continue;
    ++(slot_devices_[slot] == "cpu" ? idle.cpu : idle.gpu);
  }
  return idle;
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

std::map<Scheduler::QueueKey, Scheduler::Entry>::iterator Scheduler::RunnableLocked(int slot) {
  if (held_[slot]) return queue_.end();
  const std::string& device = slot_devices_[slot];
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (!Fits(it->second.device, device)) continue;
    if (options_.max_running_per_tenant > 0) {
      auto running = running_by_tenant_.find(it->second.tenant);
      if (running != running_by_tenant_.end() &&
          running->second >= options_.max_running_per_tenant) {
        continue;
      }
    }
    if (it->second.slots > 1) {
      // A gang job that could never fit (forced in at recovery) is skipped;
      // one that fits later keeps this slot for itself until then.
      if (!CheckDevice(it->second.device, it->second.slots).ok()) continue;
      const auto free = FreeSlotsLocked(it->second.device, slot);
      if (static_cast<int>(free.size()) < it->second.slots - 1) return queue_.end();
    }
    return it;
  }
  return queue_.end();
}

void Scheduler::WorkerLoop(int slot) {
  struct Waiter {
    Scheduler* self;
    int slot;
  } waiter{this, slot};
  while (true) {
    std::string job_id;
    std::string tenant;
    std::shared_ptr<StopFlag> flag;
    {
      absl::MutexLock lock(&mu_);
      // Await evaluates the condition with mu_ held (the analysis cannot
      // see that through the function pointer).
      mu_.Await(absl::Condition(
          +[](Waiter* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return w->self->shutting_down_ || w->self->RunnableLocked(w->slot) != w->self->queue_.end();
          },
          &waiter));
      if (shutting_down_) {
        --live_workers_;
        return;
      }
      auto next = RunnableLocked(slot);
      job_id = next->second.job_id;
      tenant = next->second.tenant;
      std::vector<int> slots = {slot};
      if (next->second.slots > 1) {
        const auto free = FreeSlotsLocked(next->second.device, slot);
        slots.insert(slots.end(), free.begin(), free.begin() + (next->second.slots - 1));
      }
      busy_[slot] = true;
      for (size_t k = 1; k < slots.size(); ++k) held_[slots[k]] = true;
      queued_ids_.erase(job_id);
      if (--queued_by_tenant_[tenant] <= 0) queued_by_tenant_.erase(tenant);
      queue_.erase(next);
      flag = std::make_shared<StopFlag>();
      running_.emplace(job_id, Running{flag, tenant, std::move(slots)});
      ++running_by_tenant_[tenant];
      ReportDepthLocked();
    }
    run_(job_id, slot, *flag);
    {
      absl::MutexLock lock(&mu_);
      busy_[slot] = false;
      for (int s : running_[job_id].slots) {
        if (s != slot) held_[s] = false;
      }
      running_.erase(job_id);
      if (--running_by_tenant_[tenant] <= 0) running_by_tenant_.erase(tenant);
    }
    if (options_.on_slots_freed) options_.on_slots_freed();
  }
}

}  // namespace freezetune::jobs
