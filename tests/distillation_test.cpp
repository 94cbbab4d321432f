// Progressive distillation without a trained network. For data that is a single point c the
// exact ε-predictor is known, ε̂(z_t) = (z_t - a_t c)/σ_t, DDIM from it is exact, and so the
// distillation target x̃ must be c itself at every grid position; a student that predicts the
// exact v (or x0) then has zero loss. Also: the 2N-grid against its definition and against
// trailing spacing (a second code path), and the truncated-SNR weight.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/models/denoiser.h"
#include "core/diffusion/distillation.h"
#include "core/diffusion/spacing.h"
#include "distiller/distillation_objective.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::tensor_near;

const NoiseSchedule kSchedule = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});

// The exact network for point-mass data c ∈ R^2: ε̂ = (z - a c)/σ, or v = a ε̂ - σ c, or x0 = c.
// `bias` spoils the output so the loss can be seen to react.
class PointMassNet : public DenoiserImpl {
 public:
  PointMassNet(Prediction prediction, double bias) : prediction_(prediction), bias_(bias) {
    weight_ = register_parameter("weight", torch::ones({1}));
  }
  at::Tensor forward(const at::Tensor& z, const at::Tensor& t, const at::Tensor&) override {
    const auto ab = alpha_bar_at(kSchedule, t).to(torch::kFloat32).unsqueeze(1);  // [B, 1]
    const auto a = ab.sqrt(), s = (1 - ab).sqrt();
    const auto c = torch::tensor({0.7f, -1.2f}).unsqueeze(0);  // [1, 2]
    const auto eps = (z - a * c) / s;
    at::Tensor out = prediction_ == Prediction::kEps ? eps : prediction_ == Prediction::kV ? a * eps - s * c : c.expand_as(z);
    return out * weight_ + bias_;
  }
  int64_t num_classes() const override { return 0; }
  bool learned_variance() const override { return false; }

 private:
  Prediction prediction_;
  double bias_;
  at::Tensor weight_;
};

TEST(DistillationGrid, MatchesDefinitionAndTrailingSpacing) {
  const auto g = distillation_grid(1000, 4);  // round(j·125) - 1
  ASSERT_EQ(g.size(), 9u);
  for (int64_t j = 0; j <= 8; ++j) EXPECT_EQ(g[j], j * 125 - 1);
  // round(j·10/6) - 1 = round(0, 1.67, 3.33, 5, 6.67, 8.33, 10) - 1; T = 10, N = 4: j·1.25 with
  // 2.5 and 7.5 rounding half to even.
  EXPECT_EQ(distillation_grid(10, 3), (std::vector<int64_t>{-1, 1, 2, 4, 6, 7, 9}));
  EXPECT_EQ(distillation_grid(10, 4), (std::vector<int64_t>{-1, 0, 1, 3, 4, 5, 7, 8, 9}));
  for (int64_t T : {10, 64, 1000})
    for (int64_t N : {1, 2, 3, 4, 5, 32})
      if (2 * N <= T) EXPECT_EQ(student_timesteps(T, N), timestep_spacing(TimestepSpacing::kTrailing, T, N)) << T << " " << N;
  testing::expect_error([] { distillation_grid(10, 6); }, {"2N <= T", "10"});
}

TEST(DistillationTarget, ExactTeacherGivesTheData) {
  torch::manual_seed(0);
  const auto c = torch::tensor({0.7f, -1.2f}).unsqueeze(0).expand({5, 2});
  for (const int64_t tpp : {-1, 0, 300}) {
    const int64_t t = 700;
    const auto ab_t = torch::full({5}, kSchedule.alpha_bar(t), torch::kFloat64);
    const auto ab_pp = torch::full({5}, tpp < 0 ? 1.0 : kSchedule.alpha_bar(tpp), torch::kFloat64);
    const auto eps = torch::randn({5, 2});
    const auto z_t = std::sqrt(kSchedule.alpha_bar(t)) * c + std::sqrt(1 - kSchedule.alpha_bar(t)) * eps;
    const auto z_pp = ddim_deterministic(ab_pp, c, eps);  // exact DDIM: the same ε
    EXPECT_TRUE(tensor_near(distillation_target(z_t, z_pp, ab_t, ab_pp), c, 1e-4, 1e-5)) << "t'' = " << tpp;
  }
}

TEST(DistillationTarget, TruncatedSnrWeight) {
  const auto w = truncated_snr_weight(torch::tensor({0.9, 0.5, 0.2}, torch::kFloat64));
  EXPECT_TRUE(tensor_near(w, torch::tensor({9.0f, 1.0f, 1.0f}), 1e-6, 0));
}

TEST(DistillationObjective, ExactStudentHasZeroLossWrongOneDoesNot) {
  for (const auto teacher_prediction : {Prediction::kEps, Prediction::kV}) {
    for (const auto student_prediction : {Prediction::kV, Prediction::kX0}) {
      DistillationSettings settings;
      settings.student_steps = 4;
      settings.teacher_prediction = teacher_prediction;
      settings.student_prediction = student_prediction;
      settings.channels = 2;
      DistillationObjective objective(kSchedule, std::make_shared<PointMassNet>(teacher_prediction, 0.0), settings);
      EXPECT_EQ(objective.timestep_draws(), 4);
      const auto x0 = torch::tensor({0.7f, -1.2f}).unsqueeze(0).expand({8, 2}).contiguous();
      const auto draw = torch::tensor({0, 1, 2, 3, 0, 1, 2, 3}, torch::kLong);
      const auto eps = torch::randn({8, 2});
      PointMassNet exact(student_prediction, 0.0), wrong(student_prediction, 0.05);
      const auto good = objective.losses(exact, x0, {}, draw, eps);
      EXPECT_LT(good.loss.abs().max().item<double>(), 1e-6);
      // The timesteps are g_{2k}, k = draw + 1.
      EXPECT_TRUE(torch::equal(good.t, torch::tensor({249, 499, 749, 999, 249, 499, 749, 999}, torch::kLong)));
      const auto bad = objective.losses(wrong, x0, {}, draw, eps);
      EXPECT_GT(bad.loss.min().item<double>(), 1e-5);
      // initialize() copies the teacher's weights into the student.
      PointMassNet student(student_prediction, 0.0);
      { torch::NoGradGuard g; student.named_parameters()["weight"].fill_(3.0); }
      objective.initialize(student);
      EXPECT_EQ(student.named_parameters()["weight"].item<float>(), 1.0f);
    }
  }
}

}  // namespace
}  // namespace diffusion
