// Evaluation math: the Fréchet distance against closed forms (diagonal covariances, a general
// pair through a second code path, a pure shift), the mixture NLL against hand-computed
// values, mode coverage that names exactly the missing modes, and the gmm-ring mixture
// attributes written by make-toy and read back.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "datasets/toy_sets.h"
#include "evaluation/frechet.h"
#include "evaluation/gmm_metrics.h"
#include "test_utils.h"

namespace diffusion {
namespace {

using testing::expect_error;
using testing::ScratchDir;

GaussianStats stats_of(const torch::Tensor& mean, const torch::Tensor& cov) {
  GaussianStats s;
  s.mean = mean.to(torch::kFloat64);
  s.cov = cov.to(torch::kFloat64);
  s.count = 1000;
  return s;
}

torch::Tensor random_spd(int64_t f, uint64_t seed) {
  torch::manual_seed(seed);
  const auto a = torch::randn({f, f}, torch::kFloat64);
  return a.matmul(a.t()) / static_cast<double>(f) + 0.1 * torch::eye(f, torch::kFloat64);
}

TEST(Frechet, OneDimensionalGaussians) {
  // N(1, 1) vs N(3, 4): (1 − 3)² + (√1 − √4)² = 5.
  const auto a = stats_of(torch::tensor({1.0}), torch::tensor({{1.0}}));
  const auto b = stats_of(torch::tensor({3.0}), torch::tensor({{4.0}}));
  EXPECT_NEAR(frechet_distance(a, b), 5.0, 1e-12);
}

TEST(Frechet, DiagonalCovariancesReduceToSumOfRootDifferences) {
  torch::manual_seed(1);
  const int64_t f = 16;
  const auto va = torch::rand({f}, torch::kFloat64) * 3 + 0.01;
  const auto vb = torch::rand({f}, torch::kFloat64) * 3 + 0.01;
  const auto ma = torch::randn({f}, torch::kFloat64);
  const auto mb = torch::randn({f}, torch::kFloat64);
  double expected = 0;
  for (int64_t i = 0; i < f; ++i) {
    const double dm = ma[i].item<double>() - mb[i].item<double>();
    const double dr = std::sqrt(va[i].item<double>()) - std::sqrt(vb[i].item<double>());
    expected += dm * dm + dr * dr;
  }
  const double fd = frechet_distance(stats_of(ma, torch::diag(va)), stats_of(mb, torch::diag(vb)));
  EXPECT_NEAR(fd, expected, 1e-10 * expected);
}

TEST(Frechet, GeneralCovariancesMatchEigenvaluesOfTheProduct) {
  // tr (C1^½ C2 C1^½)^½ = Σ √λ(C1 C2): the eigenvalues of the (non-symmetric) product, from a
  // general eigensolver, are a second code path.
  const int64_t f = 12;
  const auto c1 = random_spd(f, 2), c2 = random_spd(f, 3);
  const auto mean = torch::zeros({f}, torch::kFloat64);
  const auto eig = torch::linalg_eigvals(c1.matmul(c2));  // complex, imaginary ~0
  const double trace_root = torch::sqrt(torch::real(eig).clamp_min(0)).sum().item<double>();
  const double expected = c1.trace().item<double>() + c2.trace().item<double>() - 2 * trace_root;
  EXPECT_NEAR(frechet_distance(stats_of(mean, c1), stats_of(mean, c2)), expected, 1e-9);
  // Symmetric in its arguments.
  EXPECT_NEAR(frechet_distance(stats_of(mean, c2), stats_of(mean, c1)), expected, 1e-9);
}

TEST(Frechet, SqrtmSquaresBack) {
  const auto c = random_spd(10, 4);
  const auto root = sqrtm_psd(c);
  EXPECT_TRUE(testing::tensor_near(root.matmul(root), c, 1e-10, 1e-10));
}

TEST(Frechet, StatsMatchHandComputedMeanAndCovariance) {
  // Rows (0,0), (2,0), (0,2), (2,2): mean (1,1); unbiased covariance diag(4/3, 4/3).
  const auto x = torch::tensor({0.f, 0.f, 2.f, 0.f, 0.f, 2.f, 2.f, 2.f}).reshape({4, 2});
  const auto s = gaussian_stats(x);
  EXPECT_TRUE(testing::tensor_near(s.mean, torch::tensor({1.0, 1.0}, torch::kFloat64), 0, 1e-12));
  EXPECT_TRUE(testing::tensor_near(
      s.cov, torch::tensor({4.0 / 3, 0.0, 0.0, 4.0 / 3}, torch::kFloat64).reshape({2, 2}), 0, 1e-12));
  EXPECT_EQ(s.count, 4);
}

TEST(Frechet, SelfDistanceIsZeroAndShiftGivesSquaredNorm) {
  torch::manual_seed(5);
  const auto x = torch::randn({500, 8}) * torch::linspace(0.5, 2.0, 8);  // [500, 8]
  const auto base = gaussian_stats(x);
  EXPECT_NEAR(frechet_distance(base, base), 0.0, 1e-9);
  const auto direction = torch::randn({8});
  const auto unit = direction / direction.norm();
  double previous = 0;
  for (double amount : {0.25, 0.5, 1.0, 2.0, 4.0}) {
    const double fd = frechet_distance(base, gaussian_stats(x + unit * amount));
    // The covariance is unchanged, so FD is exactly |shift|² up to float32 data.
    EXPECT_NEAR(fd, amount * amount, 1e-4 * amount * amount + 1e-6) << "shift " << amount;
    EXPECT_GT(fd, previous) << "shift " << amount;
    previous = fd;
  }
}

TEST(Frechet, RefusesDifferentFeatureSizes) {
  const auto a = stats_of(torch::zeros({2}), torch::eye(2));
  const auto b = stats_of(torch::zeros({3}), torch::eye(3));
  expect_error([&] { frechet_distance(a, b); }, {"feature sizes differ", "2", "3"});
}

GaussianMixture two_modes() {
  GaussianMixture g;
  g.dim = 2;
  g.means = {0, 0, 2, 0};
  g.stds = {1.0, 0.5};
  g.weights = {0.25, 0.75};
  return g;
}

TEST(GmmMetrics, NllMatchesHandComputedValues) {
  // (1,0): 0.25/(2π) e^{-1/2} + 0.75/(2π·0.25) e^{-1/(2·0.25)}  -> −log = 2.421921416167706
  // (0,1): 0.25/(2π) e^{-1/2} + 0.75/(2π·0.25) e^{-5/(2·0.25)}  -> −log = 3.723273608730527
  const auto g = two_modes();
  const float a[] = {1, 0};
  const float b[] = {0, 1};
  const float both[] = {1, 0, 0, 1};
  EXPECT_NEAR(mean_nll(g, a, 1), 2.421921416167706, 1e-12);
  EXPECT_NEAR(mean_nll(g, b, 1), 3.723273608730527, 1e-12);
  EXPECT_NEAR(mean_nll(g, both, 2), 3.0725975124491165, 1e-12);
  // Far from every mode the log-sum-exp stays finite: at (1000, 0) the wide mode 0 dominates
  // (mode 1's term is e^{-998²/0.5} relative, far below double precision).
  const float far[] = {1000, 0};
  const double expected = -(std::log(0.25) - std::log(2 * M_PI) - 1000.0 * 1000.0 / 2.0);
  EXPECT_NEAR(mean_nll(g, far, 1), expected, 1e-9 * expected);
}

TEST(GmmMetrics, CoverageReportsExactlyTheMissingModes) {
  const auto ring = ring_mixture(8, 2.0, 0.1);
  std::vector<float> x;
  // 10 samples near each of modes 0, 1, 2, 4, 5 (within 1 std), 1 near mode 6, 2 far away.
  for (int64_t k : {0, 1, 2, 4, 5})
    for (int i = 0; i < 10; ++i) {
      x.push_back(static_cast<float>(ring.means[2 * k] + 0.05));
      x.push_back(static_cast<float>(ring.means[2 * k + 1] - 0.02 * (i % 3)));
    }
  x.insert(x.end(), {static_cast<float>(ring.means[12]), static_cast<float>(ring.means[13])});
  x.insert(x.end(), {0.0f, 0.0f, 5.0f, 5.0f});
  const int64_t n = static_cast<int64_t>(x.size()) / 2;  // 53
  // share 0.1: mode 6 needs ceil(0.1·53/8) = 1 sample, so 3 and 7 are missing.
  const auto c = mode_coverage(ring, x.data(), n, 3.0, 0.1);
  EXPECT_EQ(c.mode_counts, (std::vector<int64_t>{10, 10, 10, 0, 10, 10, 1, 0}));
  EXPECT_EQ(c.off_mode, 2);
  EXPECT_EQ(c.missing_modes, (std::vector<int64_t>{3, 7}));
  EXPECT_DOUBLE_EQ(c.coverage, 6.0 / 8.0);
  // share 0.5: mode 6 needs ceil(0.5·53/8) = 4 samples and is missing too.
  const auto strict = mode_coverage(ring, x.data(), n, 3.0, 0.5);
  EXPECT_EQ(strict.missing_modes, (std::vector<int64_t>{3, 6, 7}));
  EXPECT_DOUBLE_EQ(strict.coverage, 5.0 / 8.0);
}

TEST(GmmMetrics, RingMixtureAttributesRoundTripThroughMakeToy) {
  ScratchDir dir("evaluation_test_gmm");
  ToyOptions options;
  options.kind = ToyKind::kGmmRing;
  options.num = 100;
  options.modes = 5;
  options.radius = 3.0;
  options.std = 0.2;
  options.out_path = dir.file("ring.h5");
  write_toy(options);
  GaussianMixture g;
  ASSERT_TRUE(read_gaussian_mixture(options.out_path, &g));
  EXPECT_EQ(g.dim, 2);
  ASSERT_EQ(g.modes(), 5);
  for (int64_t k = 0; k < 5; ++k) {
    double c[2];
    gmm_ring_center(options, k, c);
    EXPECT_DOUBLE_EQ(g.means[2 * k], c[0]);
    EXPECT_DOUBLE_EQ(g.means[2 * k + 1], c[1]);
    EXPECT_DOUBLE_EQ(g.stds[k], 0.2);
    EXPECT_DOUBLE_EQ(g.weights[k], 0.2);
  }
  // A moons file has no mixture: false, not an error.
  options.kind = ToyKind::kMoons;
  options.out_path = dir.file("moons.h5");
  write_toy(options);
  EXPECT_FALSE(read_gaussian_mixture(options.out_path, &g));
}

}  // namespace
}  // namespace diffusion
