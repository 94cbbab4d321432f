// Training objectives: each target's MSE, and L_hybrid's stopped gradient.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/diffusion/losses.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::tensor_near;

class LossesTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(3); }
  NoiseSchedule s = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
  torch::Tensor t = torch::tensor({0, 17, 600, 999}, torch::kLong);
  torch::Tensor x0 = torch::rand({4, 2, 3, 3}) * 2 - 1;
  torch::Tensor eps = torch::randn({4, 2, 3, 3});
  torch::Tensor xt = q_sample(s, x0, t, eps);
};

TEST_F(LossesTest, ExactPredictionsHaveZeroLossAndZeroOutputHasTargetPower) {
  const std::pair<Prediction, torch::Tensor> cases[] = {
      {Prediction::kEps, eps}, {Prediction::kX0, x0}, {Prediction::kV, v_from_x0_eps(s, x0, t, eps)}};
  for (const auto& [kind, target] : cases) {
    LossConfig config{kind, false};
    EXPECT_TRUE(tensor_near(training_losses(s, config, target, x0, xt, t, eps).loss, torch::zeros({4}), 0, 1e-12))
        << to_string(kind);
    const auto zero = training_losses(s, config, torch::zeros_like(x0), x0, xt, t, eps);
    EXPECT_TRUE(tensor_near(zero.loss, target.pow(2).reshape({4, -1}).mean(1), 1e-6, 0)) << to_string(kind);
    EXPECT_FALSE(zero.vlb.defined());
  }
}

TEST_F(LossesTest, HybridLossAddsWeightedVlbAndStopsTheMeanGradient) {
  LossConfig config{Prediction::kEps, /*learned_variance=*/true, 0.001};
  auto mean_part = (eps + 0.1 * torch::randn_like(eps)).requires_grad_();
  auto var_part = (0.3 * torch::randn_like(eps)).requires_grad_();
  const auto terms = training_losses(s, config, torch::cat({mean_part, var_part}, 1), x0, xt, t, eps);
  EXPECT_TRUE(tensor_near(terms.loss, terms.mse + 0.001 * 1000 * terms.vlb, 1e-6, 1e-7));
  EXPECT_GT(terms.vlb.min().item<double>(), 0.0);
  terms.loss.sum().backward();
  // The mean's gradient is exactly that of the MSE alone: d/dμ mean((ε - μ)²) = 2(μ - ε)/n.
  const auto expected = 2.0 * (mean_part.detach() - eps) / static_cast<double>(eps[0].numel());
  EXPECT_TRUE(tensor_near(mean_part.grad(), expected, 1e-5, 1e-8));
  // The variance channels do learn from L_vlb.
  EXPECT_GT(var_part.grad().abs().sum().item<double>(), 0.0);
}

// Min-SNR-γ: by hand at the linear schedule's ends, and the same x_0-space loss
// min(SNR, γ)·‖x̂_0 − x_0‖² whichever target the network predicts.
TEST_F(LossesTest, MinSnrWeightsEqualTheClippedX0LossForEveryTarget) {
  const double gamma = 5.0;
  const auto abar = s.alphas_cumprod().index_select(0, t);
  // t = 0: ᾱ = 1 − 1e-4, SNR ≈ 1e4 ≫ γ, so the ε weight is γ/SNR = 5·1e-4/(1 − 1e-4).
  const double abar0 = 1.0 - 1e-4;
  EXPECT_NEAR(min_snr_weight(s, Prediction::kEps, gamma, t)[0].item<double>(), gamma * (1 - abar0) / abar0, 1e-12);
  // t = 999: SNR ≈ 4e-5 < γ, so nothing is clipped and the ε weight is 1.
  EXPECT_NEAR(min_snr_weight(s, Prediction::kEps, gamma, t)[3].item<double>(), 1.0, 1e-12);
  const auto x0_hat = x0 + 0.2 * torch::randn_like(x0);  // one prediction, expressed three ways
  const auto eps_hat = eps_from_x0(s, xt, t, x0_hat);
  const auto v_hat = v_from_x0_eps(s, x0_hat, t, eps_hat);
  const auto snr = abar / (1 - abar);
  const auto expected = torch::clamp_max(snr, gamma).to(torch::kFloat) * (x0_hat - x0).pow(2).reshape({4, -1}).mean(1);
  const std::pair<Prediction, torch::Tensor> cases[] = {
      {Prediction::kEps, eps_hat}, {Prediction::kX0, x0_hat}, {Prediction::kV, v_hat}};
  for (const auto& [kind, output] : cases) {
    LossConfig config{kind, false, 0.001, gamma};
    const auto terms = training_losses(s, config, output, x0, xt, t, eps);
    EXPECT_TRUE(tensor_near(terms.loss, expected, 1e-4, 1e-7)) << to_string(kind);
    // The logged MSE stays the unweighted one.
    EXPECT_TRUE(tensor_near(terms.mse, (output - prediction_target(s, kind, x0, t, eps)).pow(2).reshape({4, -1}).mean(1),
                            1e-6, 0))
        << to_string(kind);
  }
}

}  // namespace
}  // namespace diffusion
