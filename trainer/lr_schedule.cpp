// The learning-rate schedule (see lr_schedule.h).
#include "trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace diffusion {

double LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  // With no steps after the warmup there is nothing to decay over: a short run of a cosine config
  // (--steps 10 with warmup 100, as tests and smoke runs do) stays in its warmup, and is not refused.
  if (decay == LrDecay::kConstant || steps <= warmup) return lr;
  const double p = std::clamp(static_cast<double>(step - warmup) / static_cast<double>(steps - warmup), 0.0, 1.0);
  return lr_min + (lr - lr_min) * 0.5 * (1.0 + std::cos(M_PI * p));
}

}  // namespace diffusion
