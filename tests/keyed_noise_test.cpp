// Keyed batched noise (core/base/keyed_normal.h, core/diffusion/keyed_noise.h): the portable ln
// and sincos against libm, keyed_normal against a scalar KeyedRng + std:: reference, rows that do
// not depend on their batch, position or thread count, the moments of the stream, the training
// draws against the per-sample loop they replace, and CUDA equal to CPU bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/base/keyed_normal.h"
#include "core/base/rng.h"
#include "core/diffusion/keyed_noise.h"
#include "tests/test_utils.h"
#include "trainer/training_draws.h"

namespace diffusion {
namespace {

// Distance in float32 ulps (the float bit patterns ordered as integers).
int64_t ulp_distance(float a, float b) {
  const auto ordered = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, sizeof i);
    return i < 0 ? int64_t{INT32_MIN} - i : int64_t{i};
  };
  return std::abs(ordered(a) - ordered(b));
}

// Today's scalar path: pair p of KeyedRng(key) through std::log, std::cos, std::sin.
std::vector<float> reference_row(uint64_t key, int64_t n) {
  KeyedRng rng(key);
  std::vector<float> row(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; k += 2) {
    double u1 = rng.uniform();
    const double u2 = rng.uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1));
    row[k] = static_cast<float>(r * std::cos(2.0 * M_PI * u2));
    if (k + 1 < n) row[k + 1] = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
  }
  return row;
}

std::vector<uint64_t> noise_keys(uint64_t seed, int64_t rows) {
  std::vector<uint64_t> keys;
  for (int64_t i = 0; i < rows; ++i)
    keys.push_back(stream_key(seed, RngPurpose::kNoise, {17, static_cast<uint64_t>(i)}));
  return keys;
}

TEST(PortableMath, LogMatchesStdLogToRelativeE14) {
  std::vector<double> xs = {1e-300, std::nextafter(1e-300, 1.0), 0x1.0p-53, 0.5, 1.0,
                            std::nextafter(1.0, 0.0), M_SQRT1_2, std::nextafter(M_SQRT1_2, 0.0),
                            std::nextafter(M_SQRT1_2, 1.0), M_SQRT2, std::nextafter(M_SQRT2, 0.0)};
  for (int k = 1; k <= 2000; ++k) xs.push_back(1.0 - k * 0x1.0p-53);  // u1 next to 1
  for (int k = 1; k <= 2000; ++k) xs.push_back(1e-300 * (1.0 + k * 1e-3));  // next to the clamp
  KeyedRng rng(stream_key(1, RngPurpose::kNoise));
  for (int k = 0; k < 200000; ++k) {
    const double u = rng.uniform() + 0x1.0p-54;                             // (0, 1)
    xs.push_back(u);
    xs.push_back(std::ldexp(u, -static_cast<int>(rng.below(990))));  // every exponent down to 1e-300
  }
  for (double x : xs) {
    const double ours = portable_log(x), ref = std::log(x);
    if (ref == 0.0) {
      ASSERT_EQ(ours, 0.0) << "x = " << x;
      continue;
    }
    ASSERT_LT(std::abs(ours - ref), 1e-14 * std::abs(ref)) << "x = " << std::hexfloat << x;
  }
}

TEST(PortableMath, SinCosOfTwoPiUMatchStdToE14OrE15NearZeros) {
  std::vector<double> us = {0.0, 1.0, 0x1.0p-53, 0x1.0p-30, 1.0 - 0x1.0p-53};
  for (int k = 0; k <= 8; ++k)  // octant boundaries and their neighbours
    for (int d = -50; d <= 50; ++d) {
      const double u = k / 8.0 + d * 0x1.0p-53;
      if (u >= 0.0 && u <= 1.0) us.push_back(u);
    }
  for (int k = 1; k <= 1000; ++k) us.push_back(k * 0x1.0p-53);  // u2 next to 0
  KeyedRng rng(stream_key(2, RngPurpose::kNoise));
  for (int k = 0; k < 400000; ++k) us.push_back(rng.uniform());
  // std's 2π·u is rounded before sin/cos see it, an absolute error ~1e-16 that is large relative
  // to the value only next to a zero: there the bound is absolute.
  const auto close = [](double ours, double ref) {
    return std::abs(ours - ref) <= std::max(1e-14 * std::abs(ref), 1e-15);
  };
  for (double u : us) {
    double s, c;
    portable_sincos_2pi(u, &s, &c);
    ASSERT_TRUE(close(s, std::sin(2.0 * M_PI * u))) << "sin, u = " << std::hexfloat << u << ": " << s;
    ASSERT_TRUE(close(c, std::cos(2.0 * M_PI * u))) << "cos, u = " << std::hexfloat << u << ": " << c;
  }
  // The reduction works on u exactly, so the zeros and ones are exact.
  for (double u : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    double s, c;
    portable_sincos_2pi(u, &s, &c);
    EXPECT_EQ(std::abs(s) + std::abs(c), 1.0) << "u = " << u;
  }
}

TEST(PortableMath, DrawsAreTheKeyedRngStream) {
  for (uint64_t key : {uint64_t{0}, uint64_t{12345}, ~uint64_t{0}}) {
    KeyedRng rng(key);
    for (uint64_t d = 0; d < 100; ++d) ASSERT_EQ(keyed_draw(key, d), rng.next_u64()) << key << " " << d;
  }
}

TEST(KeyedNormal, MatchesTheScalarReferenceWithinOneUlp) {
  int64_t compared = 0, differ = 0;
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{3, 5, 7}, std::vector<int64_t>{2, 8},
                                            std::vector<int64_t>{1}}) {
    const auto keys = noise_keys(3, 400);
    const auto z = keyed_normal(keys, shape, at::kCPU);
    std::vector<int64_t> expected_shape{400};
    expected_shape.insert(expected_shape.end(), shape.begin(), shape.end());
    ASSERT_EQ(z.sizes().vec(), expected_shape);
    ASSERT_EQ(z.scalar_type(), torch::kFloat32);
    const auto flat = z.reshape({400, -1}).contiguous();
    const int64_t n = flat.size(1);
    const float* data = flat.data_ptr<float>();
    for (int64_t r = 0; r < 400; ++r) {
      const auto ref = reference_row(keys[r], n);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t ulps = ulp_distance(data[r * n + j], ref[j]);
        ASSERT_LE(ulps, 1) << "row " << r << " element " << j << ": " << data[r * n + j] << " vs " << ref[j];
        differ += ulps != 0;
        ++compared;
      }
    }
  }
  // A 1-ulp difference needs the two doubles to straddle a float rounding boundary: rare.
  EXPECT_LT(differ, compared / 1000) << differ << " of " << compared << " differ by an ulp";
}

TEST(KeyedNormal, RowsDoNotDependOnTheBatchTheThreadsOrTheirPosition) {
  const auto keys = noise_keys(4, 300);
  const std::vector<int64_t> shape{7, 15};  // odd: 53 pairs per row, 15900 in all
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one_thread = keyed_normal(keys, shape, at::kCPU);
  at::set_num_threads(2);
  const auto two_threads = keyed_normal(keys, shape, at::kCPU);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one_thread, two_threads));

  for (int64_t r : {0, 1, 150, 299}) {
    const auto alone = keyed_normal({keys[r]}, shape, at::kCPU);
    EXPECT_TRUE(torch::equal(alone[0], one_thread[r])) << "row " << r;
  }

  const auto perm = keyed_permutation(300, stream_key(4, RngPurpose::kEpochPermutation));
  std::vector<uint64_t> shuffled;
  for (int64_t p : perm) shuffled.push_back(keys[p]);
  const auto z = keyed_normal(shuffled, shape, at::kCPU);
  EXPECT_TRUE(torch::equal(z, one_thread.index_select(0, torch::tensor(perm, torch::kLong))));
  // And a longer row extends a shorter one: element j does not depend on the row length.
  const auto longer = keyed_normal(keys, {7 * 15 + 6}, at::kCPU).slice(1, 0, 7 * 15);
  EXPECT_TRUE(torch::equal(longer, one_thread.reshape({300, -1})));
}

TEST(KeyedNormal, HasStandardNormalMoments) {
  const int64_t rows = 1000, n = 1000;  // 1e6 values
  const auto z = keyed_normal(noise_keys(5, rows), {n}, at::kCPU).to(torch::kFloat64);
  const double count = static_cast<double>(rows * n);
  // Standard errors of the sample mean (1/√N) and variance (√(2/N)) of N(0, 1); 5 of them.
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 5.0 / std::sqrt(count));
  EXPECT_NEAR(z.var().item<double>(), 1.0, 5.0 * std::sqrt(2.0 / count));
  const double tail = (z.abs() > 1.959964).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(tail, 0.05, 5.0 * std::sqrt(0.05 * 0.95 / count));
  // Neighbouring elements (z0, z1 of a pair; z1 and the next pair's z0) are uncorrelated.
  const auto flat = z.reshape({-1});
  const auto lag1 = (flat.slice(0, 0, -1) * flat.slice(0, 1)).mean().item<double>();
  EXPECT_NEAR(lag1, 0.0, 5.0 / std::sqrt(count));
}

TEST(KeyedNormal, EmptyShapesAndBadInput) {
  EXPECT_EQ(keyed_normal({}, {3}, at::kCPU).sizes().vec(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(keyed_normal({1, 2}, {0, 4}, at::kCPU).sizes().vec(), (std::vector<int64_t>{2, 0, 4}));
  EXPECT_EQ(keyed_normal({1, 2}, {}, at::kCPU).sizes().vec(), (std::vector<int64_t>{2}));
  testing::expect_error([] { keyed_normal({1}, {2, -1}, at::kCPU); }, {"negative", "[2, -1]"});
}

TEST(TrainingDraws, NoiseIsThePerSampleStreamWithinOneUlpAndTAndDropAreUnchanged) {
  const std::vector<int64_t> positions{5, 0, 99, 1000003, 7};
  const std::vector<int64_t> shape{1, 3, 5};  // odd
  const auto d = draw_training_noise(11, 42, positions, shape, 1000, 0.3, at::kCPU);
  ASSERT_EQ(d.eps.sizes().vec(), (std::vector<int64_t>{5, 1, 3, 5}));
  const auto eps = d.eps.reshape({5, 15});
  for (int64_t i = 0; i < static_cast<int64_t>(positions.size()); ++i) {
    const auto p = static_cast<uint64_t>(positions[i]);
    EXPECT_EQ(d.t[i].item<int64_t>(),
              static_cast<int64_t>(KeyedRng(stream_key(11, RngPurpose::kTimestep, {42, p})).below(1000)));
    EXPECT_EQ(d.drop_label[i].item<bool>(),
              KeyedRng(stream_key(11, RngPurpose::kLabelDrop, {42, p})).uniform() < 0.3);
    const auto ref = reference_row(stream_key(11, RngPurpose::kNoise, {42, p}), 15);
    for (int64_t j = 0; j < 15; ++j)
      EXPECT_LE(ulp_distance(eps[i][j].item<float>(), ref[j]), 1) << "sample " << i << " element " << j;
  }
}

TEST(KeyedNormalCuda, EqualsCpuBitForBit) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA, 0);
  // Odd and even rows, and more than 65535 rows (the limit of a grid's y and z dimensions).
  const std::vector<std::pair<int64_t, std::vector<int64_t>>> cases = {
      {70001, {3}}, {70000, {4}}, {257, {3, 28, 28}}, {1, {1}}};
  for (const auto& [rows, shape] : cases) {
    const auto keys = noise_keys(6, rows);
    const auto cpu = keyed_normal(keys, shape, at::kCPU);
    const auto gpu = keyed_normal(keys, shape, cuda);
    ASSERT_TRUE(gpu.is_cuda());
    ASSERT_EQ(gpu.sizes(), cpu.sizes());
    const auto back = gpu.cpu();
    const int64_t mismatches = back.ne(cpu).sum().item<int64_t>();
    EXPECT_EQ(mismatches, 0) << rows << " rows of " << cpu.numel() / rows << ": "
                             << testing::tensor_near(back, cpu, 0, 0).message();
  }
  // The training draws land on the device with the CPU's values.
  const std::vector<int64_t> positions{3, 1, 4, 1, 5, 9, 2, 6};
  const auto on_cpu = draw_training_noise(7, 3, positions, {2, 5}, 1000, 0.1, at::kCPU);
  const auto on_gpu = draw_training_noise(7, 3, positions, {2, 5}, 1000, 0.1, cuda);
  ASSERT_TRUE(on_gpu.eps.is_cuda() && on_gpu.t.is_cuda() && on_gpu.drop_label.is_cuda());
  EXPECT_TRUE(torch::equal(on_gpu.eps.cpu(), on_cpu.eps));
  EXPECT_TRUE(torch::equal(on_gpu.t.cpu(), on_cpu.t));
  EXPECT_TRUE(torch::equal(on_gpu.drop_label.cpu(), on_cpu.drop_label));
}

}  // namespace
}  // namespace diffusion
