// Gaussian diffusion math (Ho et al. 2020; Nichol & Dhariwal 2021; Salimans & Ho 2022 for v).
#include "core/diffusion/gaussian_diffusion.h"

#include <fmt/core.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"

namespace diffusion {

at::Tensor q_sample(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& t,
                    const at::Tensor& eps) {
  return s.gather(s.sqrt_alphas_cumprod(), t, x0) * x0 +
         s.gather(s.sqrt_one_minus_alphas_cumprod(), t, x0) * eps;
}

at::Tensor v_from_x0_eps(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& t,
                         const at::Tensor& eps) {
  return s.gather(s.sqrt_alphas_cumprod(), t, x0) * eps -
         s.gather(s.sqrt_one_minus_alphas_cumprod(), t, x0) * x0;
}

at::Tensor x0_from_eps(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                       const at::Tensor& eps) {
  return (xt - s.gather(s.sqrt_one_minus_alphas_cumprod(), t, xt) * eps) /
         s.gather(s.sqrt_alphas_cumprod(), t, xt);
}

at::Tensor eps_from_x0(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                       const at::Tensor& x0) {
  return (xt - s.gather(s.sqrt_alphas_cumprod(), t, xt) * x0) /
         s.gather(s.sqrt_one_minus_alphas_cumprod(), t, xt);
}

// With a_t² + σ_t² = 1: x̂_0 = a_t x_t - σ_t v and ε̂ = σ_t x_t + a_t v.
at::Tensor x0_from_v(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                     const at::Tensor& v) {
  return s.gather(s.sqrt_alphas_cumprod(), t, xt) * xt -
         s.gather(s.sqrt_one_minus_alphas_cumprod(), t, xt) * v;
}

at::Tensor eps_from_v(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                      const at::Tensor& v) {
  return s.gather(s.sqrt_one_minus_alphas_cumprod(), t, xt) * xt +
         s.gather(s.sqrt_alphas_cumprod(), t, xt) * v;
}

Gaussian q_posterior(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& xt,
                     const at::Tensor& t) {
  Gaussian g;
  g.mean = s.gather(s.posterior_mean_coef1(), t, xt) * x0 +
           s.gather(s.posterior_mean_coef2(), t, xt) * xt;
  g.log_variance = s.gather(s.posterior_log_variance_clipped(), t, xt);
  return g;
}

Denoised interpret_output(const NoiseSchedule& s, Prediction prediction, const at::Tensor& xt,
                          const at::Tensor& t, const at::Tensor& output, bool clip_x0) {
  Denoised d;
  switch (prediction) {
    case Prediction::kEps:
      d.eps = output;
      d.x0 = x0_from_eps(s, xt, t, output);
      break;
    case Prediction::kX0:
      d.x0 = output;
      d.eps = eps_from_x0(s, xt, t, output);
      break;
    case Prediction::kV:
      d.x0 = x0_from_v(s, xt, t, output);
      d.eps = eps_from_v(s, xt, t, output);
      break;
  }
  if (clip_x0) {
    d.x0 = d.x0.clamp(-1.0, 1.0);
    d.eps = eps_from_x0(s, xt, t, d.x0);
  }
  return d;
}

at::Tensor fixed_log_variance(const NoiseSchedule& s, VarianceKind kind, const at::Tensor& t,
                              const at::Tensor& like) {
  switch (kind) {
    case VarianceKind::kFixedLarge: return s.gather(s.fixed_large_log_variance(), t, like);
    case VarianceKind::kFixedSmall: return s.gather(s.posterior_log_variance_clipped(), t, like);
    case VarianceKind::kLearnedRange: break;
  }
  throw Error("fixed_log_variance: the learned variance comes from the network output");
}

at::Tensor learned_range_log_variance(const NoiseSchedule& s, const at::Tensor& v,
                                      const at::Tensor& t) {
  const auto min_log = s.gather(s.posterior_log_variance_clipped(), t, v);
  const auto max_log = s.gather(s.betas(), t, v).log();
  const auto frac = (v + 1.0) / 2.0;
  return frac * max_log + (1.0 - frac) * min_log;
}

ReverseStep p_mean_variance(const NoiseSchedule& s, Prediction prediction, VarianceKind variance,
                            const at::Tensor& output, const at::Tensor& xt, const at::Tensor& t,
                            bool clip_x0) {
  at::Tensor mean_out = output;
  ReverseStep step;
  if (variance == VarianceKind::kLearnedRange) {
    if (output.size(1) != 2 * xt.size(1))
      throw Error(fmt::format("learned variance needs 2·{} output channels, the model gave {}",
                              xt.size(1), output.size(1)));
    auto halves = output.chunk(2, /*dim=*/1);
    mean_out = halves[0];
    step.p.log_variance = learned_range_log_variance(s, halves[1], t);
  } else {
    step.p.log_variance = fixed_log_variance(s, variance, t, xt);
  }
  step.denoised = interpret_output(s, prediction, xt, t, mean_out, clip_x0);
  step.p.mean = q_posterior(s, step.denoised.x0, xt, t).mean;
  return step;
}

at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1, const at::Tensor& mean2,
                     const at::Tensor& logvar2) {
  return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() +
                (mean1 - mean2).pow(2) * (-logvar2).exp());
}

at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means,
                                               const at::Tensor& log_scales) {
  const double half_bin = 1.0 / 255.0;
  const double inv_sqrt2 = 1.0 / std::sqrt(2.0);
  const auto centered = x - means;
  const auto inv_std = (-log_scales).exp();
  const auto upper = inv_std * (centered + half_bin);  // standardised bin edges
  const auto lower = inv_std * (centered - half_bin);
  // Φ(z) = erfc(-z/√2)/2 and 1 - Φ(z) = erfc(z/√2)/2 keep precision in both tails.
  const auto cdf_upper = 0.5 * torch::erfc(-upper * inv_sqrt2);
  const auto one_minus_cdf_lower = 0.5 * torch::erfc(lower * inv_sqrt2);
  const auto cdf_delta = cdf_upper - 0.5 * torch::erfc(-lower * inv_sqrt2);
  const double tiny = 1e-12;
  return torch::where(x < -0.999, cdf_upper.clamp_min(tiny).log(),
                      torch::where(x > 0.999, one_minus_cdf_lower.clamp_min(tiny).log(),
                                   cdf_delta.clamp_min(tiny).log()));
}

at::Tensor mean_over_nonbatch(const at::Tensor& x) {
  return x.reshape({x.size(0), -1}).mean(/*dim=*/1);
}

at::Tensor vlb_terms(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& xt,
                     const at::Tensor& t, const Gaussian& model) {
  const auto truth = q_posterior(s, x0, xt, t);
  const auto kl = mean_over_nonbatch(
      normal_kl(truth.mean, truth.log_variance, model.mean, model.log_variance.expand_as(model.mean)));
  const auto nll = -mean_over_nonbatch(discretized_gaussian_log_likelihood(
      x0, model.mean, 0.5 * model.log_variance.expand_as(model.mean)));
  return torch::where(t.to(kl.device()) == 0, nll, kl);
}

}  // namespace diffusion
