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
};

struct LossTerms {
  at::Tensor loss;  // [B], what is minimised
  at::Tensor mse;   // [B], mean over elements
  at::Tensor vlb;   // [B] nats/dim, only with a learned variance
};

// `output` is the network output at (x_t, t); with a learned variance it has 2C channels.
LossTerms training_losses(const NoiseSchedule& s, const LossConfig& config,
                          const at::Tensor& output, const at::Tensor& x0, const at::Tensor& xt,
                          const at::Tensor& t, const at::Tensor& eps);

// The regression target of a prediction kind: ε, x_0 or v.
at::Tensor prediction_target(const NoiseSchedule& s, Prediction prediction, const at::Tensor& x0,
                             const at::Tensor& t, const at::Tensor& eps);

}  // namespace diffusion
