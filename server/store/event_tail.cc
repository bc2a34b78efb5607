#include "server/store/event_tail.h"

#include <utility>

namespace freezetune::store {

void EventTail::Publish(const std::string& key, int64_t sequence, std::string bytes, bool final) {
  absl::MutexLock lock(&mu_);
  if (final) {
    tails_.erase(key);
    return;
  }
  auto& tail = tails_[key];
  // A tail must be contiguous: after a gap start over.
  if (!tail.empty() && tail.back().first + 1 != sequence) tail.clear();
  tail.emplace_back(sequence, std::move(bytes));
  while (tail.size() > tail_size_) tail.pop_front();
}

void EventTail::Forget(const std::string& key) {
  absl::MutexLock lock(&mu_);
  tails_.erase(key);
}

void EventTail::ForgetAll() {
  absl::MutexLock lock(&mu_);
  tails_.clear();
}

bool EventTail::Read(const std::string& key, int64_t after_sequence, int limit,
                     std::vector<std::pair<int64_t, std::string>>* out) const {
  absl::MutexLock lock(&mu_);
  auto it = tails_.find(key);
  if (it == tails_.end() || it->second.empty()) return false;
  const auto& tail = it->second;
  if (tail.front().first > after_sequence + 1) return false;
  int added = 0;
  for (const auto& event : tail) {
    if (event.first <= after_sequence) continue;
    if (limit > 0 && added >= limit) break;
    out->push_back(event);
    ++added;
  }
  return true;
}

}  // namespace freezetune::store
