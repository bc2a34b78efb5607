// Learning-rate schedules as a multiplier of the peak rate, matching
// transformers' get_{linear,cosine,constant}_schedule_with_warmup. Torch-free.
#ifndef FREEZETUNE_SERVER_TRAIN_LR_SCHEDULE_H_
#define FREEZETUNE_SERVER_TRAIN_LR_SCHEDULE_H_

#include <cstdint>

#include "freezetune/v1/freezetune.pb.h"

namespace freezetune::train {

// Multiplier for optimizer step `step` (0-based: the first update uses
// step 0). Warmup rises linearly from 0 over `warmup_steps`; then LINEAR
// (and UNSPECIFIED) decays linearly to 0 at `total_steps`, COSINE follows half a
// cosine to 0, CONSTANT stays at 1. Always in [0, 1].
double LrFactor(v1::LrSchedule schedule, int64_t step, int64_t total_steps, int64_t warmup_steps);

}  // namespace freezetune::train

#endif  // FREEZETUNE_SERVER_TRAIN_LR_SCHEDULE_H_
