#include "server/store/store_probe.h"

#include <utility>

#include "server/base/log.h"

namespace freezetune::store {

StoreProbe::StoreProbe(Store* store, absl::Duration interval,
                       std::function<void(bool reachable)> on_change)
    : store_(store), interval_(interval), on_change_(std::move(on_change)) {
  thread_ = std::thread([this] { Run(); });
}

StoreProbe::~StoreProbe() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

bool StoreProbe::reachable() const {
  absl::MutexLock lock(&mu_);
  return reachable_;
}

void StoreProbe::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), interval_)) return;
    }
    const absl::Status status = store_->Ping();
    bool changed = false;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      changed = reachable_ != status.ok();
      reachable_ = status.ok();
    }
    if (!changed) continue;
    if (status.ok()) {
      base::Log(base::LogLevel::kInfo, "job store reachable again");
    } else {
      base::Log(base::LogLevel::kWarning, "job store unreachable",
                {}, {{"error", std::string(status.message())}});
    }
    on_change_(status.ok());
  }
}

}  // namespace freezetune::store
