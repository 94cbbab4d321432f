// Timestep spacings against the formulas of docs/math.md, written out for T = 1000, S = 10.
#include <gtest/gtest.h>

#include "core/base/error.h"
#include "core/diffusion/spacing.h"

namespace diffusion {
namespace {

using Steps = std::vector<int64_t>;

TEST(Spacing, LeadingT1000S10) {
  // t_i = i·⌊1000/10⌋ for i = 9 … 0.
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kLeading, 1000, 10),
            (Steps{900, 800, 700, 600, 500, 400, 300, 200, 100, 0}));
}

TEST(Spacing, TrailingT1000S10) {
  // t_i = round(1000 - 100 i) - 1.
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kTrailing, 1000, 10),
            (Steps{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
}

TEST(Spacing, LinspaceT1000S10) {
  // round(linspace(0, 999, 10)) = 0, 111, …, 999 (999/9 = 111 exactly).
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kLinspace, 1000, 10),
            (Steps{999, 888, 777, 666, 555, 444, 333, 222, 111, 0}));
}

TEST(Spacing, UnevenStepCounts) {
  // S = 7: ⌊1000/7⌋ = 142; 1000/7 = 142.857…; 999/6 = 166.5 (half rounds to even: 166, 500, 832).
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kLeading, 1000, 7),
            (Steps{852, 710, 568, 426, 284, 142, 0}));
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kTrailing, 1000, 7),
            (Steps{999, 856, 713, 570, 428, 285, 142}));
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kLinspace, 1000, 7),
            (Steps{999, 832, 666, 500, 333, 166, 0}));
}

TEST(Spacing, FullAndSingleStep) {
  for (auto kind : {TimestepSpacing::kLeading, TimestepSpacing::kTrailing, TimestepSpacing::kLinspace}) {
    const auto all = timestep_spacing(kind, 20, 20);
    ASSERT_EQ(all.size(), 20u) << to_string(kind);
    for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(all[i], 19 - i) << to_string(kind);
  }
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kLeading, 1000, 1), Steps{0});
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kTrailing, 1000, 1), Steps{999});
  EXPECT_EQ(timestep_spacing(TimestepSpacing::kLinspace, 1000, 1), Steps{0});
}

TEST(Spacing, RefusesMoreStepsThanTimesteps) {
  EXPECT_THROW(timestep_spacing(TimestepSpacing::kLeading, 100, 101), Error);
  EXPECT_THROW(timestep_spacing(TimestepSpacing::kTrailing, 100, 0), Error);
  EXPECT_THROW(parse_timestep_spacing("uniform"), Error);
  EXPECT_EQ(parse_timestep_spacing("trailing"), TimestepSpacing::kTrailing);
}

}  // namespace
}  // namespace diffusion
