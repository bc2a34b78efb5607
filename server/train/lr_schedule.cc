// LR schedule multipliers (see lr_schedule.h).
#include "server/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace freezetune::train {

double LrFactor(v1::LrSchedule schedule, int64_t step, int64_t total_steps,
                int64_t warmup_steps) {
  step = std::max<int64_t>(step, 0);
  if (step < warmup_steps) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / decay_steps);
  switch (schedule) {
    case v1::LR_SCHEDULE_CONSTANT:
      return 1.0;
    case v1::LR_SCHEDULE_COSINE:
      return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
    default:
      return std::max(0.0, 1.0 - progress);
  }
}

}  // namespace freezetune::train
