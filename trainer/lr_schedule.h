// The learning rate at a step (llm.c's schedulers.h): a linear warmup to the base rate, then
// constant or a cosine decay to a floor over the rest of the run.
#pragma once

#include <cstdint>

namespace diffusion {

// --lr-decay; train_options.cpp reads it from text.
enum class LrDecay { kConstant, kCosine };

struct LrSchedule {
  double lr = 2e-4;    // the base rate
  int64_t warmup = 0;  // steps of linear warmup; 0 = none
  LrDecay decay = LrDecay::kConstant;
  double lr_min = 0;   // cosine: the rate the decay ends at
  int64_t steps = 0;   // cosine: the run's total steps, which the decay spans after the warmup

  // The rate of optimiser step `step` (0-based). A pure function of the step, so a resumed run
  // follows the same curve bit for bit.
  //   warmup:  lr·(step+1)/warmup for step < warmup
  //   cosine:  lr_min + (lr − lr_min)·(1 + cos(π·p))/2, p = (step − warmup)/(steps − warmup),
  //            clamped to [0, 1]: lr at the end of the warmup, (lr + lr_min)/2 half-way, lr_min at `steps`
  double at(int64_t step) const;
};

}  // namespace diffusion
