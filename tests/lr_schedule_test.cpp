// trainer/lr_schedule.h against hand-computed values: lr·min(1, (step+1)/warmup), then constant or
// lr_min + (lr − lr_min)·(1 + cos(π·(step − warmup)/(steps − warmup)))/2.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/lr_schedule.h"

namespace diffusion {
namespace {

TEST(LrSchedule, LinearWarmupThenConstant) {
  const LrSchedule s{1e-3, 4};
  EXPECT_DOUBLE_EQ(s.at(0), 0.25e-3);
  EXPECT_DOUBLE_EQ(s.at(1), 0.5e-3);
  EXPECT_DOUBLE_EQ(s.at(3), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(100), 1e-3);
}

TEST(LrSchedule, NoWarmupIsConstant) {
  const LrSchedule s{2e-4, 0};
  EXPECT_DOUBLE_EQ(s.at(0), 2e-4);
  EXPECT_DOUBLE_EQ(s.at(7), 2e-4);
}

// lr 1e-2, lr_min 1e-3, warmup 10, 110 steps: the decay spans steps 10..110.
TEST(LrSchedule, CosineFromTheEndOfTheWarmupToLrMin) {
  const LrSchedule s{1e-2, 10, LrDecay::kCosine, 1e-3, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-3);   // warmup unchanged: 1e-2·1/10
  EXPECT_DOUBLE_EQ(s.at(9), 1e-2);   // warmup end
  EXPECT_DOUBLE_EQ(s.at(10), 1e-2);  // decay start, p = 0
  // p = 1/4: 1e-3 + 9e-3·(1 + cos(π/4))/2
  EXPECT_DOUBLE_EQ(s.at(35), 1e-3 + 9e-3 * (1 + std::sqrt(0.5)) / 2);
  EXPECT_NEAR(s.at(60), 5.5e-3, 1e-15);  // midpoint: (lr + lr_min)/2
  // the last step, p = 99/100: just above lr_min
  EXPECT_DOUBLE_EQ(s.at(109), 1e-3 + 9e-3 * (1 + std::cos(M_PI * 0.99)) / 2);
  EXPECT_DOUBLE_EQ(s.at(110), 1e-3);  // p = 1: lr_min
  EXPECT_DOUBLE_EQ(s.at(500), 1e-3);  // past the end (a run resumed with more steps reads its own schedule)
}

TEST(LrSchedule, CosineWithoutWarmupToZero) {
  const LrSchedule s{4e-3, 0, LrDecay::kCosine, 0, 100};
  EXPECT_DOUBLE_EQ(s.at(0), 4e-3);
  EXPECT_NEAR(s.at(50), 2e-3, 1e-18);
  EXPECT_NEAR(s.at(100), 0.0, 1e-18);
  for (int64_t i = 1; i <= 100; ++i) EXPECT_LT(s.at(i), s.at(i - 1)) << "step " << i;
}

// A run shorter than its warmup never leaves it; the decay does not start.
TEST(LrSchedule, CosineRunShorterThanItsWarmupStaysInTheWarmup) {
  const LrSchedule s{1e-2, 100, LrDecay::kCosine, 0, 10};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(150), 1e-2);  // past the warmup, nothing to decay over: the base rate
}

// The schedule is a pure function of the step: a resumed run (a new object, steps in any order)
// reads the same bits.
TEST(LrSchedule, PureFunctionOfTheStep) {
  const LrSchedule a{3e-3, 50, LrDecay::kCosine, 1e-4, 1000};
  const LrSchedule b = a;
  for (int64_t i = 999; i >= 0; i -= 7) EXPECT_EQ(a.at(i), b.at(i));
}

}  // namespace
}  // namespace diffusion
