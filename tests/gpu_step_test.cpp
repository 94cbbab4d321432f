// The GPU path against the CPU, on the same weights and the same keyed draws: one training step's
// per-sample losses and gradients (float32, TF32 off) and a DDIM run's samples agree to float32
// tolerance; bf16 on the GPU stays near fp32. Every case skips without a CUDA device (these
// machines), and runs in `ctest -L gpu` (launch/gpu-check.sh).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/diffusion/samplers.h"
#include "core/diffusion/schedule.h"
#include "core/models/autocast.h"
#include "core/models/denoiser.h"
#include "tests/test_utils.h"
#include "trainer/objective.h"
#include "trainer/training_draws.h"

namespace diffusion {
namespace {

using testing::tensor_near;

class GpuStep : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    // Plain float32 on the GPU, so that only reduction order separates it from the CPU.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
};

ModelConfig small_unet() {
  ModelConfig m;
  m.kind = "unet";
  auto& u = m.unet;
  u.in_channels = 1;
  u.base_channels = 16;
  u.channel_mult = {1, 2};
  u.num_res_blocks = 1;
  u.attention_resolutions = {8};
  u.image_size = 16;
  u.num_groups = 4;
  u.dropout = 0.0;
  u.num_classes = 3;
  return m;
}

// The same weights on both devices: built on the CPU, randomised (a fresh UNet's output layer
// is zero), then copied.
std::pair<std::shared_ptr<DenoiserImpl>, std::shared_ptr<DenoiserImpl>> twin_nets(const ModelConfig& config) {
  torch::manual_seed(3);
  auto cpu = make_denoiser(config);
  auto gpu = make_denoiser(config);
  torch::NoGradGuard no_grad;
  auto src = cpu->parameters(), dst = gpu->parameters();
  for (size_t i = 0; i < src.size(); ++i) {
    src[i].normal_(0.0, 0.05);
    dst[i].copy_(src[i]);
  }
  gpu->to(torch::kCUDA);
  return {cpu, gpu};
}

TEST_F(GpuStep, LossAndGradientsEqualTheCpuOnes) {
  const auto [cpu, gpu] = twin_nets(small_unet());
  const std::vector<int64_t> positions{0, 5, 9, 12, 40, 41};
  const std::vector<int64_t> shape{1, 16, 16};
  const auto draws_cpu = draw_training_noise(7, 3, positions, shape, 1000, 0.2, torch::kCPU);
  const auto draws_gpu = draw_training_noise(7, 3, positions, shape, 1000, 0.2, torch::kCUDA);
  // The keyed draws are the same values on both devices.
  EXPECT_TRUE(torch::equal(draws_cpu.eps, draws_gpu.eps.cpu()));
  EXPECT_TRUE(torch::equal(draws_cpu.t, draws_gpu.t.cpu()));
  torch::manual_seed(4);
  const auto x0 = torch::rand({6, 1, 16, 16}) * 2 - 1;
  const auto y = torch::tensor({0, 1, 2, 3, 1, 0}, torch::kLong);  // 3 = the null label

  DenoisingObjective objective(NoiseSchedule::from_config(ScheduleConfig{}), LossConfig{});
  const auto step = [&](DenoiserImpl& net, const TrainingDraws& d, const c10::Device& device) {
    net.zero_grad();
    const auto losses = objective.losses(net, x0.to(device), y.to(device), d.t, d.eps).loss;  // [6]
    losses.mean().backward();
    std::vector<at::Tensor> grads;
    for (const auto& p : net.parameters()) grads.push_back(p.grad().flatten().cpu());
    return std::make_pair(losses.detach().cpu(), torch::cat(grads));
  };
  const auto [loss_cpu, grad_cpu] = step(*cpu, draws_cpu, torch::kCPU);
  const auto [loss_gpu, grad_gpu] = step(*gpu, draws_gpu, torch::kCUDA);
  EXPECT_TRUE(tensor_near(loss_gpu, loss_cpu, 1e-4, 1e-6));
  EXPECT_TRUE(tensor_near(grad_gpu, grad_cpu, 1e-3, 1e-6));
}

TEST_F(GpuStep, DdimSamplesEqualTheCpuOnesAndBf16StaysNear) {
  const auto [cpu, gpu] = twin_nets(small_unet());
  SamplerConfig config;
  config.steps = 10;
  config.num_classes = 3;
  config.guidance_scale = 2.0;
  config.seed = 5;
  const auto schedule = NoiseSchedule::from_config(ScheduleConfig{});
  const auto run = [&](std::shared_ptr<DenoiserImpl> net, const c10::Device& device, Precision precision) {
    auto c = config;
    c.device = device;
    const Sampler sampler(schedule, c);
    const DenoiseFn fn = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
      return run_network(*net, x, t, y, precision);
    };
    return sampler.sample(fn, {0, 1, 2, 3}, {1, 16, 16}, torch::tensor({0, 1, 2, 0}, torch::kLong).to(device)).cpu();
  };
  const auto on_cpu = run(cpu, torch::kCPU, Precision::kFp32);
  const auto on_gpu = run(gpu, torch::kCUDA, Precision::kFp32);
  EXPECT_TRUE(tensor_near(on_gpu, on_cpu, 1e-3, 1e-4));
  const auto bf16 = run(gpu, torch::kCUDA, Precision::kBf16);
  const double rel = ((bf16 - on_cpu).norm() / on_cpu.norm()).item<double>();
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 5e-2);
}

}  // namespace
}  // namespace diffusion
