// A small in-memory tail of each live resource's newest events (serialized,
// with their sequence), so that live watchers rarely touch the database: a
// thousand watchers of one job read the event the trainer just appended from
// memory.
//
// Store (store.h) records an event here after its transaction commits and
// before it notifies subscribers, so a woken watcher finds it here.
//
// Thread safety: every method may be called from any thread.
#ifndef FREEZETUNE_SERVER_STORE_EVENT_TAIL_H_
#define FREEZETUNE_SERVER_STORE_EVENT_TAIL_H_

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace freezetune::store {

class EventTail {
 public:
  // Events kept per key in memory; older ones come from the database.
  static constexpr size_t kDefaultTailSize = 256;

  explicit EventTail(size_t tail_size = kDefaultTailSize) : tail_size_(tail_size) {}
  EventTail(const EventTail&) = delete;
  EventTail& operator=(const EventTail&) = delete;

  // Records the event `sequence` of `key` (already stored). `final` marks the
  // resource's last event: its tail is dropped (watchers still behind read
  // the database). A sequence that does not follow the tail's last one
  // (e.g. written by another process) starts the tail over.
  void Publish(const std::string& key, int64_t sequence, std::string bytes, bool final);

  // Drops `key`'s tail (another process appended to it), or every tail.
  void Forget(const std::string& key);
  void ForgetAll();

  // Appends to `out` the tail's events with sequence > after_sequence (at
  // most `limit`, <= 0 for all). Returns false when the tail cannot prove it
  // holds every such event (no tail, or after_sequence + 1 is older than its
  // first event): the caller must read the database.
  bool Read(const std::string& key, int64_t after_sequence, int limit,
            std::vector<std::pair<int64_t, std::string>>* out) const;

 private:
  const size_t tail_size_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::deque<std::pair<int64_t, std::string>>> tails_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_EVENT_TAIL_H_
