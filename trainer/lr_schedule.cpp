// The learning-rate schedule (see lr_schedule.h).
#include "trainer/lr_schedule.h"

#include <algorithm>

namespace diffusion {

double LrSchedule::at(int64_t step) const {
  return warmup > 0 ? lr * std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(warmup)) : lr;
}

}  // namespace diffusion
