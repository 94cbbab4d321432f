// Training objectives over a network output (docs/math.md "Forward process and training"):
// MSE on the prediction's own target (ε, x_0 or v; for ε this is L_simple) and, for a
// learned-range variance, L_hybrid = L_simple + λ·L_vlb with the mean's gradient stopped
// inside L_vlb. Pure tensor code; the trainer draws t and ε and runs the network.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/diffusion/gaussian_diffusion.h"

namespace diffusion {

struct LossConfig {
  Prediction prediction = Prediction::kEps;
  bool learned_variance = false;
  // λ of L_hybrid. L_vlb sums T terms, so with uniform t the per-sample estimate is
  // λ·T·L_t (Improved DDPM: λ = 0.001 at T = 1000 weighs one term by 1).
  double vlb_weight = 0.001;
  // Min-SNR-γ weighting (Hang et al. 2023); 0 = off. Each sample's MSE is weighted so that the
  // loss equals min(SNR_t, γ)·‖x̂_0 − x_0‖² whatever the prediction target (docs/math.md
  // "Loss weighting"): ε: min(SNR, γ)/SNR, x_0: min(SNR, γ), v: min(SNR, γ)/(SNR + 1).
  double min_snr_gamma = 0.0;
};

struct LossTerms {
  at::Tensor loss;  // [B], what is minimised
  at::Tensor mse;   // [B], mean over elements, unweighted
  at::Tensor vlb;   // [B] nats/dim, only with a learned variance
};

// `output` is the network output at (x_t, t); with a learned variance it has 2C channels.
LossTerms training_losses(const NoiseSchedule& s, const LossConfig& config,
                          const at::Tensor& output, const at::Tensor& x0, const at::Tensor& xt,
                          const at::Tensor& t, const at::Tensor& eps);

// The min-SNR-γ weight of each sample's MSE for a prediction kind.
at::Tensor min_snr_weight(const NoiseSchedule& s, Prediction prediction, double gamma, const at::Tensor& t);  // [B]

// The regression target of a prediction kind: ε, x_0 or v.
at::Tensor prediction_target(const NoiseSchedule& s, Prediction prediction, const at::Tensor& x0,
                             const at::Tensor& t, const at::Tensor& eps);

}  // namespace diffusion
