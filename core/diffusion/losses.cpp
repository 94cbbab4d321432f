// Training objectives (Ho et al. 2020 L_simple; Nichol & Dhariwal 2021 L_hybrid).
#include "core/diffusion/losses.h"

#include <torch/torch.h>

namespace diffusion {

at::Tensor prediction_target(const NoiseSchedule& s, Prediction prediction, const at::Tensor& x0,
                             const at::Tensor& t, const at::Tensor& eps) {
  switch (prediction) {
    case Prediction::kEps: return eps;
    case Prediction::kX0: return x0;
    case Prediction::kV: return v_from_x0_eps(s, x0, t, eps);
  }
  return eps;
}

at::Tensor min_snr_weight(const NoiseSchedule& s, Prediction prediction, double gamma, const at::Tensor& t) {
  const auto abar = s.gather(s.alphas_cumprod(), t, t.to(torch::kDouble));  // [B] float64: SNR near t = 0 needs it
  const auto snr = abar / (1.0 - abar);
  const auto clipped = torch::clamp_max(snr, gamma);
  switch (prediction) {
    case Prediction::kEps: return clipped / snr;
    case Prediction::kX0: return clipped;
    case Prediction::kV: return clipped / (snr + 1.0);
  }
  return clipped / snr;
}

LossTerms training_losses(const NoiseSchedule& s, const LossConfig& config,
                          const at::Tensor& output, const at::Tensor& x0, const at::Tensor& xt,
                          const at::Tensor& t, const at::Tensor& eps) {
  LossTerms terms;
  at::Tensor mean_out = output;
  if (config.learned_variance) {
    auto halves = output.chunk(2, /*dim=*/1);
    mean_out = halves[0];
    // L_vlb trains only the variance: the mean enters with its gradient stopped, so L_simple
    // alone shapes the mean (Improved DDPM, Sec. 3.1).
    const auto frozen = torch::cat({halves[0].detach(), halves[1]}, /*dim=*/1);
    const auto step = p_mean_variance(s, config.prediction, VarianceKind::kLearnedRange, frozen, xt,
                                      t, /*clip_x0=*/false);
    terms.vlb = vlb_terms(s, x0, xt, t, step.p);
  }
  const auto target = prediction_target(s, config.prediction, x0, t, eps);
  terms.mse = mean_over_nonbatch((target - mean_out).pow(2));
  terms.loss = terms.mse;
  if (config.min_snr_gamma > 0)
    terms.loss = terms.mse * min_snr_weight(s, config.prediction, config.min_snr_gamma, t).to(terms.mse.dtype());
  if (config.learned_variance)
    terms.loss = terms.mse + config.vlb_weight * static_cast<double>(s.num_steps()) * terms.vlb;
  return terms;
}

}  // namespace diffusion
