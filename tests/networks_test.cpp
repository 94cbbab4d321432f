// The UNet and MLP denoisers: the DDPM CIFAR-10 network's size, shapes at 28×28 and 32×32,
// conditioning, learned-variance channels, and the timestep embedding's closed form; the
// networks under bf16 autocast (float32 out, float32 weights and gradients, near fp32).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/base/error.h"
#include "core/models/autocast.h"
#include "core/models/denoiser.h"
#include "core/models/unet.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::tensor_near;

// Zero-initialised output layers make a fresh net output 0 everywhere; tests of conditioning
// need every weight to matter.
void randomize(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0.0, 0.05);
}

UNetConfig small_unet() {
  UNetConfig c;
  c.in_channels = 1;
  c.base_channels = 32;
  c.channel_mult = {1, 2, 2};
  c.num_res_blocks = 1;
  c.attention_resolutions = {14};
  c.image_size = 28;
  c.num_groups = 8;
  c.dropout = 0.0;
  return c;
}

TEST(UNet, DdpmCifar10NetworkHasAbout35_7MParameters) {
  UNetImpl net(UNetConfig{});  // defaults are the DDPM paper's CIFAR-10 settings
  const int64_t n = count_parameters(net);
  // Ho et al. 2020 report 35.7M parameters for this network.
  EXPECT_GT(n, 35'650'000);
  EXPECT_LT(n, 35'750'000);
  std::cout << "DDPM CIFAR-10 UNet parameters: " << n << "\n";
}

TEST(UNet, OutputShapeEqualsInputShapeAt28And32) {
  torch::manual_seed(0);
  auto net = std::make_shared<UNetImpl>(UNetConfig{});
  net->eval();
  torch::NoGradGuard no_grad;
  for (int64_t size : {32, 28}) {
    const auto x = torch::randn({2, 3, size, size});
    const auto out = net->forward(x, torch::tensor({0, 999}, torch::kLong), {});
    EXPECT_EQ(out.sizes(), x.sizes()) << size << "×" << size;
  }
}

TEST(UNet, OddSizesAndLearnedVarianceDoubleTheChannels) {
  auto c = small_unet();
  c.learned_variance = true;
  auto net = std::make_shared<UNetImpl>(c);
  randomize(*net);
  torch::NoGradGuard no_grad;
  for (int64_t size : {28, 27, 16}) {
    const auto out = net->forward(torch::randn({3, 1, size, size}), torch::tensor({1, 2, 3}), {});
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 2, size, size})) << size;
    EXPECT_TRUE(out.isfinite().all().item<bool>());
  }
}

TEST(UNet, ClassLabelAndTimestepChangeTheOutputAndNullLabelIsTheDefault) {
  auto c = small_unet();
  c.num_classes = 10;
  auto net = std::make_shared<UNetImpl>(c);
  randomize(*net);
  net->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 1, 28, 28});
  const auto t = torch::tensor({5, 5}, torch::kLong);
  const auto with_null = net->forward(x, t, torch::tensor({10, 10}, torch::kLong));
  EXPECT_TRUE(tensor_near(net->forward(x, t, {}), with_null, 0, 0));
  EXPECT_FALSE(tensor_near(net->forward(x, t, torch::tensor({3, 3}, torch::kLong)), with_null, 1e-4, 1e-5));
  EXPECT_FALSE(tensor_near(net->forward(x, torch::tensor({500, 500}), {}), with_null, 1e-4, 1e-5));
  // Samples in a batch are independent: sample 0 alone gives the same output.
  EXPECT_TRUE(tensor_near(net->forward(x.slice(0, 0, 1), t.slice(0, 0, 1), {}), with_null.slice(0, 0, 1),
                          1e-4, 1e-5));
}

TEST(UNet, FreshNetworkOutputsZeroAndEveryParameterGetsAGradient) {
  auto net = std::make_shared<UNetImpl>(small_unet());
  const auto x = torch::randn({2, 1, 28, 28});
  EXPECT_EQ(net->forward(x, torch::tensor({1, 2}), {}).abs().max().item<float>(), 0.0f);
  randomize(*net);
  net->forward(x, torch::tensor({1, 2}), {}).pow(2).mean().backward();
  for (const auto& p : net->named_parameters())
    EXPECT_TRUE(p.value().grad().defined() && p.value().grad().abs().sum().item<float>() > 0) << p.key();
}

TEST(UNet, RefusesBadConfigAndInput) {
  auto c = small_unet();
  c.num_groups = 7;
  EXPECT_THROW(UNetImpl{c}, Error);
  auto net = std::make_shared<UNetImpl>(small_unet());
  EXPECT_THROW(net->forward(torch::randn({1, 3, 28, 28}), torch::tensor({1}), {}), Error);
}

TEST(MlpDenoiser, ShapesConditioningAndGradients) {
  ModelConfig config;
  config.kind = "mlp";
  config.mlp.data_dim = 5;
  config.mlp.hidden = 64;
  config.mlp.num_blocks = 2;
  config.mlp.num_classes = 3;
  config.mlp.learned_variance = true;
  auto net = make_denoiser(config);
  randomize(*net);
  const auto x = torch::randn({4, 5});
  const auto t = torch::tensor({0, 10, 100, 999}, torch::kLong);
  const auto out = net->forward(x, t, torch::tensor({0, 1, 2, 3}, torch::kLong));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{4, 10}));
  EXPECT_TRUE(tensor_near(net->forward(x, t, {}), net->forward(x, t, torch::full({4}, 3, torch::kLong)), 0, 0));
  EXPECT_FALSE(tensor_near(net->forward(x, t, torch::zeros({4}, torch::kLong)), net->forward(x, t, {}), 1e-4, 1e-5));
  out.pow(2).sum().backward();
  for (const auto& p : net->named_parameters()) EXPECT_TRUE(p.value().grad().defined()) << p.key();
  EXPECT_THROW(net->forward(torch::randn({4, 3}), t, {}), Error);
  config.kind = "transformer";
  EXPECT_THROW(make_denoiser(config), Error);
}

TEST(TimestepEmbedding, ClosedForm) {
  const auto e = timestep_embedding(torch::tensor({0, 3, 999}, torch::kLong), 8);  // [3, 8]
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{3, 8}));
  for (int64_t row = 0; row < 3; ++row) {
    const double t = std::vector<double>{0, 3, 999}[row];
    for (int64_t i = 0; i < 4; ++i) {
      const double freq = std::exp(-std::log(10000.0) * i / 4.0);
      EXPECT_NEAR(e[row][i].item<float>(), std::cos(t * freq), 2e-4) << row << "," << i;
      EXPECT_NEAR(e[row][4 + i].item<float>(), std::sin(t * freq), 2e-4) << row << "," << i;
    }
  }
}

double relative_difference(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

TEST(Autocast, Bf16ForwardReturnsFloat32NearTheFp32Output) {
  torch::manual_seed(0);
  UNetImpl net(small_unet());
  randomize(net);
  const auto x = torch::randn({2, 1, 28, 28});
  const auto t = torch::tensor({10, 900}, torch::kLong);
  const auto fp32 = run_network(net, x, t, {}, Precision::kFp32);
  const auto bf16 = run_network(net, x, t, {}, Precision::kBf16);
  EXPECT_EQ(bf16.scalar_type(), torch::kFloat32);
  // bfloat16 keeps 8 significant bits: the output moves by ~1e-3 relative, not by 0 (autocast
  // really ran) and not by O(1) (nothing broke).
  const double rel = relative_difference(bf16, fp32);
  EXPECT_GT(rel, 1e-5);
  EXPECT_LT(rel, 3e-2);
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));  // the scope ended
}

TEST(Autocast, Bf16BackwardKeepsFloat32WeightsAndGradientsNearFp32) {
  torch::manual_seed(1);
  UNetImpl net(small_unet());
  randomize(net);
  const auto x = torch::randn({2, 1, 28, 28});
  const auto t = torch::tensor({5, 500}, torch::kLong);
  const auto grads = [&](Precision p) {
    net.zero_grad();
    run_network(net, x, t, {}, p).square().mean().backward();
    std::vector<at::Tensor> g;
    for (const auto& param : net.parameters()) {
      EXPECT_EQ(param.scalar_type(), torch::kFloat32);
      EXPECT_EQ(param.grad().scalar_type(), torch::kFloat32);
      g.push_back(param.grad().flatten().clone());
    }
    return torch::cat(g);
  };
  const auto fp32 = grads(Precision::kFp32), bf16 = grads(Precision::kBf16);
  const double rel = relative_difference(bf16, fp32);
  EXPECT_GT(rel, 1e-5);
  EXPECT_LT(rel, 5e-2);
}

TEST(Autocast, ScopesNestAndRestoreTheState) {
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  {
    AutocastScope outer(at::kCPU, Precision::kBf16);
    EXPECT_TRUE(at::autocast::is_autocast_enabled(at::kCPU));
    EXPECT_EQ(at::autocast::get_autocast_dtype(at::kCPU), at::kBFloat16);
    {
      AutocastScope inner(at::kCPU, Precision::kBf16);
      const auto a = torch::randn({4, 4});
      EXPECT_EQ(torch::mm(a, a).scalar_type(), at::kBFloat16);  // matmuls in bf16 under the scope
    }
    EXPECT_TRUE(at::autocast::is_autocast_enabled(at::kCPU));
    AutocastScope fp32(at::kCPU, Precision::kFp32);  // fp32 leaves autocast as it is
    EXPECT_TRUE(at::autocast::is_autocast_enabled(at::kCPU));
  }
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  const auto a = torch::randn({4, 4});
  EXPECT_EQ(torch::mm(a, a).scalar_type(), at::kFloat);
}

TEST(Autocast, NativeBf16DetectionAgreesWithProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string flags;
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) {
      flags = " " + line.substr(line.find(':') + 1) + " ";
      break;
    }
  const bool listed = flags.find(" avx512_bf16 ") != std::string::npos || flags.find(" amx_bf16 ") != std::string::npos;
  EXPECT_EQ(cpu_has_native_bf16(), listed) << flags;
  EXPECT_EQ(effective_precision(Precision::kBf16, at::kCPU), listed ? Precision::kBf16 : Precision::kFp32);
  EXPECT_EQ(precision_fallback_note(Precision::kBf16, at::kCPU).empty(), listed);
  EXPECT_EQ(effective_precision(Precision::kBf16, at::kCUDA), Precision::kBf16);
}

TEST(Autocast, PrecisionNamesRoundTripAndBadOnesNameTheOption) {
  for (Precision p : {Precision::kFp32, Precision::kBf16}) EXPECT_EQ(parse_precision(to_string(p)), p);
  testing::expect_error([] { parse_precision("fp16"); }, {"--precision", "fp16", "fp32 or bf16"});
}

}  // namespace
}  // namespace diffusion
