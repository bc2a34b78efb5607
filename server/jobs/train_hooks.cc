// Binds TrainHooks to the real train layer. Built only when freezetune_train
// exists (see CMakeLists.txt), so the rest of jobs/ builds and tests without
// LibTorch.
#include "server/base/malloc_tuning.h"
#include "server/jobs/job_manager.h"
#include "server/train/fine_tune.h"
#include "server/train/prefix_store.h"

namespace freezetune::jobs {

TrainHooks DefaultTrainHooks(int64_t prefix_cache_bytes, bool prefix_cache_shared,
                             absl::Duration data_parallel_timeout) {
  TrainHooks hooks;
  hooks.validate = &train::ValidateJob;
  hooks.plan_freeze = &train::PlanFreeze;
  // One store for every job of the process, so that jobs on the same model
  // and data (a sweep's trials) share their frozen-prefix outputs.
  auto store = std::make_shared<train::PrefixStore>(prefix_cache_bytes);
  const int64_t timeout_ms = absl::ToInt64Milliseconds(data_parallel_timeout);
  hooks.run = [store, prefix_cache_shared, timeout_ms](const v1::FineTuneJob& job,
                                                       const train::RunContext& context) {
    train::RunContext shared = context;
    shared.prefix_store = store;
    shared.prefix_cache_shared = shared.prefix_cache_shared || prefix_cache_shared;
    shared.data_parallel_timeout_ms = timeout_ms;
    absl::StatusOr<v1::JobResult> result = train::RunFineTune(job, shared);
    // The step's temporaries were kept for reuse (base/malloc_tuning.h):
    // give them back between jobs.
    base::ReleaseFreeMemory();
    return result;
  };
  return hooks;
}

}  // namespace freezetune::jobs
