// Consistency models against closed forms. For Gaussian data x0 ~ N(0, s²I) the denoiser is
// x̂_0(z_t) = a s² z/(a² s² + σ_vp²) and the probability-flow ODE scales the VE-scale x by
// √(s² + σ²), so the exact consistency function (boundary at σ_min = σ(0)) is
// f(x, σ) = x √(s² + σ_min²)/√(s² + σ²): a student computing it has (nearly) zero distillation
// loss with the exact teacher, the teacher's Heun step beats its DDIM step against the exact
// ODE, and consistency sampling from it gives data of std ≈ s. For point-mass data c every
// trajectory ends at c, so consistency training of the exact student has zero loss except at
// the boundary pair, whose loss is known in closed form. Also the grid, the iCT curriculum, the
// lognormal proposal and the pseudo-Huber distance by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "core/diffusion/consistency.h"
#include "core/diffusion/distillation.h"
#include "core/diffusion/samplers.h"
#include "core/models/denoiser.h"
#include "distiller/distillation_objective.h"
#include "tests/test_utils.h"
#include "trainer/consistency_objective.h"
#include "trainer/ema.h"
#include "trainer/train_state.h"

namespace diffusion {
namespace {

using testing::tensor_near;

const NoiseSchedule kSchedule = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
constexpr double kStd = 0.5;  // s, the Gaussian data's std

double sigma_at(int64_t t) { return std::sqrt((1 - kSchedule.alpha_bar(t)) / kSchedule.alpha_bar(t)); }

// a = √ᾱ_t and σ_vp = √(1-ᾱ_t) per sample, [B, 1].
std::pair<at::Tensor, at::Tensor> a_and_s(const at::Tensor& t) {
  const auto ab = alpha_bar_at(kSchedule, t).to(torch::kFloat32).unsqueeze(1);
  return {ab.sqrt(), (1 - ab).sqrt()};
}

// The exact denoiser of N(0, s²I) data, as an eps or x0 predictor.
class GaussDenoiser : public DenoiserImpl {
 public:
  explicit GaussDenoiser(Prediction prediction) : prediction_(prediction) {}
  at::Tensor forward(const at::Tensor& z, const at::Tensor& t, const at::Tensor&) override {
    const auto [a, s] = a_and_s(t);
    const auto x0 = a * kStd * kStd * z / (a * a * kStd * kStd + s * s);
    return prediction_ == Prediction::kX0 ? x0 : (z - a * x0) / s;
  }
  int64_t num_classes() const override { return 0; }
  bool learned_variance() const override { return false; }

 private:
  Prediction prediction_;
};

// The exact consistency function of N(0, s²I) data as an x0 predictor, times a parameter (so the
// EMA copy into a target network shows), plus `bias` (to spoil it).
class GaussConsistency : public DenoiserImpl {
 public:
  explicit GaussConsistency(double bias = 0.0) : bias_(bias) { weight_ = register_parameter("weight", torch::ones({1})); }
  at::Tensor forward(const at::Tensor& z, const at::Tensor& t, const at::Tensor&) override {
    const auto [a, s] = a_and_s(t);
    const auto sigma = s / a;
    const double sigma_min = sigma_at(0);
    return (z / a) * std::sqrt(kStd * kStd + sigma_min * sigma_min) / (kStd * kStd + sigma * sigma).sqrt() * weight_ +
           bias_;
  }
  int64_t num_classes() const override { return 0; }
  bool learned_variance() const override { return false; }

 private:
  double bias_;
  at::Tensor weight_;
};

TEST(ConsistencyMath, GridCurriculumProposalAndDistance) {
  for (const int64_t n : {2, 10, 18, 150, 1281}) {
    const auto g = consistency_grid(kSchedule, n);
    ASSERT_GE(g.size(), 2u) << n;
    EXPECT_EQ(g.front(), 0) << n;
    EXPECT_EQ(g.back(), 999) << n;
    EXPECT_LE(static_cast<int64_t>(g.size()), std::min<int64_t>(n, 1000)) << n;
    for (size_t i = 1; i < g.size(); ++i) EXPECT_LT(g[i - 1], g[i]) << n;
  }
  // N = 1281 Karras points on 1000 timesteps must share some.
  EXPECT_LT(consistency_grid(kSchedule, 1281).size(), 1000u);
  // iCT: s0 = 10, s1 = 1280, K = 800: log2(128) + 1 = 8 stages of K' = 100 steps.
  EXPECT_EQ(ict_points(0, 800, 10, 1280), 11);
  EXPECT_EQ(ict_points(99, 800, 10, 1280), 11);
  EXPECT_EQ(ict_points(100, 800, 10, 1280), 21);
  EXPECT_EQ(ict_points(350, 800, 10, 1280), 81);
  EXPECT_EQ(ict_points(700, 800, 10, 1280), 1281);
  EXPECT_EQ(ict_points(799, 800, 10, 1280), 1281);
  EXPECT_EQ(ict_points(5, 3, 10, 1280), 321);  // K' floors at 1 step: 10·2^5 + 1
  EXPECT_EQ(ict_points(7, 3, 10, 1280), 1281);
  // The lognormal pair probabilities against the normal CDF Φ(z) = erfc(-z/√2)/2.
  const std::vector<double> sig = {0.01, 0.1, 0.5, 2.0, 80.0};
  const auto cdf = lognormal_pair_cdf(sig, -1.1, 2.0);
  ASSERT_EQ(cdf.size(), 4u);
  const auto Phi = [](double s) { return 0.5 * std::erfc(-(std::log(s) + 1.1) / 2.0 / std::sqrt(2.0)); };
  const double total = Phi(80.0) - Phi(0.01);
  double acc = 0;
  for (size_t n = 0; n < 4; ++n) {
    acc += (Phi(sig[n + 1]) - Phi(sig[n])) / total;
    EXPECT_NEAR(cdf[n], acc, 1e-12) << n;
  }
  EXPECT_EQ(pair_from_uniform(cdf, 0.0), 0);
  EXPECT_EQ(pair_from_uniform(cdf, cdf[0] - 1e-9), 0);
  EXPECT_EQ(pair_from_uniform(cdf, cdf[0]), 1);
  EXPECT_EQ(pair_from_uniform(cdf, cdf[2] + 1e-9), 3);
  EXPECT_EQ(pair_from_uniform(cdf, 0.999999999), 3);
  // √(3² + 4² + 1) - 1 and √(0 + 1) - 1.
  const auto a = torch::tensor({{3.0f, 4.0f}, {1.0f, 1.0f}}), b = torch::tensor({{0.0f, 0.0f}, {1.0f, 1.0f}});
  EXPECT_TRUE(tensor_near(pseudo_huber(a, b, 1.0), torch::tensor({std::sqrt(26.0f) - 1.0f, 0.0f}), 1e-6, 1e-7));
  EXPECT_NEAR(default_huber_c(3072), 0.00054 * std::sqrt(3072.0), 1e-12);
}

TEST(ConsistencyMath, BoundaryConditionIsExact) {
  const auto x = torch::randn({3, 2});
  const auto x0_hat = torch::zeros({3, 2});
  const auto f = consistency_output(kSchedule, x, torch::tensor({0, 5, 0}, torch::kLong), x0_hat);
  const double a0 = std::sqrt(kSchedule.alpha_bar(0));
  EXPECT_TRUE(tensor_near(f[0], x[0] / a0, 1e-6, 0));
  EXPECT_TRUE(tensor_near(f[2], x[2] / a0, 1e-6, 0));
  EXPECT_TRUE(tensor_near(f[1], x0_hat[1], 0, 0));
}

TEST(ConsistencyMath, TeacherHeunStepBeatsDdimAgainstTheExactOde) {
  torch::manual_seed(1);
  GaussDenoiser teacher(Prediction::kX0);
  const auto denoise = [&](const at::Tensor& z, const at::Tensor& t) { return teacher.forward(z, t, {}); };
  const int64_t B = 64;
  for (const auto& [hi, lo] : std::vector<std::pair<int64_t, int64_t>>{{999, 900}, {500, 450}, {60, 40}, {10, 0}}) {
    const auto t_hi = torch::full({B}, hi, torch::kLong), t_lo = torch::full({B}, lo, torch::kLong);
    const double a_hi = std::sqrt(kSchedule.alpha_bar(hi)), a_lo = std::sqrt(kSchedule.alpha_bar(lo));
    const auto z_hi = a_hi * kStd * torch::randn({B, 2}) + std::sqrt(1 - a_hi * a_hi) * torch::randn({B, 2});
    // The exact flow: x_ve ∝ √(s² + σ²).
    const auto exact = z_hi / a_hi * std::sqrt(kStd * kStd + sigma_at(lo) * sigma_at(lo)) /
                       std::sqrt(kStd * kStd + sigma_at(hi) * sigma_at(hi)) * a_lo;
    const auto ddim = teacher_ode_step(kSchedule, TeacherSolver::kDdim, denoise, z_hi, t_hi, t_lo);
    const auto heun = teacher_ode_step(kSchedule, TeacherSolver::kHeun, denoise, z_hi, t_hi, t_lo);
    const double e_ddim = (ddim - exact).abs().max().item<double>(), e_heun = (heun - exact).abs().max().item<double>();
    // Near σ_max both are at float32 round-off (the step is tiny against x_VE ≈ 150).
    if (e_ddim > 1e-3) EXPECT_LT(e_heun, e_ddim / 3) << hi << " -> " << lo;
    else EXPECT_LT(e_heun, 1e-4) << hi << " -> " << lo;
    EXPECT_LT(e_heun, 0.02) << hi << " -> " << lo;
    // DDIM on ᾱ (its own formula, a second code path) is the Euler step in σ.
    const auto x0 = denoise(z_hi, t_hi);
    const auto eps = (z_hi - a_hi * x0) / std::sqrt(1 - a_hi * a_hi);
    EXPECT_TRUE(tensor_near(ddim, ddim_step(a_hi * a_hi, a_lo * a_lo, x0, eps, 0.0, {}), 1e-4, 1e-5));
  }
}

// The distiller's teacher step (distiller.cpp) over the exact Gaussian teacher.
TeacherStepFn gauss_teacher_step(std::shared_ptr<DenoiserImpl> teacher, TeacherSolver solver) {
  DistillationSettings t;
  t.teacher_prediction = Prediction::kEps;
  t.channels = 2;
  return [=](const at::Tensor& z_hi, const at::Tensor& t_hi, const at::Tensor& t_lo, const at::Tensor& y) {
    const auto denoise = [&](const at::Tensor& z, const at::Tensor& tt) {
      return teacher_denoise(*teacher, kSchedule, t, z, tt, y).first;
    };
    return teacher_ode_step(kSchedule, solver, denoise, z_hi, t_hi, t_lo);
  };
}

TEST(ConsistencyDistillation, ExactStudentHasNearZeroLossAndTheTargetFollowsTheEma) {
  torch::manual_seed(2);
  ConsistencySettings k;
  k.prediction = Prediction::kX0;
  k.channels = 2;
  k.points = 18;
  k.target_ema = 0.9;
  auto teacher = std::make_shared<GaussDenoiser>(Prediction::kEps);
  std::map<TeacherSolver, double> mean_loss;
  for (const auto solver : {TeacherSolver::kHeun, TeacherSolver::kDdim}) {
    auto target = std::make_shared<GaussConsistency>();
    ConsistencyObjective objective(kSchedule, k, gauss_teacher_step(teacher, solver), target);
    const auto pairs = objective.timestep_draws();
    EXPECT_EQ(pairs, static_cast<int64_t>(objective.grid().size()) - 1);
    GaussConsistency exact, wrong(0.05);
    // The target is whatever the bound EMA holds: a weight of 1 is the exact function.
    std::vector<Ema> emas{Ema(named_parameters(exact).tensors, 0.999), Ema(named_parameters(exact).tensors, 0.9)};
    objective.bind_emas(emas);
    objective.begin_step(0);
    const int64_t B = 4 * pairs;
    const auto draw = torch::arange(B, torch::kLong).remainder(pairs);
    const auto x0 = kStd * torch::randn({B, 2}), eps = torch::randn({B, 2});
    const auto good = objective.losses(exact, x0, {}, draw, eps);
    const auto bad = objective.losses(wrong, x0, {}, draw, eps);
    // The student's timesteps are the upper points t_{n+1}.
    for (int64_t i = 0; i < B; ++i)
      EXPECT_EQ(good.t[i].item<int64_t>(), objective.grid()[static_cast<size_t>(draw[i].item<int64_t>()) + 1]);
    // What is left is the teacher step's discretisation error (second order for Heun); a student
    // off by 0.05 per coordinate is off by |(0.05, 0.05)| ≈ 0.07.
    EXPECT_LT(good.loss.mean().item<double>(), solver == TeacherSolver::kHeun ? 0.003 : 0.01) << to_string(solver);
    EXPECT_GT(bad.loss.mean().item<double>(), 0.06) << to_string(solver);
    mean_loss[solver] = good.loss.mean().item<double>();
    // A target EMA of weight 2 doubles the target: begin_step reads the EMA, not the student.
    { torch::NoGradGuard g; emas[1].shadow()[0].fill_(2.0); }
    objective.begin_step(1);
    EXPECT_EQ(target->named_parameters()["weight"].item<float>(), 2.0f);
    EXPECT_GT(objective.losses(exact, x0, {}, draw, eps).loss.mean().item<double>(), 0.1);
  }
  EXPECT_LT(mean_loss[TeacherSolver::kHeun], mean_loss[TeacherSolver::kDdim]);
  // The run must keep an EMA at the target rate.
  ConsistencyObjective objective(kSchedule, k, gauss_teacher_step(teacher, TeacherSolver::kHeun),
                                 std::make_shared<GaussConsistency>());
  GaussConsistency student;
  const std::vector<Ema> none{Ema(named_parameters(student).tensors, 0.999)};
  testing::expect_error([&] { objective.bind_emas(none); }, {"target rate 0.9", "--target-ema"});
  k.prediction = Prediction::kEps;
  testing::expect_error([&] { ConsistencyObjective o(kSchedule, k); }, {"eps"});
}

// The exact consistency function of point-mass data c, as an x0 predictor: c.
class PointMassConsistency : public DenoiserImpl {
 public:
  at::Tensor forward(const at::Tensor& z, const at::Tensor&, const at::Tensor&) override {
    return torch::tensor({0.7f, -1.2f}).unsqueeze(0).expand_as(z) * weight_;
  }
  int64_t num_classes() const override { return 0; }
  bool learned_variance() const override { return false; }
  at::Tensor weight_ = register_parameter("weight", torch::ones({1}));
};

TEST(ConsistencyTraining, ExactStudentLossIsZeroExceptAtTheBoundaryPair) {
  torch::manual_seed(3);
  ConsistencySettings k;
  k.prediction = Prediction::kX0;
  k.channels = 2;
  k.initial_points = 10;
  k.final_points = 40;
  k.total_steps = 300;  // stages of 100 steps: 11, 21, 41 points
  k.huber_c = 0.01;
  ConsistencyObjective objective(kSchedule, k);
  EXPECT_EQ(objective.timestep_draws(), int64_t{1} << 24);
  EXPECT_EQ(objective.grid(), consistency_grid(kSchedule, 11));
  objective.begin_step(150);
  EXPECT_EQ(objective.grid(), consistency_grid(kSchedule, 21));
  const auto& g = objective.grid();
  const auto cdf = lognormal_pair_cdf(sigmas_of(kSchedule, g), -1.1, 2.0);
  // Draws at the middle of each pair's CDF interval land on that pair.
  const int64_t P = static_cast<int64_t>(cdf.size());
  auto draw = torch::empty({P}, torch::kLong);
  for (int64_t n = 0; n < P; ++n)
    draw[n] = static_cast<int64_t>(((n > 0 ? cdf[n - 1] : 0.0) + cdf[n]) / 2 * double(int64_t{1} << 24));
  const auto c = torch::tensor({0.7f, -1.2f});
  const auto x0 = c.unsqueeze(0).expand({P, 2}).contiguous(), eps = torch::randn({P, 2});
  PointMassConsistency student;
  const auto out = objective.losses(student, x0, {}, draw, eps);
  for (int64_t n = 0; n < P; ++n) {
    EXPECT_EQ(out.t[n].item<int64_t>(), g[static_cast<size_t>(n) + 1]) << n;
    // At the boundary pair the target is f(x, σ_min) = x = c + σ_min ε, at weight 1/(σ_1 - σ_0).
    const double expected =
        n == 0 ? (std::sqrt(std::pow(sigma_at(0), 2) * eps[0].square().sum().item<double>() + 0.01 * 0.01) - 0.01) /
                     (sigma_at(g[1]) - sigma_at(g[0]))
               : 0.0;
    EXPECT_NEAR(out.loss[n].item<double>(), expected, 1e-3 * std::max(1.0, expected)) << n;
  }
}

TEST(ConsistencySampling, ExactModelGivesTheDataDistribution) {
  GaussConsistency exact;
  const DenoiseFn fn = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) { return exact.forward(x, t, y); };
  std::vector<int64_t> indices(4000);
  for (int64_t i = 0; i < 4000; ++i) indices[i] = i;
  for (const int64_t steps : {1, 2, 4}) {
    SamplerConfig config;
    config.kind = SamplerKind::kConsistency;
    config.steps = steps;
    config.spacing = TimestepSpacing::kTrailing;
    config.prediction = Prediction::kX0;
    const Sampler sampler(kSchedule, config);
    EXPECT_EQ(sampler.timesteps().front(), 999);
    EXPECT_EQ(sampler.timesteps(), consistency_sampling_timesteps(1000, steps));
    const auto x = sampler.sample(fn, indices, {2}, {});
    // x_T ~ N(0, I) stands for the marginal N(0, a² s² + σ_vp²) at T-1, so one step gives std
    // s √(1 + σ_min²/s²)/√(a² s² + σ_vp²) ≈ s; later steps re-noise from the marginal.
    EXPECT_NEAR(x.std().item<double>(), kStd, 0.03 * kStd) << steps;
    EXPECT_NEAR(x.mean().item<double>(), 0.0, 0.03) << steps;
    // A sample does not depend on its batch.
    const auto one = sampler.sample(fn, {17}, {2}, {});
    EXPECT_TRUE(tensor_near(one[0], x[17], 1e-5, 1e-6)) << steps;
  }
  // A distilled student's grid: the points snap to its nearest timesteps (ties to the larger).
  const std::vector<int64_t> grid = {0, 5, 21, 55, 120, 221, 342, 455, 551, 631, 699, 757, 809, 854, 895, 933, 967, 999};
  EXPECT_EQ(consistency_sampling_timesteps(1000, 1, grid), (std::vector<int64_t>{999}));
  EXPECT_EQ(consistency_sampling_timesteps(1000, 2, grid), (std::vector<int64_t>{999, 455}));  // 499: 44 vs 52
  EXPECT_EQ(consistency_sampling_timesteps(1000, 4, grid), (std::vector<int64_t>{999, 757, 455, 221}));
  EXPECT_EQ(consistency_sampling_timesteps(10, 2, {0, 2, 6, 9}), (std::vector<int64_t>{9, 6}));  // 4: a tie, 6
  testing::expect_error([&] { consistency_sampling_timesteps(1000, 3, {0, 999}); }, {"--steps 3", "only 2"});
  {
    SamplerConfig config;
    config.kind = SamplerKind::kConsistency;
    config.steps = 4;
    config.spacing = TimestepSpacing::kTrailing;
    config.consistency_grid = grid;
    EXPECT_EQ(Sampler(kSchedule, config).timesteps(), (std::vector<int64_t>{999, 757, 455, 221}));
  }
  SamplerConfig bad;
  bad.kind = SamplerKind::kConsistency;
  bad.steps = 2;
  bad.spacing = TimestepSpacing::kLeading;
  testing::expect_error([&] { const Sampler s(kSchedule, bad); }, {"--timestep-spacing leading", "trailing"});
  bad.spacing = TimestepSpacing::kTrailing;
  bad.eta = 0.5;
  testing::expect_error([&] { const Sampler s(kSchedule, bad); }, {"--eta"});
  EXPECT_EQ(parse_sampler_kind("consistency"), SamplerKind::kConsistency);
  EXPECT_FALSE(is_fast_sampler(SamplerKind::kConsistency));
}

TEST(ConsistencySampling, ChosenTimePoints) {
  GaussConsistency exact;
  const DenoiseFn fn = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) { return exact.forward(x, t, y); };
  std::vector<int64_t> indices(4000);
  for (int64_t i = 0; i < 4000; ++i) indices[i] = i;
  SamplerConfig config;
  config.kind = SamplerKind::kConsistency;
  config.spacing = TimestepSpacing::kTrailing;
  config.prediction = Prediction::kX0;
  // The points trailing spacing picks, given explicitly: the same samples.
  config.steps = 4;
  const auto spaced = Sampler(kSchedule, config).sample(fn, indices, {2}, {});
  config.time_points = consistency_sampling_timesteps(1000, 4);
  EXPECT_TRUE(tensor_near(Sampler(kSchedule, config).sample(fn, indices, {2}, {}), spaced, 0.0, 0.0));
  // Other points: visited as given, and an exact model still gives the data distribution.
  config.steps = 2;
  config.time_points = {999, 249};
  const Sampler sampler(kSchedule, config);
  EXPECT_EQ(sampler.timesteps(), (std::vector<int64_t>{999, 249}));
  const auto x = sampler.sample(fn, indices, {2}, {});
  EXPECT_NEAR(x.std().item<double>(), kStd, 0.03 * kStd);
  EXPECT_NEAR(x.mean().item<double>(), 0.0, 0.03);
  config.steps = 3;
  testing::expect_error([&] { const Sampler s(kSchedule, config); }, {"--time-points", "2 points", "--steps 3"});
  config.steps = 2;
  config.kind = SamplerKind::kDdim;
  testing::expect_error([&] { const Sampler s(kSchedule, config); }, {"--time-points", "ddim"});

  const std::vector<int64_t> grid = {0, 5, 21, 55, 120, 221, 342, 455, 551, 631, 699, 757, 809, 854, 895, 933, 967, 999};
  EXPECT_EQ(consistency_time_points(1000, {999, 455, 5}, grid), (std::vector<int64_t>{999, 455, 5}));
  testing::expect_error([&] { consistency_time_points(1000, {}); }, {"--time-points", "empty"});
  testing::expect_error([&] { consistency_time_points(1000, {998, 500}); }, {"--time-points 998,500", "t = 999"});
  testing::expect_error([&] { consistency_time_points(1000, {999, 500, 500}); }, {"point 3", "t = 500"});
  testing::expect_error([&] { consistency_time_points(1000, {999, -1}); }, {"point 2", "t = -1"});
  testing::expect_error([&] { consistency_time_points(1000, {999, 300}, grid); },
                        {"t = 300", "training grid (18 points", "t = 221 and 342"});
}

}  // namespace
}  // namespace diffusion
