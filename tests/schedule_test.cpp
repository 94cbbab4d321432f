// NoiseSchedule against closed forms: ᾱ of the linear and cosine schedules, the posterior
// tables, and respacing.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"
#include "core/diffusion/schedule.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

// ᾱ_t = ∏_{s≤t} (1 - β_s) in long double, β_s from the DDPM formula written out by hand.
long double linear_alpha_bar(int64_t t, int64_t T) {
  long double prod = 1.0L;
  for (int64_t s = 0; s <= t; ++s) prod *= 1.0L - (1e-4L + (0.02L - 1e-4L) * s / (T - 1));
  return prod;
}

TEST(Schedule, LinearAlphaBarMatchesClosedFormAtThreeTimesteps) {
  const auto s = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
  // Hand values: ᾱ_0 = 1 - β_0 = 0.9999; ᾱ_499 and ᾱ_999 are the products of DDPM's betas
  // (ᾱ_999 ≈ 4.036e-5 is the value quoted for DDPM's schedule).
  EXPECT_DOUBLE_EQ(s.alpha_bar(0), 0.9999);
  EXPECT_NEAR(s.alpha_bar(499), 0.0785872428817, 1e-12);
  EXPECT_NEAR(s.alpha_bar(999), 4.0358297653757e-05, 1e-15);
  for (int64_t t : {0, 1, 250, 499, 998, 999})
    EXPECT_NEAR(s.alpha_bar(t), static_cast<double>(linear_alpha_bar(t, 1000)),
                1e-13 * s.alpha_bar(t))
        << "t = " << t;
  EXPECT_EQ(s.alpha_bar(-1), 1.0);
  EXPECT_DOUBLE_EQ(s.betas()[0].item<double>(), 1e-4);
  EXPECT_DOUBLE_EQ(s.betas()[999].item<double>(), 0.02);
}

TEST(Schedule, LinearEndpointsScaleWithTLikeImprovedDdpm) {
  const auto s = NoiseSchedule::from_config({ScheduleKind::kLinear, 100});
  EXPECT_DOUBLE_EQ(s.betas()[0].item<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(s.betas()[99].item<double>(), 0.2);
  ScheduleConfig explicit_config{ScheduleKind::kLinear, 100, 1e-4, 0.02};
  const auto e = NoiseSchedule::from_config(explicit_config);
  EXPECT_DOUBLE_EQ(e.betas()[99].item<double>(), 0.02);
}

TEST(Schedule, CosineMatchesItsDefinition) {
  const int64_t T = 1000;
  const auto s = NoiseSchedule::from_config({ScheduleKind::kCosine, T});
  const auto f = [&](long double u) {
    const long double c = std::cos((u / T + 0.008L) / 1.008L * M_PI / 2.0L);
    return c * c;
  };
  // Without clipping, ᾱ_t = f(t+1)/f(0) telescopes; clipping at 0.999 only bites near t = T-1.
  for (int64_t t : {0, 100, 499, 900})
    EXPECT_NEAR(s.alpha_bar(t), static_cast<double>(f(t + 1) / f(0)), 1e-12) << "t = " << t;
  EXPECT_DOUBLE_EQ(s.betas()[T - 1].item<double>(), 0.999);
  EXPECT_NEAR(s.alpha_bar(499), 0.4938435904406, 1e-10);
}

TEST(Schedule, PosteriorTablesFollowTheirFormulas) {
  const auto s = NoiseSchedule::from_config({ScheduleKind::kLinear, 50});
  for (int64_t t : {1, 7, 49}) {
    const double beta = s.betas()[t].item<double>();
    const double ab = s.alpha_bar(t), ab_prev = s.alpha_bar(t - 1);
    EXPECT_NEAR(s.posterior_variance()[t].item<double>(), beta * (1 - ab_prev) / (1 - ab), 1e-15);
    EXPECT_NEAR(s.posterior_mean_coef1()[t].item<double>(), std::sqrt(ab_prev) * beta / (1 - ab), 1e-14);
    EXPECT_NEAR(s.posterior_mean_coef2()[t].item<double>(),
                std::sqrt(1 - beta) * (1 - ab_prev) / (1 - ab), 1e-14);
  }
  // β̃_0 = 0: the clipped log-variance uses β̃_1 there; fixed-large uses β̃_1 for β_0 too.
  EXPECT_EQ(s.posterior_variance()[0].item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(s.posterior_log_variance_clipped()[0].item<double>(),
                   std::log(s.posterior_variance()[1].item<double>()));
  EXPECT_DOUBLE_EQ(s.fixed_large_log_variance()[0].item<double>(),
                   std::log(s.posterior_variance()[1].item<double>()));
  EXPECT_DOUBLE_EQ(s.fixed_large_log_variance()[5].item<double>(), std::log(s.betas()[5].item<double>()));
}

TEST(Schedule, RespacingWithTheFullSequenceReproducesTheBetas) {
  for (auto kind : {ScheduleKind::kLinear, ScheduleKind::kCosine}) {
    const auto s = NoiseSchedule::from_config({kind, 1000});
    std::vector<int64_t> all(1000);
    for (int64_t i = 0; i < 1000; ++i) all[i] = i;
    const auto r = s.respaced(all);
    EXPECT_TRUE(testing::tensor_near(r.betas(), s.betas(), 1e-9, 1e-15)) << to_string(kind);
    EXPECT_EQ(r.timestep_map(), all);
  }
}

TEST(Schedule, RespacedScheduleKeepsAlphaBarOnTheSubsequence) {
  const auto s = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
  const std::vector<int64_t> use{0, 99, 499, 999};
  const auto r = s.respaced(use);
  ASSERT_EQ(r.num_steps(), 4);
  EXPECT_EQ(r.timestep_map(), use);
  for (size_t i = 0; i < use.size(); ++i)
    EXPECT_NEAR(r.alpha_bar(static_cast<int64_t>(i)), s.alpha_bar(use[i]), 1e-15);
  // β'_1 = 1 - ᾱ_99/ᾱ_0 by definition.
  EXPECT_NEAR(r.betas()[1].item<double>(), 1 - s.alpha_bar(99) / s.alpha_bar(0), 1e-15);
  // Respacing a respaced schedule maps back to the original timesteps.
  EXPECT_EQ(r.respaced({1, 3}).timestep_map(), (std::vector<int64_t>{99, 999}));
}

TEST(Schedule, BadInputIsRefusedWithAReason) {
  EXPECT_THROW(NoiseSchedule::from_config({ScheduleKind::kLinear, 1}), Error);
  // T = 10 scales DDPM's β_end = 0.02 to 2: refused rather than silently clipped.
  EXPECT_THROW(NoiseSchedule::from_config({ScheduleKind::kLinear, 10}), Error);
  EXPECT_NO_THROW(NoiseSchedule::from_config({ScheduleKind::kLinear, 10, 1e-4, 0.02}));
  const auto s = NoiseSchedule::from_config({ScheduleKind::kCosine, 10});
  EXPECT_THROW(s.respaced({3, 3}), Error);
  EXPECT_THROW(s.respaced({5, 2}), Error);
  EXPECT_THROW(s.respaced({10}), Error);
  try {
    parse_schedule_kind("quadratic");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quadratic"), std::string::npos);
  }
}

TEST(Schedule, GatherBroadcastsPerSample) {
  const auto s = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
  const auto x = torch::zeros({3, 2, 4, 4});
  const auto t = torch::tensor({0, 499, 999}, torch::kLong);
  const auto g = s.gather(s.alphas_cumprod(), t, x);
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{3, 1, 1, 1}));
  EXPECT_EQ(g.scalar_type(), torch::kFloat32);
  EXPECT_FLOAT_EQ(g[1].item<float>(), static_cast<float>(s.alpha_bar(499)));
}

}  // namespace
}  // namespace diffusion
