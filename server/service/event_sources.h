// The two EventSources (event_stream_reactor.h) behind the watch RPCs:
//   JobEventSource    one job's events: JobManager's event log (notified on
//                     the training thread that publishes) and ReadEvents
//                     (in-memory tail, then the store). Final: a StateChange
//                     to a terminal state. Drained: the JobManager drained.
//   SweepEventSource  one sweep's events: SweepManager's subscriptions
//                     (notified from its delivery thread after Emit) and
//                     ReadEvents. Final: the event carrying `result`.
//                     Drained: the SweepManager's monitor stopped.
// Each borrows its manager, which must outlive it (the gRPC server is shut
// down, ending every stream, before the managers go).
#ifndef FREEZETUNE_SERVER_SERVICE_EVENT_SOURCES_H_
#define FREEZETUNE_SERVER_SERVICE_EVENT_SOURCES_H_

#include <functional>
#include <string>
#include <vector>

#include "freezetune/v1/freezetune.pb.h"
#include "server/jobs/job_manager.h"
#include "server/sweeps/sweep_manager.h"
#include "server/service/event_stream_reactor.h"

namespace freezetune::service {

class JobEventSource final : public EventSource<v1::JobEvent> {
 public:
  JobEventSource(jobs::JobManager* manager, std::string job_id)
      : manager_(manager), job_id_(std::move(job_id)) {}
  SubscriptionId Subscribe(std::function<void()> on_new) override;
  void Unsubscribe(SubscriptionId id) override;
  absl::StatusOr<std::vector<v1::JobEvent>> Read(int64_t after, int limit) override;
  bool IsFinal(const v1::JobEvent& event) const override;
  bool Drained() const override;

 private:
  jobs::JobManager* const manager_;
  const std::string job_id_;
};

class SweepEventSource final : public EventSource<v1::SweepEvent> {
 public:
  SweepEventSource(sweeps::SweepManager* sweeps, std::string sweep_id)
      : sweeps_(sweeps), sweep_id_(std::move(sweep_id)) {}
  SubscriptionId Subscribe(std::function<void()> on_new) override;
  void Unsubscribe(SubscriptionId id) override;
  absl::StatusOr<std::vector<v1::SweepEvent>> Read(int64_t after, int limit) override;
  bool IsFinal(const v1::SweepEvent& event) const override;
  bool Drained() const override;

 private:
  sweeps::SweepManager* const sweeps_;
  const std::string sweep_id_;
};

}  // namespace freezetune::service

#endif  // FREEZETUNE_SERVER_SERVICE_EVENT_SOURCES_H_
