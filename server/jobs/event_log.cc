#include "server/jobs/event_log.h"

#include <algorithm>
#include <utility>

namespace freezetune::jobs {

EventLog::SubscriptionId EventLog::Subscribe(const std::string& job_id,
                                             std::function<void()> on_new_events) {
  auto sub = std::make_shared<Subscriber>();
  sub->job_id = job_id;
  sub->callback = std::move(on_new_events);
  absl::MutexLock lock(&mu_);
  SubscriptionId id = next_id_++;
  subscribers_[id] = std::move(sub);
  by_job_[job_id].push_back(id);
  return id;
}

void EventLog::Unsubscribe(SubscriptionId id) {
  std::shared_ptr<Subscriber> sub;
  {
    absl::MutexLock lock(&mu_);
    auto it = subscribers_.find(id);
    if (it == subscribers_.end()) return;
    sub = std::move(it->second);
    subscribers_.erase(it);
    auto job_it = by_job_.find(sub->job_id);
    if (job_it != by_job_.end()) {
      auto& ids = job_it->second;
      ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
      if (ids.empty()) by_job_.erase(job_it);
    }
  }
  // Waits for a callback running on another thread to return; re-entrant
  // when called from inside the callback.
  std::lock_guard<std::recursive_mutex> run_lock(sub->run_mu);
  sub->active = false;
}

void EventLog::Publish(const v1::JobEvent& event, bool final) {
  std::vector<std::shared_ptr<Subscriber>> to_notify;
  {
    absl::MutexLock lock(&mu_);
    if (final) {
      tails_.erase(event.job_id());
    } else {
      std::deque<v1::JobEvent>& tail = tails_[event.job_id()];
      // A tail must be contiguous: after a gap (e.g. a restart) start over.
      if (!tail.empty() && tail.back().sequence() + 1 != event.sequence()) tail.clear();
      tail.push_back(event);
      while (tail.size() > tail_size_) tail.pop_front();
    }
    auto it = by_job_.find(event.job_id());
    if (it != by_job_.end()) {
      for (SubscriptionId id : it->second) to_notify.push_back(subscribers_.at(id));
    }
  }
  for (const std::shared_ptr<Subscriber>& sub : to_notify) {
    std::lock_guard<std::recursive_mutex> run_lock(sub->run_mu);
    if (sub->active) sub->callback();
  }
}

void EventLog::NotifyAll() {
  std::vector<std::shared_ptr<Subscriber>> to_notify;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, sub] : subscribers_) to_notify.push_back(sub);
  }
  for (const std::shared_ptr<Subscriber>& sub : to_notify) {
    std::lock_guard<std::recursive_mutex> run_lock(sub->run_mu);
    if (sub->active) sub->callback();
  }
}

bool EventLog::ReadTail(const std::string& job_id, int64_t after_sequence, int limit,
                        std::vector<v1::JobEvent>* out) const {
  absl::MutexLock lock(&mu_);
  auto it = tails_.find(job_id);
  if (it == tails_.end() || it->second.empty()) return false;
  const std::deque<v1::JobEvent>& tail = it->second;
  if (tail.front().sequence() > after_sequence + 1) return false;
  int added = 0;
  for (const v1::JobEvent& event : tail) {
    if (event.sequence() <= after_sequence) continue;
    if (limit > 0 && added >= limit) break;
    out->push_back(event);
    ++added;
  }
  return true;
}

size_t EventLog::subscriber_count() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

}  // namespace freezetune::jobs
