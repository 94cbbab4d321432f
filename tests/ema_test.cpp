// trainer/ema.h against closed forms: the power EMA's width formula against the moments of its
// density, the update against its explicit weights (i^(γ+1) − (i−1)^(γ+1)) / t^(γ+1), the
// profile inner product against quadrature, EDM2's published (σ_rel, γ) pairs, and the post-hoc
// fit against a power EMA tracked directly during the same "training".
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "trainer/ema.h"

namespace diffusion {
namespace {

TEST(PowerEma, SigmaRelIsTheRelativeStdOfItsDensity) {
  for (double gamma : {0.5, 6.94, 16.97, 100.0}) {
    // Midpoint quadrature of (γ+1)τ^γ on [0, 1].
    const int n = 200000;
    double mean = 0, second = 0;
    for (int i = 0; i < n; ++i) {
      const double tau = (i + 0.5) / n;
      const double p = (gamma + 1) * std::pow(tau, gamma) / n;
      mean += p * tau;
      second += p * tau * tau;
    }
    const double std_rel = std::sqrt(second - mean * mean);  // the run's length is 1
    EXPECT_NEAR(power_ema_sigma_rel(gamma), std_rel, 1e-4 * std_rel) << gamma;  // quadrature error
    EXPECT_NEAR(power_ema_gamma(power_ema_sigma_rel(gamma)), gamma, 1e-9 * gamma) << gamma;
  }
  // EDM2 (Karras et al. 2024, section 3.1): σ_rel 0.10 is γ = 6.94, 0.05 is γ = 16.97.
  EXPECT_NEAR(power_ema_gamma(0.10), 6.94, 0.005);
  EXPECT_NEAR(power_ema_gamma(0.05), 16.97, 0.005);
  EXPECT_THROW(power_ema_gamma(0.3), std::exception);
  EXPECT_THROW(power_ema_gamma(0), std::exception);
}

TEST(PowerEma, TagsRoundTrip) {
  EXPECT_EQ(power_ema_tag(0.05), "sigma-rel-0.05");
  EXPECT_DOUBLE_EQ(parse_power_ema_tag("sigma-rel-0.05"), 0.05);
  EXPECT_EQ(parse_power_ema_tag("0.999"), 0);
  EXPECT_EQ(parse_power_ema_tag("sigma-rel-"), 0);
  EXPECT_EQ(parse_power_ema_tag("sigma-rel-0.1x"), 0);
}

// θ_i for steps i = 1..T: a random walk, as weights drift during training.
std::vector<torch::Tensor> random_walk(int64_t steps, int64_t dim) {
  torch::manual_seed(3);
  std::vector<torch::Tensor> theta;
  auto x = torch::zeros({dim}, torch::kFloat64);
  for (int64_t i = 0; i < steps; ++i) theta.push_back((x += torch::randn({dim}, torch::kFloat64)).clone());
  return theta;
}

TEST(PowerEma, UpdateIsTheExplicitPowerWeightedAverage) {
  const auto theta = random_walk(60, 5);
  const double sigma_rel = 0.1, gamma = power_ema_gamma(sigma_rel);
  // The start is far from every θ_i: the power EMA must hold none of it.
  std::vector<at::Tensor> param = {torch::full({5}, 1e6, torch::kFloat64)};
  Ema ema = Ema::power(param, sigma_rel);
  EXPECT_TRUE(ema.is_power());
  EXPECT_EQ(ema.tag(), "sigma-rel-0.1");
  for (int64_t t = 1; t <= 60; ++t) {
    param[0].copy_(theta[t - 1]);
    ema.update(param, t);
    if (t % 20 != 0 && t != 1) continue;
    auto expected = torch::zeros({5}, torch::kFloat64);
    for (int64_t i = 1; i <= t; ++i)
      expected += theta[i - 1] * (std::pow(double(i), gamma + 1) - std::pow(double(i - 1), gamma + 1)) /
                  std::pow(double(t), gamma + 1);
    EXPECT_TRUE(torch::allclose(ema.shadow()[0], expected, 1e-10, 1e-8)) << "step " << t;
  }
  // A constant decay ignores the step.
  std::vector<at::Tensor> p = {torch::zeros({2}, torch::kFloat64)};
  Ema constant(p, 0.9);
  EXPECT_FALSE(constant.is_power());
  EXPECT_EQ(constant.tag(), "0.9");
  p[0].fill_(1);
  constant.update(p, 1000);
  EXPECT_TRUE(torch::allclose(constant.shadow()[0], torch::full({2}, 0.1, torch::kFloat64)));
}

TEST(PowerEma, ProfileDotMatchesQuadrature) {
  const double ta = 100, ga = 6.94, tb = 60, gb = 16.97;
  const int n = 400000;
  double integral = 0;
  for (int i = 0; i < n; ++i) {
    const double tau = (i + 0.5) / n * tb;
    integral += (ga + 1) * std::pow(tau, ga) / std::pow(ta, ga + 1) * (gb + 1) * std::pow(tau, gb) /
                std::pow(tb, gb + 1) * (tb / n);
  }
  EXPECT_NEAR(power_profile_dot(ta, ga, tb, gb), integral, 1e-6 * integral);
  EXPECT_DOUBLE_EQ(power_profile_dot(ta, ga, tb, gb), power_profile_dot(tb, gb, ta, ga));
  // ‖p‖² = (γ+1)² / ((2γ+1)·t)
  EXPECT_NEAR(power_profile_dot(ta, ga, ta, ga), (ga + 1) * (ga + 1) / ((2 * ga + 1) * ta), 1e-12);
}

// Training of T steps on a random walk, keeping power EMAs of σ_rel 0.05 and 0.10 with
// snapshots every K steps, and, for the check, a power EMA of the target width tracked directly.
struct SnapshotRun {
  std::vector<PowerProfile> profiles;
  std::vector<torch::Tensor> snapshots;
  torch::Tensor truth;  // the tracked target-width EMA at the end
  torch::Tensor narrow;  // the tracked σ_rel 0.05 EMA at the end
  torch::Tensor wide;    // the tracked σ_rel 0.10 EMA at the end
};
SnapshotRun train(int64_t steps, int64_t every, double target_sigma_rel) {
  const auto theta = random_walk(steps, 8);
  std::vector<at::Tensor> param = {torch::zeros({8}, torch::kFloat64)};
  std::vector<Ema> emas = {Ema::power(param, 0.05), Ema::power(param, 0.10)};
  Ema target = Ema::power(param, target_sigma_rel);
  SnapshotRun run;
  for (int64_t t = 1; t <= steps; ++t) {
    param[0].copy_(theta[t - 1]);
    for (auto& e : emas) e.update(param, t);
    target.update(param, t);
    if (t % every == 0)
      for (const auto& e : emas) {
        run.profiles.push_back({double(t), power_ema_gamma(e.sigma_rel())});
        run.snapshots.push_back(e.shadow()[0].clone());
      }
  }
  run.truth = target.shadow()[0];
  run.narrow = emas[0].shadow()[0];
  run.wide = emas[1].shadow()[0];
  return run;
}

torch::Tensor combine(const SnapshotRun& run, const PosthocEmaFit& fit) {
  auto out = torch::zeros_like(run.snapshots[0]);
  for (size_t i = 0; i < fit.coefficients.size(); ++i) out += fit.coefficients[i] * run.snapshots[i];
  return out;
}

TEST(PosthocEma, ReproducesAWidthThatWasKept) {
  const SnapshotRun run = train(400, 40, 0.10);
  const auto fit = posthoc_ema_fit(run.profiles, {400, power_ema_gamma(0.10)});
  EXPECT_LT(fit.relative_error, 1e-4);  // cᵀGc − 2cᵀr + ‖p‖² loses digits to cancellation
  EXPECT_TRUE(torch::allclose(combine(run, fit), run.truth, 1e-6, 1e-6));
}

TEST(PosthocEma, RebuildsAnUnkeptWidthFromTheSnapshots) {
  for (double target : {0.07, 0.15}) {
    const SnapshotRun run = train(1000, 50, target);
    const auto fit = posthoc_ema_fit(run.profiles, {1000, power_ema_gamma(target)});
    EXPECT_LT(fit.relative_error, 0.05) << target;
    const double miss = (combine(run, fit) - run.truth).norm().item<double>();
    const double nearest = std::min((run.narrow - run.truth).norm().item<double>(),
                                    (run.wide - run.truth).norm().item<double>());
    // Far closer to the directly tracked EMA than either kept width is.
    EXPECT_LT(miss, 0.05 * nearest) << target << ": " << miss << " vs " << nearest;
  }
}

}  // namespace
}  // namespace diffusion
