// trainer/lr_schedule.h against its closed form lr·min(1, (step+1)/warmup).
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace diffusion
