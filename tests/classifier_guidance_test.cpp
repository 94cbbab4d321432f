// Classifier guidance against closed forms. Data: two equal-weight Gaussians N(μ_k, s² I) in 2-D
// labelled k, so x_t | y = k is N(a μ_k, v I) with v = a² s² + σ² and everything is analytic:
// the unconditional ε (mixture), the class-conditional ε, and the classifier gradient
// g = ∇_x log p(y | x_t) = (a/v)(μ_y - Σ_k p(k | x_t) μ_k). Checked: autograd through the
// exact classifier (logits linear in x) gives that g; ε̂ - σ_t g at scale 1 is the conditional
// ε, so guided DDIM on the mixture equals DDIM on the class-conditional ε (any η, same keyed
// noise); DDPM's shifted mean by hand; CFG first, then the classifier term; guided DDPM samples
// land in the guided class. Also the classifier networks (logits [B, K], the UNet's own encoder
// names) and ClassifierObjective's cross-entropy.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"
#include "core/diffusion/gaussian_diffusion.h"
#include "core/diffusion/samplers.h"
#include "core/models/classifier.h"
#include "core/models/unet.h"
#include "tests/test_utils.h"
#include "trainer/classifier_objective.h"

namespace diffusion {
namespace {

using testing::expect_error;
using testing::tensor_near;

constexpr double kStd = 0.3;
const double kMeans[2][2] = {{-1.5, 0.5}, {1.5, -0.5}};

struct TwoGaussians {
  const NoiseSchedule* schedule;
  // a_t and v_t = a² s² + σ² per row, [B, 1].
  std::pair<at::Tensor, at::Tensor> coefficients(const at::Tensor& t, const at::Tensor& x) const {
    const auto ab = schedule->gather(schedule->alphas_cumprod(), t, x).to(torch::kFloat64);  // [B, 1]
    return {ab.sqrt(), ab * kStd * kStd + (1 - ab)};
  }
  at::Tensor mean(int64_t k, const at::Tensor& x) const {
    return torch::tensor({kMeans[k][0], kMeans[k][1]}, torch::kFloat64).expand({x.size(0), 2});
  }
  // p(k | x_t) for k = 0, 1: [B, 2].
  at::Tensor posterior(const at::Tensor& x, const at::Tensor& t) const {
    const auto [a, v] = coefficients(t, x);
    const auto x64 = x.to(torch::kFloat64);
    const auto l0 = -((x64 - a * mean(0, x)).pow(2).sum(1, true)) / (2 * v);
    const auto l1 = -((x64 - a * mean(1, x)).pow(2).sum(1, true)) / (2 * v);
    return torch::softmax(torch::cat({l0, l1}, 1), 1);
  }
  at::Tensor eps_unconditional(const at::Tensor& x, const at::Tensor& t) const {
    const auto [a, v] = coefficients(t, x);
    const auto w = posterior(x, t);
    const auto x64 = x.to(torch::kFloat64);
    const auto mix = w.slice(1, 0, 1) * mean(0, x) + w.slice(1, 1, 2) * mean(1, x);
    return ((1 - a * a).sqrt() * (x64 - a * mix) / v).to(torch::kFloat32);
  }
  at::Tensor eps_conditional(const at::Tensor& x, const at::Tensor& t, int64_t y) const {
    const auto [a, v] = coefficients(t, x);
    return ((1 - a * a).sqrt() * (x.to(torch::kFloat64) - a * mean(y, x)) / v).to(torch::kFloat32);
  }
  // The closed-form classifier gradient for labels y.
  at::Tensor grad(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) const {
    const auto [a, v] = coefficients(t, x);
    const auto w = posterior(x, t);
    const auto mix = w.slice(1, 0, 1) * mean(0, x) + w.slice(1, 1, 2) * mean(1, x);
    const auto my = torch::where(y.unsqueeze(1) == 0, mean(0, x), mean(1, x));
    return (a / v * (my - mix)).to(torch::kFloat32);
  }
  // The exact classifier's logits, linear in x: a μ_k·x / v - a² |μ_k|² / (2v) (the common
  // -|x|²/(2v) dropped), float32 so autograd runs through ordinary ops.
  at::Tensor logits(const at::Tensor& x, const at::Tensor& t) const {
    const auto [a64, v64] = coefficients(t, x);
    const auto a = a64.to(torch::kFloat32), v = v64.to(torch::kFloat32);
    std::vector<at::Tensor> cols;
    for (int k = 0; k < 2; ++k) {
      const auto mu = torch::tensor({float(kMeans[k][0]), float(kMeans[k][1])});
      const double mu2 = kMeans[k][0] * kMeans[k][0] + kMeans[k][1] * kMeans[k][1];
      cols.push_back(a * (x * mu).sum(1, true) / v - a * a * mu2 / (2 * v));
    }
    return torch::cat(cols, 1);  // [B, 2]
  }
};

class ClassifierGuidanceTest : public ::testing::Test {
 protected:
  NoiseSchedule schedule = NoiseSchedule::from_config({ScheduleKind::kLinear, 1000});
  TwoGaussians data{&schedule};
  std::vector<int64_t> range(int64_t n) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
    return v;
  }
};

TEST_F(ClassifierGuidanceTest, AutogradThroughTheExactClassifierGivesTheAnalyticGradient) {
  torch::manual_seed(0);
  const auto x = torch::randn({64, 2}) * 2;
  const auto t = torch::randint(0, 1000, {64}, torch::kLong);
  const auto y = torch::randint(0, 2, {64}, torch::kLong);
  const auto g = classifier_log_prob_grad([&](const at::Tensor& xi, const at::Tensor& ti) { return data.logits(xi, ti); },
                                          x, t, y);
  EXPECT_TRUE(tensor_near(g, data.grad(x, t, y), 1e-4, 1e-5));
  // Under the sampler's NoGradGuard too (it enables autograd itself).
  torch::NoGradGuard no_grad;
  const auto g2 = classifier_log_prob_grad(
      [&](const at::Tensor& xi, const at::Tensor& ti) { return data.logits(xi, ti); }, x, t, y);
  EXPECT_TRUE(tensor_near(g2, g, 0, 0));
}

TEST_F(ClassifierGuidanceTest, GuidedDdimOnTheMixtureEqualsDdimOnTheConditionalEps) {
  // ε̂(x_t) - σ_t ∇ log p(y | x_t) = -σ_t ∇ log p(x_t | y): at scale 1 the guided sampler is the
  // class-conditional one, whatever the step count, η (the same keyed noise) or class.
  for (double eta : {0.0, 1.0}) {
    for (int64_t cls : {0, 1}) {
      SamplerConfig config;
      config.kind = SamplerKind::kDdim;
      config.steps = 25;
      config.eta = eta;
      config.seed = 3;
      config.classifier_scale = 1.0;
      const Sampler sampler(schedule, config);
      const auto labels = torch::full({200}, cls, torch::kLong);
      const DenoiseFn uncond = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
        EXPECT_FALSE(y.defined()) << "an unconditional model gets no labels";
        return data.eps_unconditional(x, t);
      };
      const DenoiseFn cond = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor&) {
        return data.eps_conditional(x, t, cls);
      };
      const ClassifierGradFn grad = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
        return data.grad(x, t, y);
      };
      const auto guided = sampler.sample(uncond, range(200), {2}, labels, {}, grad);
      const auto reference = sampler.sample(cond, range(200), {2}, {});
      SCOPED_TRACE(::testing::Message() << "eta " << eta << ", class " << cls);
      EXPECT_TRUE(tensor_near(guided, reference, 1e-4, 1e-4));
      // And it is class cls's distribution: mean near μ_cls.
      EXPECT_NEAR(guided.select(1, 0).mean().item<double>(), kMeans[cls][0], 0.1);
      EXPECT_NEAR(guided.select(1, 1).mean().item<double>(), kMeans[cls][1], 0.1);
    }
  }
}

TEST_F(ClassifierGuidanceTest, DdpmStepShiftsTheMeanBySigmaTimesTheGradient) {
  // By hand, eps prediction, fixed-small variance at index 10 of the full chain:
  // μ = (x - β/σ ε̂)/√α, Σ = β̃ = β (1 - ᾱ_{t-1})/(1 - ᾱ_t), x' = μ + s Σ g + √Σ z.
  torch::manual_seed(1);
  const auto x = torch::randn({8, 2}), eps = torch::randn({8, 2}), g = torch::randn({8, 2}),
             z = torch::randn({8, 2});
  const int64_t t = 10;
  const double beta = schedule.betas_vector()[t], ab = schedule.alpha_bar(t), ab_prev = schedule.alpha_bar(t - 1);
  const double var = beta * (1 - ab_prev) / (1 - ab);
  const double scale = 2.5;
  const auto expected = (x - beta / std::sqrt(1 - ab) * eps) / std::sqrt(1 - beta) + scale * var * g + std::sqrt(var) * z;
  const auto got = ddpm_step(schedule, t, x, eps, Prediction::kEps, VarianceKind::kFixedSmall, false, z, g, scale);
  EXPECT_TRUE(tensor_near(got, expected, 1e-5, 1e-6));
  // Scale 0 and no gradient are the plain step.
  const auto plain = ddpm_step(schedule, t, x, eps, Prediction::kEps, VarianceKind::kFixedSmall, false, z);
  EXPECT_TRUE(tensor_near(ddpm_step(schedule, t, x, eps, Prediction::kEps, VarianceKind::kFixedSmall, false, z, g, 0.0),
                          plain, 0, 0));
  EXPECT_TRUE(tensor_near(plain, expected - scale * var * g, 1e-5, 1e-6));
}

TEST_F(ClassifierGuidanceTest, ClassifierFreeGuidanceFirstThenTheClassifierTerm) {
  // One DDIM step from τ straight to clean data (ᾱ = 1): x_0 = (x - σ ε')/a with
  // ε' = ε(∅) + w (ε(y) - ε(∅)) - s σ g, here with stand-in outputs ε(∅) = 0.1 x, ε(y) = 0.3 x + y.
  SamplerConfig config;
  config.kind = SamplerKind::kDdim;
  config.steps = 1;
  config.spacing = TimestepSpacing::kTrailing;  // τ = T-1, where σ ≈ 1 and every term counts
  config.num_classes = 2;
  config.guidance_scale = 3.0;
  config.classifier_scale = 0.7;
  const Sampler sampler(schedule, config);
  const DenoiseFn model = [&](const at::Tensor& x, const at::Tensor&, const at::Tensor& y) {
    const auto null = y == 2;
    return torch::where(null.unsqueeze(1), 0.1 * x, 0.3 * x + y.unsqueeze(1).to(torch::kFloat32));
  };
  const ClassifierGradFn grad = [&](const at::Tensor& x, const at::Tensor&, const at::Tensor&) { return -0.5 * x; };
  const auto labels = torch::tensor({0, 1, 1}, torch::kLong);
  // x_T is keyed noise; the same sampler with ε' ≡ 0 (a zero model, no guidance) returns x_T / a.
  SamplerConfig plain = config;
  plain.guidance_scale = 1.0;
  const DenoiseFn zero = [](const at::Tensor& x, const at::Tensor&, const at::Tensor&) { return torch::zeros_like(x); };
  const double ab = schedule.alpha_bar(sampler.timesteps().at(0)), a = std::sqrt(ab), sigma = std::sqrt(1 - ab);
  const auto x_T = Sampler(schedule, plain).sample(zero, {0, 1, 2}, {2}, labels) * a;  // x_0 = x_T / a
  const auto y = labels.unsqueeze(1).to(torch::kFloat32);
  const auto eps_cfg = 0.1 * x_T + 3.0 * ((0.3 * x_T + y) - 0.1 * x_T);
  const auto eps = eps_cfg - 0.7 * sigma * (-0.5 * x_T);
  const auto expected = (x_T - sigma * eps) / a;
  EXPECT_TRUE(tensor_near(sampler.sample(model, {0, 1, 2}, {2}, labels, {}, grad), expected, 1e-4, 1e-5));
}

TEST_F(ClassifierGuidanceTest, GuidedDdpmSamplesTheGuidedClassAndMoreSoWithScale) {
  SamplerConfig config;
  config.kind = SamplerKind::kDdpm;
  config.steps = 100;
  config.seed = 5;
  const DenoiseFn uncond = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor&) {
    return data.eps_unconditional(x, t);
  };
  const ClassifierGradFn grad = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    return data.grad(x, t, y);
  };
  const auto labels = torch::ones({400}, torch::kLong);
  const auto share_of_class_1 = [&](double scale) {
    config.classifier_scale = scale;
    const auto x = Sampler(schedule, config).sample(uncond, range(400), {2}, labels, {}, scale > 0 ? grad : ClassifierGradFn());
    return (x.select(1, 0) > 0).to(torch::kFloat64).mean().item<double>();
  };
  const double none = share_of_class_1(0.0), one = share_of_class_1(1.0), more = share_of_class_1(4.0);
  EXPECT_NEAR(none, 0.5, 0.1);  // the mixture: half of each class
  EXPECT_GT(one, 0.95);         // ≈ the class-conditional chain
  EXPECT_GE(more, one);
}

TEST_F(ClassifierGuidanceTest, FastSamplersAndMissingLabelsAreRefused) {
  SamplerConfig config;
  config.kind = SamplerKind::kEuler;
  config.steps = 5;
  const DenoiseFn model = [](const at::Tensor& x, const at::Tensor&, const at::Tensor&) { return torch::zeros_like(x); };
  const ClassifierGradFn grad = [](const at::Tensor& x, const at::Tensor&, const at::Tensor&) { return torch::zeros_like(x); };
  expect_error([&] { Sampler(schedule, config).sample(model, {0}, {2}, torch::zeros({1}, torch::kLong), {}, grad); },
               {"classifier guidance", "euler"});
  config.kind = SamplerKind::kDdim;
  expect_error([&] { Sampler(schedule, config).sample(model, {0}, {2}, {}, {}, grad); }, {"target labels"});
}

// --- networks and objective -------------------------------------------------------------------

UNetConfig small_unet() {
  UNetConfig c;
  c.in_channels = 1;
  c.base_channels = 16;
  c.channel_mult = {1, 2};
  c.num_res_blocks = 1;
  c.attention_resolutions = {4};
  c.image_size = 8;
  c.num_groups = 4;
  c.dropout = 0.0;
  return c;
}

TEST(Classifier, UNetClassifierIsTheUNetsEncoderWithAPooledHead) {
  ModelConfig m;
  m.kind = "unet";
  m.unet = small_unet();
  m.classifier_classes = 5;
  const auto net = make_denoiser(m);
  const UNetImpl unet(m.unet);
  // Every parameter but the head's and norm_out's is a UNet parameter of the same name and
  // shape: the encoder half is the UNet's own code, not a copy.
  const auto unet_params = unet.named_parameters();
  int64_t shared = 0;
  for (const auto& p : net->named_parameters()) {
    if (p.key().rfind("head.", 0) == 0 || p.key().rfind("norm_out.", 0) == 0) continue;
    const auto* u = unet_params.find(p.key());
    ASSERT_NE(u, nullptr) << p.key();
    EXPECT_EQ(u->sizes(), p.value().sizes()) << p.key();
    ++shared;
  }
  EXPECT_GT(shared, 20);
  EXPECT_EQ(unet_params.find("up0_res.conv1.weight") != nullptr, true);
  EXPECT_EQ(net->named_parameters().find("up0_res.conv1.weight"), nullptr);
  // Logits [B, K]; the zero-initialised head says 1/K for every class.
  torch::NoGradGuard no_grad;
  const auto logits = net->forward(torch::randn({3, 1, 8, 8}), torch::tensor({0, 5, 999}), {});
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_TRUE(tensor_near(logits, torch::zeros({3, 5}), 0, 0));
  EXPECT_EQ(net->num_classes(), 0);  // not conditioned on a label
}

TEST(Classifier, UNetKeepsItsParameterNamesAndOrder) {
  // Checkpoints and the Python package find the UNet's tensors by these names; the order is
  // the one the UNet registered before its encoder was shared.
  auto c = small_unet();
  c.num_classes = 3;
  const UNetImpl unet(c);
  std::vector<std::string> modules;
  for (const auto& p : unet.named_parameters()) {
    const auto name = p.key().substr(0, p.key().find('.'));
    if (modules.empty() || modules.back() != name) modules.push_back(name);
  }
  const std::vector<std::string> expected = {
      "time_mlp", "class_embedding", "conv_in", "down0_res", "down1_downsample", "down2_res", "down2_attn",
      "mid_res1", "mid_attn", "mid_res2", "up0_res", "up0_attn", "up1_res", "up1_attn", "up2_upsample", "up3_res",
      "up4_res", "norm_out", "conv_out"};
  EXPECT_EQ(modules, expected);
}

TEST(Classifier, MlpClassifierGivesLogitsAndRefusesOneClass) {
  ModelConfig m;
  m.kind = "mlp";
  m.mlp.data_dim = 2;
  m.mlp.hidden = 32;
  m.mlp.num_blocks = 2;
  m.mlp.time_embed_dim = 16;
  m.classifier_classes = 8;
  const auto net = make_denoiser(m);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(net->forward(torch::randn({4, 2}), torch::tensor({0, 1, 2, 3}), {}).sizes(),
            (std::vector<int64_t>{4, 8}));
  m.classifier_classes = 1;
  expect_error([&] { make_denoiser(m); }, {"classifier", "1 classes"});
}

TEST(Classifier, ObjectiveIsTheCrossEntropyOnNoisyInputs) {
  const auto schedule = NoiseSchedule::from_config({ScheduleKind::kLinear, 100});
  ModelConfig m;
  m.kind = "mlp";
  m.mlp.data_dim = 2;
  m.mlp.hidden = 16;
  m.mlp.num_blocks = 1;
  m.mlp.time_embed_dim = 8;
  m.classifier_classes = 4;
  auto net = make_denoiser(m);
  ClassifierObjective objective(schedule);
  EXPECT_EQ(objective.timestep_draws(), 100);
  torch::manual_seed(2);
  const auto x0 = torch::randn({6, 2}), eps = torch::randn({6, 2});
  const auto t = torch::tensor({0, 10, 20, 50, 90, 99}, torch::kLong);
  const auto y = torch::tensor({0, 1, 2, 3, 1, 0}, torch::kLong);
  // A fresh classifier (zero head) says 1/K: the loss is log K for every sample.
  EXPECT_TRUE(tensor_near(objective.losses(*net, x0, y, t, eps).loss, torch::full({6}, std::log(4.0)), 1e-6, 1e-6));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.normal_(0.0, 0.3);
  }
  // By hand: x_t = √ᾱ x0 + √(1-ᾱ) ε, then logsumexp(logits) - logits_y.
  std::vector<at::Tensor> xt_rows;
  for (int64_t i = 0; i < 6; ++i) {
    const double ab = schedule.alpha_bar(t[i].item<int64_t>());
    xt_rows.push_back(std::sqrt(ab) * x0[i] + std::sqrt(1 - ab) * eps[i]);
  }
  torch::NoGradGuard no_grad;
  const auto logits = net->forward(torch::stack(xt_rows), t, {});
  const auto expected = logits.logsumexp(1) - logits.gather(1, y.unsqueeze(1)).squeeze(1);
  const auto got = objective.losses(*net, x0, y, t, eps).loss;
  EXPECT_TRUE(tensor_near(got, expected, 1e-5, 1e-6));
  expect_error([&] { objective.losses(*net, x0, {}, t, eps); }, {"no labels"});
}

}  // namespace
}  // namespace diffusion
