// Keyed randomness: permutations are permutations, streams are reproducible and separated by
// their keys, and the draws have the right distributions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "core/base/rng.h"

namespace diffusion {
namespace {

TEST(Rng, SplitMixMatchesReferenceOutput) {
  // First outputs of the SplitMix64 reference generator seeded with 0 (Vigna's splitmix64.c):
  // the state advances by the golden gamma before mixing.
  KeyedRng rng(0);
  EXPECT_EQ(rng.next_u64(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(rng.next_u64(), 0x6E789E6AA1B965F4ull);
}

TEST(Rng, PermutationIsAPermutationAndDependsOnlyOnTheKey) {
  const auto p = keyed_permutation(1000, stream_key(5, RngPurpose::kEpochPermutation, {0}));
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(p, keyed_permutation(1000, stream_key(5, RngPurpose::kEpochPermutation, {0})));
  EXPECT_NE(p, keyed_permutation(1000, stream_key(5, RngPurpose::kEpochPermutation, {1})));
  EXPECT_NE(p, keyed_permutation(1000, stream_key(6, RngPurpose::kEpochPermutation, {0})));
  EXPECT_NE(stream_key(5, RngPurpose::kFlip, {0}), stream_key(5, RngPurpose::kEpochPermutation, {0}));
  EXPECT_NE(stream_key(5, RngPurpose::kNoise, {1, 2}), stream_key(5, RngPurpose::kNoise, {2, 1}));
}

TEST(Rng, PermutationPositionsAreUniform) {
  // Over many keys, element 0 lands in each of 4 slots about equally often (chi-square, 3 dof).
  std::vector<int> counts(4, 0);
  const int trials = 8000;
  for (int k = 0; k < trials; ++k) {
    const auto p = keyed_permutation(4, stream_key(1, RngPurpose::kEpochPermutation, {uint64_t(k)}));
    counts[std::find(p.begin(), p.end(), 0) - p.begin()]++;
  }
  double chi2 = 0;
  for (int c : counts) chi2 += (c - trials / 4.0) * (c - trials / 4.0) / (trials / 4.0);
  EXPECT_LT(chi2, 16.27);  // p = 0.001
}

TEST(Rng, BelowAndNormalHaveTheRightMoments) {
  KeyedRng rng(stream_key(9, RngPurpose::kNoise));
  const int n = 200000;
  double sum = 0, sum_sq = 0, below_sum = 0;
  for (int i = 0; i < n; ++i) {
    const double z = rng.normal();
    sum += z;
    sum_sq += z * z;
    const uint64_t b = rng.below(7);
    ASSERT_LT(b, 7u);
    below_sum += static_cast<double>(b);
  }
  EXPECT_NEAR(sum / n, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(sum_sq / n, 1.0, 5 * std::sqrt(2.0 / n));
  EXPECT_NEAR(below_sum / n, 3.0, 5 * 2.0 / std::sqrt(n));
}

TEST(Rng, NormalPairsAreUncorrelatedStandardNormals) {
  KeyedRng rng(stream_key(4, RngPurpose::kNoise));
  const int n = 200000;
  double s0 = 0, s1 = 0, q0 = 0, q1 = 0, cross = 0, tail = 0;
  for (int i = 0; i < n; ++i) {
    const auto [a, b] = rng.normal_pair();
    s0 += a, s1 += b, q0 += a * a, q1 += b * b, cross += a * b;
    tail += std::abs(a) > 1.959964;
  }
  EXPECT_NEAR(s0 / n, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(s1 / n, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(q0 / n, 1.0, 5 * std::sqrt(2.0 / n));
  EXPECT_NEAR(q1 / n, 1.0, 5 * std::sqrt(2.0 / n));
  EXPECT_NEAR(cross / n, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(tail / n, 0.05, 5 * std::sqrt(0.05 * 0.95 / n));  // two-sided 5% tail
}

}  // namespace
}  // namespace diffusion
