// Watches whether the store's backend can be reached, for readiness: a
// thread calls Store::Ping() every `interval` and calls `on_change(false)`
// when a ping fails after one succeeded (or the first one fails), and
// `on_change(true)` when pings succeed again. The server ties its gRPC health
// to it, so a replica cut off from its PostgreSQL reports NOT_SERVING and
// leaves the Service's endpoints until it can reach the database again.
// Transitions are logged (the error once, not every interval).
//
// Thread safety: construct and destroy from one thread; `on_change` runs on
// the probe's thread and never after the destructor returns. The store must
// outlive the probe.
#ifndef FREEZETUNE_SERVER_STORE_STORE_PROBE_H_
#define FREEZETUNE_SERVER_STORE_STORE_PROBE_H_

#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store/store.h"

namespace freezetune::store {

class StoreProbe {
 public:
  // Starts probing at once; the state is taken to be reachable until a ping
  // fails (the store was just opened).
  StoreProbe(Store* store, absl::Duration interval, std::function<void(bool reachable)> on_change);
  // Stops the thread (waits for a ping in flight).
  ~StoreProbe();
  StoreProbe(const StoreProbe&) = delete;
  StoreProbe& operator=(const StoreProbe&) = delete;

  // The last ping's outcome.
  bool reachable() const;

 private:
  void Run();

  Store* const store_;
  const absl::Duration interval_;
  const std::function<void(bool)> on_change_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool reachable_ ABSL_GUARDED_BY(mu_) = true;
  std::thread thread_;
};

}  // namespace freezetune::store

#endif  // FREEZETUNE_SERVER_STORE_STORE_PROBE_H_
