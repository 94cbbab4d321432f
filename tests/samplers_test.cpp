// Samplers without a trained network: for Gaussian data N(μ, Σ) the optimal ε-predictor is
// known in closed form, ε̂(x_t) = σ_t (a_t² Σ + σ_t² I)^{-1} (x_t - a_t μ), so DDPM and DDIM
// driven by it must reproduce μ and Σ within sampling error. Also: step identities (DDIM with
// η = 1 is DDPM with β̃), guidance at s = 0 and 1, and per-sample determinism. For the fast
// samplers (Euler, Heun, DPM-Solver++) the probability-flow ODE of Gaussian data has a
// closed-form solution, so their error and its order are measured.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/diffusion/gaussian_diffusion.h"
#include "core/diffusion/ode_samplers.h"
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
  // A conditional model: class 0 and 1 have different means; the null label (2) a third.
  const GaussianEps by_label[3] = {{&schedule, 1.0, 0.0, 0.1, 0.0, 0.1},
                                   {&schedule, -1.0, 0.5, 0.1, 0.0, 0.1},
                                   {&schedule, 0.0, 0.0, 0.5, 0.0, 0.5}};
  DenoiseFn conditional = [this](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    auto out = torch::empty_like(x);
    for (int64_t b = 0; b < x.size(0); ++b) {
      const int64_t label = y.defined() ? y[b].item<int64_t>() : 2;
      out[b] = by_label[label](x.slice(0, b, b + 1), t.slice(0, b, b + 1))[0];
    }
    return out;
  };

  // Guidance at scale 3 on two classes, only where lo < σ <= hi.
  static SamplerConfig interval_guided(SamplerKind kind, int64_t steps, double lo, double hi) {
    SamplerConfig config;
    config.kind = kind;
    config.steps = steps;
    config.num_classes = 2;
    config.guidance_scale = 3.0;
    config.guidance_sigma_lo = lo;
    config.guidance_sigma_hi = hi;
    return config;
  }
  // The conditional model's ε̂ at scale 3 where `guided`, by hand: ε_c + 2 (ε_c - ε_null).
  at::Tensor eps_by_hand(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels, bool guided) {
    const auto cond = conditional(x, t, labels);
    return guided ? cond + 2.0 * (cond - conditional(x, t, torch::full({x.size(0)}, 2, torch::kLong))) : cond;
  }

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
  for (auto kind : {SamplerKind::kDdim, SamplerKind::kHeun, SamplerKind::kDpmpp2mSde}) {
    SCOPED_TRACE(to_string(kind));
    SamplerConfig config;
    config.kind = kind;
    config.steps = 20;
    config.karras = kind == SamplerKind::kDpmpp2mSde;
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
}

TEST_F(SamplersTest, GuidanceIntervalGuidesOnlyWhereSigmaIsInsideIt) {
  const auto config = interval_guided(SamplerKind::kDdim, 20, 0.3, 5.0);
  const auto labels = torch::tensor({0, 1, 1}, torch::kLong);
  torch::manual_seed(3);
  const auto x_T = torch::randn({3, 2});
  const Sampler sampler(schedule, config);
  // Which calls ran on the doubled batch.
  int64_t guided_calls = 0, plain_calls = 0;
  DenoiseFn counting = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    const double ab = schedule.alpha_bar(t[0].item<int64_t>());
    const double sigma = std::sqrt(1.0 / ab - 1.0);
    const bool inside = sigma > 0.3 && sigma <= 5.0;
    EXPECT_EQ(x.size(0), inside ? 6 : 3) << "t = " << t[0].item<int64_t>() << ", sigma = " << sigma;
    (inside ? guided_calls : plain_calls) += 1;
    return conditional(x, t, y);
  };
  const auto got = sampler.sample(counting, range(0, 3), {2}, labels, x_T);
  EXPECT_GT(guided_calls, 3);
  EXPECT_GT(plain_calls, 3);
  EXPECT_EQ(guided_calls + plain_calls, 20);

  // A second code path: DDIM (η = 0) by hand, switching between guided and plain ε̂.
  const auto& ts = sampler.timesteps();
  auto x = x_T.clone();
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto t = torch::full({3}, ts[i], torch::kLong);
    const double ab = schedule.alpha_bar(ts[i]);
    const double ab_next = i + 1 < ts.size() ? schedule.alpha_bar(ts[i + 1]) : 1.0;
    const double sigma = std::sqrt((1 - ab) / ab);
    const auto eps = eps_by_hand(x, t, labels, sigma > 0.3 && sigma <= 5.0);
    const auto x0 = (x - std::sqrt(1 - ab) * eps) / std::sqrt(ab);
    x = std::sqrt(ab_next) * x0 + std::sqrt(1 - ab_next) * eps;
  }
  EXPECT_TRUE(tensor_near(got, x, 1e-5, 1e-5));

  // The whole range is plain guidance; an interval no step reaches is no guidance.
  auto everywhere = config, nowhere = config, plain = config;
  everywhere.guidance_sigma_lo = 0.0;
  everywhere.guidance_sigma_hi = INFINITY;
  nowhere.guidance_sigma_lo = 1e6;
  nowhere.guidance_sigma_hi = 1e7;
  plain.guidance_scale = 1.0;
  plain.guidance_sigma_lo = 0.0;
  plain.guidance_sigma_hi = INFINITY;
  const auto full_guided = Sampler(schedule, everywhere).sample(conditional, range(0, 3), {2}, labels, x_T);
  EXPECT_FALSE(tensor_near(full_guided, got, 1e-3, 1e-3));
  EXPECT_TRUE(tensor_near(Sampler(schedule, nowhere).sample(conditional, range(0, 3), {2}, labels, x_T),
                          Sampler(schedule, plain).sample(conditional, range(0, 3), {2}, labels, x_T), 0, 0));

  for (auto [lo, hi] : {std::pair{2.0, 1.0}, std::pair{1.0, 1.0}, std::pair{-0.1, 1.0}}) {
    auto bad = config;
    bad.guidance_sigma_lo = lo;
    bad.guidance_sigma_hi = hi;
    EXPECT_THROW((void)Sampler(schedule, bad), Error) << lo << "," << hi;
  }
}

// DPM-Solver++(2M) extrapolates x̂_0 from the step before; where the guidance interval starts
// or ends that x̂_0 was made under the other guidance, so the sampler takes a first-order step
// there. A second code path: the 2M loop by hand with that restart, and without it (which the
// sampler must not match: the restart changes the samples).
TEST_F(SamplersTest, DpmSolverRestartsFirstOrderWhereTheGuidanceIntervalStartsOrEnds) {
  auto config = interval_guided(SamplerKind::kDpmpp2m, 10, 0.28, 5.42);
  config.karras = true;
  const auto labels = torch::tensor({0, 1, 1}, torch::kLong);
  torch::manual_seed(4);
  const auto x_T = torch::randn({3, 2});
  const Sampler sampler(schedule, config);
  const auto got = sampler.sample(conditional, range(0, 3), {2}, labels, x_T);
  const auto& ts = sampler.timesteps();
  const auto& sig = sampler.sigmas();
  const auto by_hand = [&](bool restart) {
    auto x = x_T.clone();
    at::Tensor x0_prev;
    bool guided_prev = false;
    int switches = 0;
    for (size_t k = 0; k < ts.size(); ++k) {
      const auto t = torch::full({3}, ts[k], torch::kLong);
      const double sigma_t = std::sqrt(1.0 / schedule.alpha_bar(ts[k]) - 1.0);
      const bool guided = sigma_t > 0.28 && sigma_t <= 5.42;
      const auto x0 = x0_at_sigma(Prediction::kEps, x, sig[k], eps_by_hand(x, t, labels, guided), false);
      const bool switched = k > 0 && guided != guided_prev;
      switches += switched;
      x = dpmpp_2m_step(x, x0, sig[k], sig[k + 1], restart && switched ? at::Tensor() : x0_prev,
                        k > 0 ? sig[k - 1] : 0.0, {});
      x0_prev = x0;
      guided_prev = guided;
    }
    EXPECT_EQ(switches, 2);  // into the interval and out of it, both inside the 10-step grid
    return x;
  };
  EXPECT_TRUE(tensor_near(got, by_hand(true), 1e-5, 1e-5));
  EXPECT_FALSE(tensor_near(got, by_hand(false), 1e-3, 1e-3));
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

// The exact probability-flow ODE of N(μ, Σ) data in the VE scale: x(σ) = μ + (Σ+σ²I)^{1/2}
// (Σ+σ_0²I)^{-1/2} (x(σ_0) - μ) (Σ and I commute). The samplers end with one step onto
// x̂_0 = D(x, σ_last) = μ + Σ(Σ+σ_last²I)^{-1}(x - μ) (Euler to σ = 0), so the reference is the
// exact flow from σ_0 to σ_last followed by that step; what remains is the ODE solver's error.
at::Tensor exact_flow_then_denoise(const at::Tensor& x_T, double sigma0, double sigma_last, const at::Tensor& mu,
                                   const at::Tensor& cov) {
  const auto [w, v] = torch::linalg_eigh(cov);  // Σ = V diag(w) V^T
  const auto mat = [&](const at::Tensor& f) { return v.mm(torch::diag(f)).mm(v.t()); };
  const auto flow = mat(((w + sigma_last * sigma_last) / (w + sigma0 * sigma0)).sqrt());
  const auto denoise = mat(w / (w + sigma_last * sigma_last));
  const auto x_ve = x_T.to(torch::kFloat64) * std::sqrt(1.0 + sigma0 * sigma0) - mu;  // [B, 2]
  return x_ve.mm(flow.t()).mm(denoise.t()) + mu;
}

TEST_F(SamplersTest, FastSamplersConvergeToTheExactOdeSolutionAtTheirOrder) {
  const auto mu = torch::tensor({data.m0, data.m1}, torch::kFloat64);
  const auto cov = torch::tensor({{data.s00, data.s01}, {data.s01, data.s11}}, torch::kFloat64);
  torch::manual_seed(4);
  const auto x_T = torch::randn({32, 2});
  struct Expect {
    SamplerKind kind;
    double min_last_ratio, max_error_at_160;  // error ratio at the last step doubling (order p: ~2^p)
  };
  // DPM-Solver++'s multistep ratio r = h_prev/h is small at the last steps of a grid uniform in
  // t (λ jumps from t = 1/S·T to t = 0), so it reaches its order only at larger S.
  for (const auto& e : {Expect{SamplerKind::kEuler, 1.7, 4e-2}, Expect{SamplerKind::kHeun, 3.2, 1e-3},
                        Expect{SamplerKind::kDpmpp2m, 3.2, 2e-2}}) {
    std::vector<double> errors;
    for (int64_t steps : {20, 40, 80, 160}) {
      SamplerConfig config;
      config.kind = e.kind;
      config.steps = steps;  // leading: every grid ends at t = 0
      const Sampler sampler(schedule, config);
      const auto& sig = sampler.sigmas();
      ASSERT_EQ(static_cast<int64_t>(sig.size()), steps + 1);
      const auto ref = exact_flow_then_denoise(x_T, sig.front(), sig[sig.size() - 2], mu, cov);
      const auto x = sampler.sample(model, range(0, 32), {2}, {}, x_T).to(torch::kFloat64);
      errors.push_back((x - ref).abs().max().item<double>());
    }
    SCOPED_TRACE(to_string(e.kind) + ": errors at S = 20, 40, 80, 160: " + std::to_string(errors[0]) + " " +
                 std::to_string(errors[1]) + " " + std::to_string(errors[2]) + " " + std::to_string(errors[3]));
    for (size_t i = 1; i < errors.size(); ++i) EXPECT_GT(errors[i - 1] / errors[i], 1.5);  // converges
    EXPECT_GT(errors[2] / errors[3], e.min_last_ratio);
    EXPECT_LT(errors.back(), e.max_error_at_160);
  }
}

TEST_F(SamplersTest, FastSamplersReproduceTheDataDistribution) {
  for (auto kind : {SamplerKind::kEuler, SamplerKind::kHeun, SamplerKind::kDpmpp2m, SamplerKind::kDpmpp2mSde}) {
    for (bool karras : {false, true}) {
      // On a grid uniform in t the SDE's multistep term (x̂_0 - x̂_0,prev)/r amplifies the last
      // steps' noise (r = h_prev/h small near t = 0): its variance overshoots (docs/sampling.md).
      if (kind == SamplerKind::kDpmpp2mSde && !karras) continue;
      SamplerConfig config;
      config.kind = kind;
      config.steps = 50;
      config.karras = karras;
      config.seed = 2;
      SCOPED_TRACE(to_string(kind) + (karras ? " karras" : ""));
      expect_data_moments(Sampler(schedule, config).sample(model, range(0, 1500), {2}, {}));
    }
  }
  SamplerConfig churn;
  churn.kind = SamplerKind::kHeun;
  churn.steps = 50;
  churn.churn = 20;
  SCOPED_TRACE("heun churn 20");
  expect_data_moments(Sampler(schedule, churn).sample(model, range(0, 1500), {2}, {}));
}

TEST_F(SamplersTest, KarrasGridSpansTheScheduleAndRoundsToTimesteps) {
  SamplerConfig config;
  config.kind = SamplerKind::kDpmpp2m;
  config.steps = 20;
  config.karras = true;
  const Sampler sampler(schedule, config);
  const auto& sig = sampler.sigmas();
  const auto sigma = [&](int64_t t) { return std::sqrt((1 - schedule.alpha_bar(t)) / schedule.alpha_bar(t)); };
  ASSERT_EQ(sig.size(), 21u);
  EXPECT_NEAR(sig.front(), sigma(999), 1e-9 * sigma(999));
  EXPECT_NEAR(sig[19], sigma(0), 1e-12);
  EXPECT_EQ(sig.back(), 0.0);
  EXPECT_EQ(sampler.timesteps().front(), 999);
  EXPECT_EQ(sampler.timesteps().back(), 0);
  // Karras' ρ = 7: (σ_i^{1/ρ}) is linear in i.
  const double d = std::pow(sig[1], 1 / 7.0) - std::pow(sig[0], 1 / 7.0);
  for (size_t i = 1; i + 1 < sig.size(); ++i)
    EXPECT_NEAR(std::pow(sig[i], 1 / 7.0) - std::pow(sig[i - 1], 1 / 7.0), d, 1e-9);
  // Each timestep is the nearest one in log σ: σ lies between the σ of its neighbours.
  for (size_t i = 0; i + 1 < sig.size(); ++i) {
    const int64_t t = sampler.timesteps()[i];
    EXPECT_NEAR(sigma_to_timestep(schedule, sig[i]), static_cast<double>(t), 0.5 + 1e-9);
  }
  EXPECT_EQ(sigma_to_timestep(schedule, sigma(437)), 437.0);
  config.kind = SamplerKind::kDdim;
  EXPECT_THROW(Sampler(schedule, config), Error);  // --karras is for the fast samplers only
  config.kind = SamplerKind::kDpmpp2m;
  config.karras = false;
  config.churn = 1;
  EXPECT_THROW(Sampler(schedule, config), Error);  // and churn for Euler and Heun
  EXPECT_THROW(parse_sampler_kind("dpmpp-3m"), Error);
}

TEST_F(SamplersTest, HeunEvaluatesTwiceOnEveryStepButTheLast) {
  int64_t calls = 0;
  const DenoiseFn counting = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    ++calls;
    return model(x, t, y);
  };
  for (auto kind : {SamplerKind::kEuler, SamplerKind::kHeun, SamplerKind::kDpmpp2m, SamplerKind::kDpmpp2mSde}) {
    SamplerConfig config;
    config.kind = kind;
    config.steps = 12;
    calls = 0;
    Sampler(schedule, config).sample(counting, range(0, 4), {2}, {});
    EXPECT_EQ(calls, evaluations_per_sample(kind, 12)) << to_string(kind);
  }
  EXPECT_EQ(evaluations_per_sample(SamplerKind::kHeun, 12), 23);
}

TEST_F(SamplersTest, StochasticFastSamplersArePureFunctionsOfSeedAndIndex) {
  // Churned Euler/Heun and the SDE sampler draw per-step noise from the keyed streams: a sample
  // is the same alone (batch 1) and in a batch of 7.
  for (auto kind : {SamplerKind::kEuler, SamplerKind::kHeun, SamplerKind::kDpmpp2mSde}) {
    SamplerConfig config;
    config.kind = kind;
    config.steps = 15;
    config.karras = kind == SamplerKind::kDpmpp2mSde;
    config.churn = kind == SamplerKind::kDpmpp2mSde ? 0.0 : 5.0;
    config.seed = 11;
    const Sampler sampler(schedule, config);
    const auto batch = sampler.sample(model, range(3, 10), {2}, {});  // [7, 2]
    for (int64_t i = 3; i < 10; ++i)
      EXPECT_TRUE(tensor_near(sampler.sample(model, {i}, {2}, {}), batch.slice(0, i - 3, i - 2), 0, 0))
          << to_string(kind) << " sample " << i;
    // The noise matters: another seed, from the same latents, moves the samples.
    const auto x_T = torch::randn({7, 2});
    config.seed = 12;
    EXPECT_FALSE(tensor_near(Sampler(schedule, config).sample(model, range(3, 10), {2}, {}, x_T),
                             sampler.sample(model, range(3, 10), {2}, {}, x_T), 1e-3, 1e-3))
        << to_string(kind);
  }
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
