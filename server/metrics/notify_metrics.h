// Completion-callback metrics (server/notify), built once on the server's
// registry next to the other families:
//   freezetune_notify_attempts_total{result="delivered"|"failed"}  POSTs made
//   freezetune_notify_abandoned_total   callbacks given up after 24 h (max age)
//   freezetune_notify_pending           callbacks waiting for an attempt
// Thread safety: prometheus-cpp metrics are atomic.
#ifndef FREEZETUNE_SERVER_METRICS_NOTIFY_METRICS_H_
#define FREEZETUNE_SERVER_METRICS_NOTIFY_METRICS_H_

#include <cstdint>
#include <memory>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace freezetune::metrics {

class NotifyMetrics {
 public:
  explicit NotifyMetrics(prometheus::Registry& registry);
  void Attempt(bool delivered) { (delivered ? delivered_ : failed_)->Increment(); }
  void Abandoned() { abandoned_->Increment(); }
  void SetPending(int64_t n) { pending_->Set(static_cast<double>(n)); }

 private:
  prometheus::Counter* delivered_;
  prometheus::Counter* failed_;
  prometheus::Counter* abandoned_;
  prometheus::Gauge* pending_;
};

}  // namespace freezetune::metrics

#endif  // FREEZETUNE_SERVER_METRICS_NOTIFY_METRICS_H_
