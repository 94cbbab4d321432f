// Progressive distillation math (see distillation.h).
#include "core/diffusion/distillation.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"

namespace diffusion {

at::Tensor per_sample(const at::Tensor& v, const at::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = v.size(0);
  return v.to(like.scalar_type()).view(shape);
}

std::vector<int64_t> distillation_grid(int64_t T, int64_t student_steps) {
  const int64_t N = student_steps;
  if (N < 1 || 2 * N > T)
    throw Error(fmt::format("distillation: a student with {} steps needs 1 <= N and 2N <= T = {}", N, T));
  std::vector<int64_t> g;
  for (int64_t j = 0; j <= 2 * N; ++j)
    // Half to even, as numpy's and JAX's round (and our trailing spacing) do.
    g.push_back(static_cast<int64_t>(std::nearbyint(double(j) * double(T) / double(2 * N))) - 1);
  return g;
}

std::vector<int64_t> student_timesteps(int64_t T, int64_t student_steps) {
  const auto g = distillation_grid(T, student_steps);
  std::vector<int64_t> out;
  for (int64_t k = student_steps; k >= 1; --k) out.push_back(g[2 * k]);
  return out;
}

at::Tensor alpha_bar_at(const NoiseSchedule& s, const at::Tensor& t) {
  auto out = torch::empty({t.size(0)}, torch::kFloat64);
  const auto t_cpu = t.to(torch::kCPU).contiguous();
  auto acc = t_cpu.accessor<int64_t, 1>();
  auto o = out.accessor<double, 1>();
  for (int64_t i = 0; i < t.size(0); ++i) o[i] = acc[i] < 0 ? 1.0 : s.alpha_bar(acc[i]);
  return out.to(t.device());
}

at::Tensor ddim_deterministic(const at::Tensor& alpha_bar_next, const at::Tensor& x0,
                              const at::Tensor& eps) {
  return per_sample(alpha_bar_next.sqrt(), x0) * x0 + per_sample((1.0 - alpha_bar_next).sqrt(), eps) * eps;
}

at::Tensor distillation_target(const at::Tensor& z_t, const at::Tensor& z_tpp,
                               const at::Tensor& alpha_bar_t, const at::Tensor& alpha_bar_tpp) {
  // In float64 per sample, cast once: the denominator is a difference of close numbers when
  // t'' is near t.
  const auto ratio = ((1.0 - alpha_bar_tpp) / (1.0 - alpha_bar_t)).sqrt();  // σ_{t''}/σ_t
  const auto denom = alpha_bar_tpp.sqrt() - ratio * alpha_bar_t.sqrt();
  return (z_tpp - per_sample(ratio, z_t) * z_t) / per_sample(denom, z_t);
}

at::Tensor truncated_snr_weight(const at::Tensor& alpha_bar_t) {
  return (alpha_bar_t / (1.0 - alpha_bar_t)).clamp_min(1.0).to(torch::kFloat32);
}

}  // namespace diffusion
