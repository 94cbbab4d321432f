// Samplers without a trained network: for Gaussian data N(μ, Σ) the optimal ε-predictor is
// known in closed form, ε̂(x_t) = σ_t (a_t² Σ + σ_t² I)^{-1} (x_t - a_t μ), so DDPM and DDIM
// driven by it must reproduce μ and Σ within sampling error. Also: step identities (DDIM with
// η = 1 is DDPM with β̃), guidance at s = 0 and 1, and per-sample determinism.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/diffusion/gaussian_diffusion.h"
#include "core/diffusion/samplers.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::tensor_near;

// Exact ε for 2-D Gaussian data with mean (m0, m1) and covariance [[s00, s01], [s01, s11]],
// written elementwise (2×2 inverse by hand) so every sample is computed independently.
struct GaussianEps {
  const NoiseSchedule* schedule;
  double m0, m1, s00, s01, s11;
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& t) const {
    const auto ab = schedule->gather(schedule->alphas_cumprod(), t, x).squeeze(1);  // [B]
    const auto a = ab.sqrt(), sig2 = 1 - ab;
    const auto c00 = ab * s00 + sig2, c01 = ab * s01, c11 = ab * s11 + sig2;
    const auto det = c00 * c11 - c01 * c01;
    const auto d0 = x.select(1, 0) - a * m0, d1 = x.select(1, 1) - a * m1;
    const auto sig = sig2.sqrt();
    return torch::stack({sig * (c11 * d0 - c01 * d1) / det, sig * (c00 * d1 - c01 * d0) / det}, 1);
  }
};

class SamplersTest : public ::testing::Test {
 protected:
  NoiseSchedule schedule = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
  GaussianEps data{&schedule, 0.5, -0.3, 0.30, 0.10, 0.20};
  DenoiseFn model = [this](const at::Tensor& x, const at::Tensor& t, const at::Tensor&) { return data(x, t); };

  std::vector<int64_t> range(int64_t begin, int64_t end) {
    std::vector<int64_t> v;
    for (int64_t i = begin; i < end; ++i) v.push_back(i);
    return v;
  }

  // Mean and covariance of N samples against the data's, within ~5 standard errors.
  void expect_data_moments(const at::Tensor& x) {
    const int64_t n = x.size(0);
    const auto mean = x.mean(0);
    const auto c = x - mean;
    const auto cov = c.t().mm(c) / (n - 1);
    const double se0 = std::sqrt(data.s00 / n), se1 = std::sqrt(data.s11 / n);
    EXPECT_NEAR(mean[0].item<double>(), data.m0, 5 * se0);
    EXPECT_NEAR(mean[1].item<double>(), data.m1, 5 * se1);
    // Var of a sample covariance entry ≈ (s_ii s_jj + s_ij²)/n.
    const auto tol = [&](double sii, double sjj, double sij) { return 5 * std::sqrt((sii * sjj + sij * sij) / n) + 0.01; };
    EXPECT_NEAR(cov[0][0].item<double>(), data.s00, tol(data.s00, data.s00, data.s00));
    EXPECT_NEAR(cov[1][1].item<double>(), data.s11, tol(data.s11, data.s11, data.s11));
    EXPECT_NEAR(cov[0][1].item<double>(), data.s01, tol(data.s00, data.s11, data.s01));
  }
};

TEST_F(SamplersTest, Ddpm1000StepsReproducesTheDataDistribution) {
  for (auto variance : {VarianceKind::kFixedSmall, VarianceKind::kFixedLarge}) {
    SamplerConfig config;
    config.kind = SamplerKind::kDdpm;
    config.steps = 1000;
    config.variance = variance;
    config.seed = 1;
    const auto x = Sampler(schedule, config).sample(model, range(0, 1500), {2}, {});
    SCOPED_TRACE(to_string(variance));
    expect_data_moments(x);
  }
}

TEST_F(SamplersTest, Ddim100StepsReproducesTheDataDistribution) {
  for (auto spacing : {TimestepSpacing::kLeading, TimestepSpacing::kTrailing, TimestepSpacing::kLinspace}) {
    SamplerConfig config;
    config.kind = SamplerKind::kDdim;
    config.steps = 100;
    config.spacing = spacing;
    config.seed = 2;
    const auto x = Sampler(schedule, config).sample(model, range(0, 3000), {2}, {});
    SCOPED_TRACE(to_string(spacing));
    expect_data_moments(x);
  }
}

TEST_F(SamplersTest, DdimWithEtaOneIsTheDdpmStepWithPosteriorVariance) {
  torch::manual_seed(0);
  const auto x0 = torch::randn({5, 2}, torch::kFloat64);
  const auto eps = torch::randn({5, 2}, torch::kFloat64);
  const auto z = torch::randn({5, 2}, torch::kFloat64);
  for (int64_t t : {1, 10, 500, 999}) {
    const auto tt = torch::full({5}, t, torch::kLong);
    const auto xt = q_sample(schedule, x0, tt, eps);
    const auto ddpm = ddpm_step(schedule, t, xt, eps, Prediction::kEps, VarianceKind::kFixedSmall, false, z);
    const auto ddim = ddim_step(schedule.alpha_bar(t), schedule.alpha_bar(t - 1), x0, eps, 1.0, z);
    EXPECT_TRUE(tensor_near(ddim, ddpm, 1e-7, 1e-9)) << "t = " << t;
  }
  // η = 0 is deterministic and lands on √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}) ε̂.
  const auto d = ddim_step(0.5, 0.9, x0, eps, 0.0, {});
  EXPECT_TRUE(tensor_near(d, std::sqrt(0.9) * x0 + std::sqrt(0.1) * eps, 1e-12, 0));
}

TEST_F(SamplersTest, GuidanceScaleZeroIsUnconditionalAndOneIsConditional) {
  // A conditional model: class 0 and 1 have different means; the null label (2) a third.
  const GaussianEps by_label[3] = {{&schedule, 1.0, 0.0, 0.1, 0.0, 0.1},
                                   {&schedule, -1.0, 0.5, 0.1, 0.0, 0.1},
                                   {&schedule, 0.0, 0.0, 0.5, 0.0, 0.5}};
  DenoiseFn conditional = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    auto out = torch::empty_like(x);
    for (int64_t b = 0; b < x.size(0); ++b) {
      const int64_t label = y.defined() ? y[b].item<int64_t>() : 2;
      out[b] = by_label[label](x.slice(0, b, b + 1), t.slice(0, b, b + 1))[0];
    }
    return out;
  };
  SamplerConfig config;
  config.steps = 20;
  config.num_classes = 2;
  config.seed = 5;
  const auto labels = torch::tensor({0, 1, 0, 1}, torch::kLong);
  const auto indices = range(0, 4);
  auto plain = config;
  const auto cond = Sampler(schedule, plain).sample(conditional, indices, {2}, labels);
  const auto uncond = Sampler(schedule, plain).sample(conditional, indices, {2}, torch::full({4}, 2, torch::kLong));
  config.guidance_scale = 0.0;
  EXPECT_TRUE(tensor_near(Sampler(schedule, config).sample(conditional, indices, {2}, labels), uncond, 0, 0));
  config.guidance_scale = 1.0 + 1e-12;  // takes the two-half path, numerically s = 1
  EXPECT_TRUE(tensor_near(Sampler(schedule, config).sample(conditional, indices, {2}, labels), cond, 1e-5, 1e-6));
  config.guidance_scale = 3.0;  // and a real scale moves the samples
  EXPECT_FALSE(tensor_near(Sampler(schedule, config).sample(conditional, indices, {2}, labels), cond, 1e-3, 1e-3));
}

TEST_F(SamplersTest, EachSampleIsAPureFunctionOfSeedAndIndex) {
  for (auto kind : {SamplerKind::kDdpm, SamplerKind::kDdim}) {
    SamplerConfig config;
    config.kind = kind;
    config.steps = 25;
    config.eta = kind == SamplerKind::kDdim ? 0.5 : 0.0;
    config.seed = 9;
    const Sampler sampler(schedule, config);
    const auto all = sampler.sample(model, range(0, 16), {2}, {});
    // Batches of 7 (as another batch size or rank split would cut them), in another order.
    const auto c = sampler.sample(model, range(14, 16), {2}, {});
    const auto a = sampler.sample(model, range(0, 7), {2}, {});
    const auto b = sampler.sample(model, range(7, 14), {2}, {});
    EXPECT_TRUE(tensor_near(torch::cat({a, b, c}), all, 0, 0)) << to_string(kind);
    config.seed = 10;
    EXPECT_FALSE(tensor_near(Sampler(schedule, config).sample(model, range(0, 16), {2}, {}), all, 1e-3, 1e-3));
  }
}

TEST_F(SamplersTest, GivenLatentsAreDecodedDeterministically) {
  SamplerConfig config;
  config.steps = 10;
  const Sampler sampler(schedule, config);
  const auto latents = torch::randn({3, 2});
  const auto a = sampler.sample(model, {0, 1, 2}, {2}, {}, latents);
  const auto b = sampler.sample(model, {7, 8, 9}, {2}, {}, latents);  // η = 0: indices do not matter
  EXPECT_TRUE(tensor_near(a, b, 0, 0));
  EXPECT_THROW(sampler.sample(model, {0, 1}, {2}, {}, latents), Error);
  EXPECT_THROW(timestep_spacing(TimestepSpacing::kLeading, 1000, 1001), Error);
}

TEST_F(SamplersTest, InversionThenDecodingReturnsTheData) {
  // Data from the Gaussian, inverted to latents and decoded with the same η = 0 schedule: the
  // round trip is exact up to first-order DDIM's discretisation error (~1/S).
  torch::manual_seed(3);
  const auto L = torch::tensor({{std::sqrt(data.s00), 0.0},
                                {data.s01 / std::sqrt(data.s00), std::sqrt(data.s11 - data.s01 * data.s01 / data.s00)}},
                                torch::kFloat64);
  const auto mean = torch::tensor({data.m0, data.m1}, torch::kFloat64);
  const auto x0 = (torch::randn({64, 2}, torch::kFloat64).mm(L.t()) + mean).to(torch::kFloat32);  // [64, 2]
  double last_error = 1e9;
  for (int64_t steps : {50, 500}) {
    SamplerConfig config;
    config.steps = steps;
    const Sampler sampler(schedule, config);
    const auto z = sampler.invert(model, x0, {});
    // Latents of Gaussian data under the flow are ~N(0, I) (at ᾱ_T ≈ 0).
    EXPECT_NEAR(z.std().item<double>(), 1.0, 0.3);
    const double error = (sampler.sample(model, range(0, 64), {2}, {}, z) - x0).abs().max().item<double>();
    EXPECT_LT(error, 0.5 * last_error) << "S = " << steps;  // shrinks with S
    last_error = error;
  }
  EXPECT_LT(last_error, 0.03);
  SamplerConfig ddpm;
  ddpm.kind = SamplerKind::kDdpm;
  EXPECT_THROW(Sampler(schedule, ddpm).invert(model, x0, {}), Error);
}

TEST(Slerp, EndpointsMidpointAndParallelRows) {
  const auto a = torch::tensor({{1.0f, 0.0f}, {2.0f, 0.0f}});
  const auto b = torch::tensor({{0.0f, 1.0f}, {4.0f, 0.0f}});  // row 1 parallel: linear
  EXPECT_TRUE(tensor_near(slerp(a, b, 0.0), a, 1e-7, 0));
  EXPECT_TRUE(tensor_near(slerp(a, b, 1.0), b, 1e-7, 0));
  const auto mid = slerp(a, b, 0.5);
  EXPECT_TRUE(tensor_near(mid, torch::tensor({{std::sqrt(0.5f), std::sqrt(0.5f)}, {3.0f, 0.0f}}), 1e-6, 0));
  EXPECT_EQ(mid.scalar_type(), torch::kFloat32);
}

}  // namespace
}  // namespace diffusion
