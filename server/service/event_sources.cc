#include "server/service/event_sources.h"

#include <utility>

namespace freezetune::service {

JobEventSource::SubscriptionId JobEventSource::Subscribe(std::function<void()> on_new) {
  return manager_->Subscribe(job_id_, std::move(on_new));
}

void JobEventSource::Unsubscribe(SubscriptionId id) { manager_->Unsubscribe(id); }

absl::StatusOr<std::vector<v1::JobEvent>> JobEventSource::Read(int64_t after, int limit) {
  return manager_->ReadEvents(job_id_, after, limit);
}

bool JobEventSource::IsFinal(const v1::JobEvent& event) const {
  return event.has_state_change() && store::IsTerminal(event.state_change().state());
}

bool JobEventSource::Drained() const { return manager_->drained(); }

SweepEventSource::SubscriptionId SweepEventSource::Subscribe(std::function<void()> on_new) {
  return sweeps_->Subscribe(sweep_id_, std::move(on_new));
}

void SweepEventSource::Unsubscribe(SubscriptionId id) { sweeps_->Unsubscribe(id); }

absl::StatusOr<std::vector<v1::SweepEvent>> SweepEventSource::Read(int64_t after, int limit) {
  return sweeps_->ReadEvents(sweep_id_, after, limit);
}

bool SweepEventSource::IsFinal(const v1::SweepEvent& event) const { return event.has_result(); }

bool SweepEventSource::Drained() const { return sweeps_->stopped(); }

}  // namespace freezetune::service
