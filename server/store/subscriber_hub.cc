#include "server/store/subscriber_hub.h"

#include <algorithm>
#include <utility>

namespace freezetune::store {

SubscriberHub::~SubscriberHub() {
  std::thread delivery;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    delivery = std::move(delivery_);
  }
  if (delivery.joinable()) delivery.join();
}

SubscriberHub::SubscriptionId SubscriberHub::Subscribe(const std::string& key,
                                                       std::function<void()> on_new) {
  auto sub = std::make_shared<Subscriber>();
  sub->key = key;
  sub->callback = std::move(on_new);
  absl::MutexLock lock(&mu_);
  SubscriptionId id = next_id_++;
  subscribers_[id] = std::move(sub);
  by_key_[key].push_back(id);
  return id;
}

void SubscriberHub::Unsubscribe(SubscriptionId id) {
  std::shared_ptr<Subscriber> sub;
  {
    absl::MutexLock lock(&mu_);
    auto it = subscribers_.find(id);
    if (it == subscribers_.end()) return;
    sub = std::move(it->second);
    subscribers_.erase(it);
    auto key_it = by_key_.find(sub->key);
    if (key_it != by_key_.end()) {
      auto& ids = key_it->second;
      ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
      if (ids.empty()) by_key_.erase(key_it);
    }
  }
  // Waits for a callback running on another thread to return; re-entrant
  // when called from inside the callback.
  std::lock_guard<std::recursive_mutex> run_lock(sub->run_mu);
  sub->active = false;
}

std::vector<std::shared_ptr<SubscriberHub::Subscriber>> SubscriberHub::SubscribersOf(
    const std::string& key) const {
  std::vector<std::shared_ptr<Subscriber>> out;
  absl::MutexLock lock(&mu_);
  auto it = by_key_.find(key);
  if (it != by_key_.end()) {
    out.reserve(it->second.size());
    for (SubscriptionId id : it->second) out.push_back(subscribers_.at(id));
  }
  return out;
}

void SubscriberHub::Run(const std::vector<std::shared_ptr<Subscriber>>& subscribers) {
  for (const std::shared_ptr<Subscriber>& sub : subscribers) {
    std::lock_guard<std::recursive_mutex> run_lock(sub->run_mu);
    if (sub->active) sub->callback();
  }
}

void SubscriberHub::Notify(const std::string& key) { Run(SubscribersOf(key)); }

void SubscriberHub::NotifyAll() {
  std::vector<std::shared_ptr<Subscriber>> all;
  {
    absl::MutexLock lock(&mu_);
    all.reserve(subscribers_.size());
    for (const auto& [id, sub] : subscribers_) all.push_back(sub);
  }
  Run(all);
}

void SubscriberHub::Post(const std::string& key) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  if (!delivery_.joinable()) delivery_ = std::thread([this] { DeliveryLoop(); });
  // A key already pending is delivered after this call, which is all that
  // "something new exists" needs.
  if (pending_set_.insert(key).second) pending_.push_back(key);
}

void SubscriberHub::DeliveryLoop() {
  while (true) {
    std::string key;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](SubscriberHub* h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(h->mu_) {
            return h->stopping_ || !h->pending_.empty();
          },
          this));
      if (stopping_) return;
      key = std::move(pending_.front());
      pending_.pop_front();
      // Removed before the callbacks run: a Post that lands while they run
      // queues the key again, so nothing posted meanwhile is missed.
      pending_set_.erase(key);
    }
    Notify(key);
  }
}

size_t SubscriberHub::subscriber_count() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

size_t SubscriberHub::subscriber_count(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? 0 : it->second.size();
}

size_t SubscriberHub::subscriber_count_with_prefix(const std::string& prefix) const {
  absl::MutexLock lock(&mu_);
  size_t count = 0;
  for (const auto& [key, ids] : by_key_) {
    if (key.compare(0, prefix.size(), prefix) == 0) count += ids.size();
  }
  return count;
}

}  // namespace freezetune::store
