#include "server/jobs/event_log.h"

#include <utility>

namespace freezetune::jobs {

EventLog::SubscriptionId EventLog::Subscribe(const std::string& job_id,
                                             std::function<void()> on_new_events) {
  return hub_.Subscribe(job_id, std::move(on_new_events));
}

void EventLog::Unsubscribe(SubscriptionId id) { hub_.Unsubscribe(id); }

void EventLog::Publish(const v1::JobEvent& event, bool final) {
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
  }
  // After the tail holds the event, so a woken watcher finds it there.
  hub_.Notify(event.job_id());
}

void EventLog::NotifyAll() { hub_.NotifyAll(); }

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

}  // namespace freezetune::jobs
