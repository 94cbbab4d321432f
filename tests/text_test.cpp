// core/base/text.h: durations for progress lines and the first differing line of two texts,
// against hand-written expectations.
#include <gtest/gtest.h>

#include "core/base/text.h"

namespace diffusion {
namespace {

TEST(Text, FormatDurationPicksTheLargestUnitAndRounds) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(-3), "0s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.6), "1m00s");
  EXPECT_EQ(format_duration(187), "3m07s");
  EXPECT_EQ(format_duration(3600 * 2 + 5 * 60 + 59), "2h05m");
}

TEST(Text, FirstLineDifferenceNamesBothLines) {
  EXPECT_EQ(first_line_difference("a\nb\n", "a\nb\n"), "");
  EXPECT_EQ(first_line_difference("a\nb\nc\n", "a\nx\nc\n"), "'b' vs 'x'");
  // One text longer than the other: the missing line shows as empty.
  EXPECT_EQ(first_line_difference("a\n", "a\nz\n"), "'' vs 'z'");
  EXPECT_EQ(first_line_difference("a\nz", "a"), "'z' vs ''");
}

}  // namespace
}  // namespace diffusion
