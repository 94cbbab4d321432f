// The Gaussian diffusion functions against closed forms: q_sample, the parameterisation
// round trips, the posterior (checked against Bayes' rule worked out independently), the
// variance choices, the KL and the discretised decoder likelihood.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"
#include "core/diffusion/gaussian_diffusion.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::tensor_near;

class GaussianDiffusionTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(7); }
  NoiseSchedule s = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
  torch::Tensor t = torch::tensor({0, 1, 10, 250, 500, 999}, torch::kLong);
  torch::Tensor x0 = torch::rand({6, 3, 4, 4}, torch::kFloat64) * 2 - 1;
  torch::Tensor eps = torch::randn({6, 3, 4, 4}, torch::kFloat64);
  torch::Tensor a(int64_t i) const { return torch::tensor(std::sqrt(s.alpha_bar(i)), torch::kFloat64); }
};

TEST_F(GaussianDiffusionTest, QSampleWithoutNoiseIsScaledData) {
  const auto xt = q_sample(s, x0, t, torch::zeros_like(x0));
  const std::vector<int64_t> ts{0, 1, 10, 250, 500, 999};
  for (int64_t i = 0; i < 6; ++i)
    EXPECT_TRUE(tensor_near(xt[i], x0[i] * std::sqrt(s.alpha_bar(ts[i])), 1e-14, 0)) << "t = " << ts[i];
}

TEST_F(GaussianDiffusionTest, QSampleHasTheMarginalMomentsOfTheForwardProcess) {
  const int64_t n = 200000;
  const auto x = torch::full({n, 1}, 0.7, torch::kFloat64);
  const auto tt = torch::full({n}, 300, torch::kLong);
  const auto xt = q_sample(s, x, tt, torch::randn({n, 1}, torch::kFloat64));
  const double ab = s.alpha_bar(300);
  // Mean a_t·x_0 and variance 1 - ᾱ_t, within ~5 standard errors.
  EXPECT_NEAR(xt.mean().item<double>(), std::sqrt(ab) * 0.7, 5 * std::sqrt((1 - ab) / n));
  EXPECT_NEAR(xt.var().item<double>(), 1 - ab, 5 * (1 - ab) * std::sqrt(2.0 / n));
}

TEST_F(GaussianDiffusionTest, ParameterisationsRoundTrip) {
  const auto xt = q_sample(s, x0, t, eps);
  EXPECT_TRUE(tensor_near(x0_from_eps(s, xt, t, eps), x0, 1e-6, 1e-9));
  EXPECT_TRUE(tensor_near(eps_from_x0(s, xt, t, x0_from_eps(s, xt, t, eps)), eps, 1e-6, 1e-9));
  const auto v = v_from_x0_eps(s, x0, t, eps);
  EXPECT_TRUE(tensor_near(x0_from_v(s, xt, t, v), x0, 1e-10, 1e-12));
  EXPECT_TRUE(tensor_near(eps_from_v(s, xt, t, v), eps, 1e-10, 1e-12));
  // Each prediction kind, given its exact target, recovers the same (x_0, ε).
  for (auto [kind, out] : {std::pair{Prediction::kEps, eps}, std::pair{Prediction::kX0, x0},
                           std::pair{Prediction::kV, v}}) {
    const auto d = interpret_output(s, kind, xt, t, out, /*clip_x0=*/false);
    // x0 from ε divides by a_t ≈ 0.006 at t = 999; ε from x0 divides by σ_t ≈ 0.01 at t = 0.
    EXPECT_TRUE(tensor_near(d.x0, x0, 1e-6, 1e-9)) << to_string(kind);
    EXPECT_TRUE(tensor_near(d.eps, eps, 1e-6, 1e-9)) << to_string(kind);
  }
}

TEST_F(GaussianDiffusionTest, ClippingClampsX0AndKeepsEpsConsistent) {
  const auto xt = q_sample(s, x0, t, eps);
  const auto d = interpret_output(s, Prediction::kX0, xt, t, x0 * 3, /*clip_x0=*/true);
  EXPECT_LE(d.x0.abs().max().item<double>(), 1.0);
  EXPECT_TRUE(tensor_near(d.x0, (x0 * 3).clamp(-1, 1), 0, 0));
  EXPECT_TRUE(tensor_near(q_sample(s, d.x0, t, d.eps), xt, 1e-9, 1e-12));
}

TEST_F(GaussianDiffusionTest, PosteriorMatchesBayesRule) {
  // Given x_0: x_{t-1} ~ N(√ᾱ_{t-1} x_0, 1-ᾱ_{t-1}) and x_t | x_{t-1} ~ N(√α_t x_{t-1}, β_t).
  // The Gaussian conditional has precision 1/(1-ᾱ_{t-1}) + α_t/β_t and mean
  // var·(√ᾱ_{t-1} x_0/(1-ᾱ_{t-1}) + √α_t x_t/β_t).
  const auto xt = q_sample(s, x0, t, eps);
  const auto post = q_posterior(s, x0, xt, t);
  const std::vector<int64_t> ts{0, 1, 10, 250, 500, 999};
  for (int64_t i = 1; i < 6; ++i) {
    const int64_t k = ts[i];
    const double ab_prev = s.alpha_bar(k - 1), beta = s.betas()[k].item<double>(), alpha = 1 - beta;
    const double var = 1.0 / (1.0 / (1 - ab_prev) + alpha / beta);
    const auto mean = var * (std::sqrt(ab_prev) * x0[i] / (1 - ab_prev) + std::sqrt(alpha) * xt[i] / beta);
    EXPECT_TRUE(tensor_near(post.mean[i], mean, 1e-9, 1e-12)) << "t = " << k;
    EXPECT_NEAR(std::exp(post.log_variance[i].item<double>()), var, 1e-12 * var + 1e-18) << "t = " << k;
  }
  // t = 0: the posterior of x_{-1} = x_0 is x_0 itself.
  EXPECT_TRUE(tensor_near(post.mean[0], x0[0], 1e-9, 1e-12));
}

TEST_F(GaussianDiffusionTest, PosteriorMeanFromTrueEpsEqualsEpsFormula) {
  const auto xt = q_sample(s, x0, t, eps);
  const auto step = p_mean_variance(s, Prediction::kEps, VarianceKind::kFixedSmall, eps, xt, t, false);
  // μ_θ at the true ε equals μ̃(x_0, x_t) …
  EXPECT_TRUE(tensor_near(step.p.mean, q_posterior(s, x0, xt, t).mean, 1e-7, 1e-9));
  // … and (x_t - β_t/σ_t ε)/√α_t (docs/math.md "Posterior").
  const auto beta = s.gather(s.betas(), t, xt);
  const auto sigma = s.gather(s.sqrt_one_minus_alphas_cumprod(), t, xt);
  EXPECT_TRUE(tensor_near(step.p.mean, (xt - beta / sigma * eps) / (1 - beta).sqrt(), 1e-7, 1e-9));
}

TEST_F(GaussianDiffusionTest, VarianceChoices) {
  const auto like = torch::zeros({6, 1}, torch::kFloat64);
  const auto large = fixed_log_variance(s, VarianceKind::kFixedLarge, t, like);
  const auto small = fixed_log_variance(s, VarianceKind::kFixedSmall, t, like);
  const double tilde_beta_1 = s.posterior_variance()[1].item<double>();
  EXPECT_DOUBLE_EQ(large[0].item<double>(), std::log(tilde_beta_1));  // β̃_1 stands in for β_0
  EXPECT_DOUBLE_EQ(small[0].item<double>(), std::log(tilde_beta_1));
  EXPECT_DOUBLE_EQ(large[4].item<double>(), std::log(s.betas()[500].item<double>()));
  EXPECT_DOUBLE_EQ(small[4].item<double>(), std::log(s.posterior_variance()[500].item<double>()));
  // Learned range: v = 1 gives log β_t, v = -1 gives log β̃_t, v = 0 their midpoint in log space.
  const auto ones = torch::ones({6, 1}, torch::kFloat64);
  EXPECT_TRUE(tensor_near(learned_range_log_variance(s, ones, t).slice(0, 1),
                          s.gather(s.betas(), t, ones).log().slice(0, 1), 1e-12, 0));
  EXPECT_TRUE(tensor_near(learned_range_log_variance(s, -ones, t), small, 1e-12, 0));
  EXPECT_TRUE(tensor_near(learned_range_log_variance(s, 0 * ones, t).slice(0, 1),
                          0.5 * (small + s.gather(s.betas(), t, ones).log()).slice(0, 1), 1e-12, 0));
}

TEST_F(GaussianDiffusionTest, LearnedVarianceSplitsChannels) {
  const auto xt = q_sample(s, x0, t, eps);
  const auto out = torch::cat({eps, torch::ones_like(eps)}, /*dim=*/1);  // [B, 2C, H, W]
  const auto step = p_mean_variance(s, Prediction::kEps, VarianceKind::kLearnedRange, out, xt, t, false);
  EXPECT_TRUE(tensor_near(step.p.mean, q_posterior(s, x0, xt, t).mean, 1e-7, 1e-9));
  EXPECT_TRUE(tensor_near(step.p.log_variance.slice(0, 1),
                          s.gather(s.betas(), t, xt).log().expand_as(xt).slice(0, 1), 1e-12, 0));
}

TEST(NormalKl, ClosedForms) {
  const auto z = torch::zeros({4}, torch::kFloat64);
  const auto m = torch::tensor({0.3, -1.0, 2.0, 0.0}, torch::kFloat64);
  const auto lv = torch::tensor({0.0, -2.0, 1.5, 3.0}, torch::kFloat64);
  EXPECT_TRUE(tensor_near(normal_kl(m, lv, m, lv), z, 0, 1e-15));  // identical Gaussians
  // KL(N(0,1) ‖ N(1,1)) = 1/2; KL(N(0,1) ‖ N(0,4)) = (log 4 - 1 + 1/4)/2.
  EXPECT_NEAR(normal_kl(z[0], z[0], torch::tensor(1.0, torch::kFloat64), z[0]).item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(normal_kl(z[0], z[0], z[0], torch::tensor(std::log(4.0), torch::kFloat64)).item<double>(),
              0.5 * (std::log(4.0) - 0.75), 1e-15);
  EXPECT_GT(normal_kl(m, lv, z, z).min().item<double>(), 0.0);
}

TEST(DiscretizedGaussian, LikelihoodOverAll256BinsSumsToOne) {
  const auto bins = torch::arange(256, torch::kFloat64) * (2.0 / 255.0) - 1.0;  // [256]
  for (double mean : {-1.2, -0.5, 0.0, 0.31, 0.999}) {
    for (double log_scale : {-6.0, -3.0, -1.0, 0.0, 1.0}) {
      const auto ll = discretized_gaussian_log_likelihood(
          bins, torch::full({256}, mean, torch::kFloat64), torch::full({256}, log_scale, torch::kFloat64));
      EXPECT_NEAR(ll.exp().sum().item<double>(), 1.0, 1e-9)
          << "mean " << mean << ", log scale " << log_scale;
    }
  }
}

TEST(DiscretizedGaussian, InteriorBinIsTheCdfDifference) {
  const double x = 2.0 * 100 / 255.0 - 1.0, mean = -0.2, sd = 0.3;
  const auto phi = [](double z) { return 0.5 * (1 + std::erf(z / std::sqrt(2.0))); };
  const double expected = std::log(phi((x + 1 / 255.0 - mean) / sd) - phi((x - 1 / 255.0 - mean) / sd));
  const auto ll = discretized_gaussian_log_likelihood(torch::tensor({x}, torch::kFloat64),
                                                      torch::tensor({mean}, torch::kFloat64),
                                                      torch::tensor({std::log(sd)}, torch::kFloat64));
  EXPECT_NEAR(ll.item<double>(), expected, 1e-10);
}

TEST_F(GaussianDiffusionTest, VlbTermsAreZeroForThePerfectModelAndNllAtTZero) {
  const auto xt = q_sample(s, x0, t, eps);
  const auto truth = q_posterior(s, x0, xt, t);
  const auto terms = vlb_terms(s, x0, xt, t, truth);  // [B]
  ASSERT_EQ(terms.sizes(), (std::vector<int64_t>{6}));
  EXPECT_TRUE(tensor_near(terms.slice(0, 1), torch::zeros({5}, torch::kFloat64), 0, 1e-12));
  // t = 0: the decoder NLL of x_0, by the independent function.
  const auto nll0 = -discretized_gaussian_log_likelihood(x0[0], truth.mean[0],
                                                         0.5 * truth.log_variance[0].expand_as(x0[0]))
                         .mean();
  EXPECT_NEAR(terms[0].item<double>(), nll0.item<double>(), 1e-12);
}

TEST(GaussianDiffusionNames, ParseAndPrint) {
  for (auto p : {Prediction::kEps, Prediction::kX0, Prediction::kV}) EXPECT_EQ(parse_prediction(to_string(p)), p);
  for (auto v : {VarianceKind::kFixedLarge, VarianceKind::kFixedSmall, VarianceKind::kLearnedRange})
    EXPECT_EQ(parse_variance_kind(to_string(v)), v);
  EXPECT_THROW(parse_prediction("score"), Error);
}

}  // namespace
}  // namespace diffusion
