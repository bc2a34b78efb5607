// Live fan-out of job events to watchers, plus a small in-memory tail of each
// running job's newest events so that live watchers rarely touch the store.
//
// The publisher (a training thread) appends an event to the store first, then
// calls Publish(): that copies the event into the job's tail and invokes each
// subscriber's callback, which only signals "something new exists". The
// subscriber pulls events itself (ReadTail, falling back to the store), so a
// slow watcher never blocks the publisher and never makes it buffer.
//
// A watcher subscribes BEFORE it reads the store, so an event is either in
// what it read or announced by a later callback: no gaps.
//
// Subscriptions are a SubscriberHub's (subscriber_hub.h), with its contract.
//
// Thread safety: all methods may be called from any thread. Callbacks run on
// the publisher's thread (Publish uses the hub's inline Notify) with no
// EventLog lock held; they must not block.
// After Unsubscribe(id) returns, that callback is not running on another
// thread and will not be invoked again (it may be called from inside the
// callback itself).
#ifndef FREEZETUNE_SERVER_JOBS_EVENT_LOG_H_
#define FREEZETUNE_SERVER_JOBS_EVENT_LOG_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "freezetune/v1/freezetune.pb.h"
#include "server/jobs/subscriber_hub.h"

namespace freezetune::jobs {

class EventLog {
 public:
  // Events kept per job in memory; older ones come from the store.
  static constexpr size_t kDefaultTailSize = 256;

  explicit EventLog(size_t tail_size = kDefaultTailSize) : tail_size_(tail_size) {}
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  using SubscriptionId = SubscriberHub::SubscriptionId;
  // `on_new_events` is invoked after each Publish for `job_id`.
  SubscriptionId Subscribe(const std::string& job_id, std::function<void()> on_new_events);
  void Unsubscribe(SubscriptionId id);

  // Records `event` (already stored, sequence assigned) in the job's tail and
  // notifies the job's subscribers. `final` marks the job's last event: the
  // tail is then dropped (watchers still behind read the store).
  void Publish(const v1::JobEvent& event, bool final);

  // Invokes every subscriber's callback (e.g. so watchers notice shutdown).
  void NotifyAll();

  // Appends to `out` the tail events with sequence > after_sequence (at most
  // `limit`, <= 0 for all). Returns false when the tail cannot prove it holds
  // every such event (no tail, or after_sequence + 1 is older than the
  // tail's first event): the caller must read the store.
  bool ReadTail(const std::string& job_id, int64_t after_sequence, int limit,
                std::vector<v1::JobEvent>* out) const;

  size_t subscriber_count() const { return hub_.subscriber_count(); }

 private:
  const size_t tail_size_;
  SubscriberHub hub_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::deque<v1::JobEvent>> tails_ ABSL_GUARDED_BY(mu_);
};

}  // namespace freezetune::jobs

#endif  // FREEZETUNE_SERVER_JOBS_EVENT_LOG_H_
