// Binds TrainHooks to the real train layer. Built only when freezetune_train
// exists (see CMakeLists.txt), so the rest of jobs/ builds and tests without
// LibTorch.
#include "server/data/uri.h"
#include "server/jobs/job_manager.h"
#include "server/train/fine_tune.h"

namespace freezetune::jobs {

TrainHooks DefaultTrainHooks() {
  TrainHooks hooks;
  hooks.validate = &train::ValidateJob;
  hooks.plan_freeze = &train::PlanFreeze;
  hooks.run = &train::RunFineTune;
  hooks.resolve_output_dir = &data::ResolveOutputDir;
  return hooks;
}

}  // namespace freezetune::jobs
