// Euler, Heun (Karras et al. 2022) and DPM-Solver++(2M) / its SDE variant (Lu et al. 2022) step
// code. Coefficients are computed in float64 from σ, then applied to float32 tensors.
#include "core/diffusion/ode_samplers.h"

#include <fmt/core.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/base/error.h"

namespace diffusion {
namespace {

double sigma_of(double alpha_bar) { return std::sqrt((1.0 - alpha_bar) / alpha_bar); }

}  // namespace

SigmaGrid sigma_grid(const NoiseSchedule& training, const std::vector<int64_t>& timesteps) {
  SigmaGrid g;
  g.timesteps = timesteps;
  for (int64_t t : timesteps) g.sigmas.push_back(sigma_of(training.alpha_bar(t)));
  g.sigmas.push_back(0.0);
  return g;
}

double sigma_to_timestep(const NoiseSchedule& training, double sigma) {
  // log σ increases with t; find the table interval holding log σ and interpolate linearly in
  // log σ, as diffusers' _sigma_to_t does (clamped at both ends).
  const int64_t T = training.num_steps();
  const double ls = std::log(std::max(sigma, 1e-10));
  const auto log_sigma = [&](int64_t t) { return std::log(sigma_of(training.alpha_bar(t))); };
  int64_t low = 0;
  for (int64_t t = 0; t < T; ++t)
    if (ls >= log_sigma(t)) low = t;
  low = std::min(low, T - 2);
  const double lo = log_sigma(low), hi = log_sigma(low + 1);
  const double w = std::clamp((lo - ls) / (lo - hi), 0.0, 1.0);
  return (1.0 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
}

int64_t sigma_to_model_timestep(const NoiseSchedule& training, double sigma) {
  return static_cast<int64_t>(std::nearbyint(sigma_to_timestep(training, sigma)));  // half-to-even
}

SigmaGrid karras_grid(const NoiseSchedule& training, int64_t steps) {
  if (steps < 2) throw Error(fmt::format("--karras needs at least 2 steps, got {}", steps));
  constexpr double kRho = 7.0;  // Karras et al. (2022), eq. 5
  const double sigma_min = sigma_of(training.alpha_bar(0));
  const double sigma_max = sigma_of(training.alpha_bar(training.num_steps() - 1));
  const double a = std::pow(sigma_max, 1.0 / kRho), b = std::pow(sigma_min, 1.0 / kRho);
  SigmaGrid g;
  for (int64_t i = 0; i < steps; ++i) {
    const double ramp = static_cast<double>(i) / static_cast<double>(steps - 1);
    g.sigmas.push_back(std::pow(a + ramp * (b - a), kRho));
    g.timesteps.push_back(sigma_to_model_timestep(training, g.sigmas.back()));
  }
  g.sigmas.push_back(0.0);
  return g;
}

at::Tensor x0_at_sigma(Prediction prediction, const at::Tensor& x_vp, double sigma, const at::Tensor& output,
                       bool clip_x0) {
  const double alpha = 1.0 / std::sqrt(1.0 + sigma * sigma), s = sigma * alpha;  // √ᾱ, √(1-ᾱ)
  at::Tensor x0;
  switch (prediction) {
    case Prediction::kEps: x0 = (x_vp - s * output) / alpha; break;
    case Prediction::kX0: x0 = output; break;
    case Prediction::kV: x0 = alpha * x_vp - s * output; break;
  }
  return clip_x0 ? x0.clamp(-1.0, 1.0) : x0;
}

at::Tensor euler_step(const at::Tensor& x, const at::Tensor& x0, double sigma, double sigma_next) {
  const auto d = (x - x0) / sigma;  // dx/dσ
  return x + (sigma_next - sigma) * d;
}

at::Tensor heun_step(const at::Tensor& x, const at::Tensor& x0, double sigma, const at::Tensor& x_euler,
                     const at::Tensor& x0_next, double sigma_next) {
  const auto d = (x - x0) / sigma;
  const auto d_next = (x_euler - x0_next) / sigma_next;
  return x + (sigma_next - sigma) * (0.5 * (d + d_next));
}

at::Tensor dpmpp_2m_step(const at::Tensor& x, const at::Tensor& x0, double sigma_s, double sigma_t,
                         const at::Tensor& x0_prev, double sigma_prev, const at::Tensor& noise) {
  if (sigma_t == 0.0) return x0;  // h = ∞: every update lands on x̂_0 (diffusers' final "zero" σ)
  // α = 1/√(1+σ²), s = σα (the VP scale's √ᾱ and √(1-ᾱ)); λ = log(α/s) = -log σ.
  const double alpha_t = 1.0 / std::sqrt(1.0 + sigma_t * sigma_t);
  const double s_t = sigma_t * alpha_t, s_s = sigma_s / std::sqrt(1.0 + sigma_s * sigma_s);
  const double h = std::log(sigma_s / sigma_t);
  // D = D0 + ½ D1 with D1 = (x̂_0 - x̂_0,prev)/r, r = h_prev/h (midpoint 2M).
  at::Tensor d = x0;
  if (x0_prev.defined()) {
    const double r = std::log(sigma_prev / sigma_s) / h;
    d = x0 + (0.5 / r) * (x0 - x0_prev);
  }
  if (!noise.defined()) return (s_t / s_s) * x + alpha_t * (-std::expm1(-h)) * d;
  const double one_minus_e2h = -std::expm1(-2.0 * h);
  return (s_t / s_s * std::exp(-h)) * x + (alpha_t * one_minus_e2h) * d + (s_t * std::sqrt(one_minus_e2h)) * noise;
}

}  // namespace diffusion
