// The learning rate at a step (llm.c's schedulers.h): the base rate after a linear warmup.
#pragma once

#include <cstdint>

namespace diffusion {

struct LrSchedule {
  double lr = 2e-4;    // the base rate
  int64_t warmup = 0;  // steps of linear warmup; 0 = none

  // The rate of optimiser step `step` (0-based): lr·min(1, (step+1)/warmup).
  double at(int64_t step) const;
};

}  // namespace diffusion
