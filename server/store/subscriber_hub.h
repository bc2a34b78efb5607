// Notify-only fan-out keyed by a string (a job id, a sweep id). A subscriber
// registers a callback that means "something new may exist for this key" and
// pulls the news itself, so a slow subscriber never makes a publisher wait or
// buffer. EventLog (job events) and SweepManager (sweep events) both notify
// their watchers through one of these.
//
// Two ways to notify:
//   Notify(key)  runs the key's callbacks now, on the caller's thread.
//   Post(key)    runs them soon on the hub's own delivery thread (started on
//                the first Post). For a publisher that holds a lock its
//                subscribers' callbacks take: SweepManager emits under its
//                mutex, and a watcher's callback reads events under that
//                same mutex, so an inline callback would deadlock.
//                Posts of one key coalesce while pending; every callback
//                subscribed to the key still runs at least once after each
//                Post() call returns.
// A subscriber that subscribes BEFORE it reads what the publisher stores, and
// a publisher that stores BEFORE it notifies, together leave no gaps: an
// item is either in what the subscriber read or announced afterwards.
//
// Thread safety: every method may be called from any thread. Callbacks run
// with no hub lock held and must not block for long. After Unsubscribe(id)
// returns, that callback is not running on another thread and will not be
// invoked again; Unsubscribe may be called from inside the callback itself.
// The destructor joins the delivery thread; posts still pending then are
// dropped (their subscribers must be gone by then anyway).
#ifndef FREEZETUNE_SERVER_STORE_SUBSCRIBER_HUB_H_
#define FREEZETUNE_SERVER_STORE_SUBSCRIBER_HUB_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace freezetune::store {

class SubscriberHub {
 public:
  using SubscriptionId = uint64_t;

  SubscriberHub() = default;
  ~SubscriberHub();
  SubscriberHub(const SubscriberHub&) = delete;
  SubscriberHub& operator=(const SubscriberHub&) = delete;

  // `on_new` is invoked after each Notify/Post of `key`. Ids start at 1.
  SubscriptionId Subscribe(const std::string& key, std::function<void()> on_new);
  // Unknown or already removed ids are ignored.
  void Unsubscribe(SubscriptionId id);

  // Runs `key`'s callbacks on this thread before returning.
  void Notify(const std::string& key);
  // Queues `key` for the delivery thread; never runs a callback itself.
  void Post(const std::string& key);
  // Runs every subscriber's callback on this thread (e.g. so that watchers
  // notice a shutdown).
  void NotifyAll();

  size_t subscriber_count() const;
  size_t subscriber_count(const std::string& key) const;
  // Subscriptions of every key that starts with `prefix`.
  size_t subscriber_count_with_prefix(const std::string& prefix) const;

 private:
  struct Subscriber {
    std::string key;
    std::function<void()> callback;
    // Held while the callback runs; recursive so that the callback itself
    // may unsubscribe.
    std::recursive_mutex run_mu;
    bool active = true;  // guarded by run_mu
  };

  // Runs each callback unless it was unsubscribed meanwhile.
  static void Run(const std::vector<std::shared_ptr<Subscriber>>& subscribers);
  std::vector<std::shared_ptr<Subscriber>> SubscribersOf(const std::string& key) const;
  void DeliveryLoop();

  mutable absl::Mutex mu_;
  SubscriptionId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<SubscriptionId, std::shared_ptr<Subscriber>> subscribers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<SubscriptionId>> by_key_ ABSL_GUARDED_BY(mu_);

  // Post(): keys waiting for the delivery thread, in post order, each once.
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> pending_set_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread delivery_ ABSL_GUARDED_BY(mu_);
};

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_SUBSCRIBER_HUB_H_
