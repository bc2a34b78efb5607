#include "server/metrics/notify_metrics.h"

namespace freezetune::metrics {

NotifyMetrics::NotifyMetrics(prometheus::Registry& registry) {
  auto& attempts = prometheus::BuildCounter()
                       .Name("freezetune_notify_attempts_total")
                       .Help("Completion-callback POSTs by result: delivered (2xx) or failed.")
                       .Register(registry);
  delivered_ = &attempts.Add({{"result", "delivered"}});
  failed_ = &attempts.Add({{"result", "failed"}});
  abandoned_ = &prometheus::BuildCounter()
                    .Name("freezetune_notify_abandoned_total")
                    .Help("Completion callbacks given up after retrying for their maximum age.")
                    .Register(registry)
                    .Add({});
  pending_ = &prometheus::BuildGauge()
                  .Name("freezetune_notify_pending")
                  .Help("Completion callbacks waiting to be delivered.")
                  .Register(registry)
                  .Add({});
}

}  // namespace freezetune::metrics
