// The sampler's split of sample indices over ranks: contiguous blocks that cover 0 … N-1
// exactly once, in rank order, differing in size by at most one.
#include <gtest/gtest.h>

#include "sampler/generation.h"

namespace diffusion {
namespace {

TEST(SampleSplit, CoversEveryIndexOnceInRankOrder) {
  for (int64_t n : {1, 2, 3, 7, 50, 1000, 1001}) {
    for (int w = 1; w <= 4; ++w) {
      int64_t next = 0, smallest = n, largest = 0;
      for (int r = 0; r < w; ++r) {
        const auto range = rank_sample_range(n, w, r);
        EXPECT_EQ(range.begin, next) << "N=" << n << " W=" << w << " rank " << r;
        EXPECT_LE(range.begin, range.end);
        smallest = std::min(smallest, range.end - range.begin);
        largest = std::max(largest, range.end - range.begin);
        next = range.end;
      }
      EXPECT_EQ(next, n) << "N=" << n << " W=" << w;
      EXPECT_LE(largest - smallest, 1) << "N=" << n << " W=" << w;
    }
  }
}

}  // namespace
}  // namespace diffusion
