// Reverse-process step functions (docs/math.md "Samplers", "Conditioning and guidance") as pure
// tensor code over a NoiseSchedule, and a sampling loop over any denoiser callable. Sample i's
// starting noise and every per-step noise are keyed normal streams (core/diffusion/keyed_noise.h)
// keyed by (seed, i, draw number), so a sample is a pure function of (model, settings, seed, i)
// whatever batch, rank or device computes it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "core/diffusion/ode_samplers.h"
#include "core/diffusion/schedule.h"
#include "core/diffusion/spacing.h"

namespace diffusion {

// ddpm, ddim: the ancestral chain and DDIM on respaced timesteps; euler, heun, dpmpp-2m,
// dpmpp-2m-sde: the σ-parameterised fast samplers (core/diffusion/ode_samplers.h).
// consistency: multistep consistency sampling of a consistency model (Song et al. 2023,
// Algorithm 1; core/diffusion/consistency.h).
enum class SamplerKind { kDdpm, kDdim, kEuler, kHeun, kDpmpp2m, kDpmpp2mSde, kConsistency };
// Throws diffusion::Error naming the valid names (and, for dpmpp-Nm, the orders there are).
SamplerKind parse_sampler_kind(const std::string& name);
std::string to_string(SamplerKind kind);
bool is_fast_sampler(SamplerKind kind);  // euler | heun | dpmpp-2m | dpmpp-2m-sde (the σ-grid samplers)
// Network evaluations per sample for S steps (twice as many forward rows with guidance):
// S, except Heun's 2S - 1 (a second evaluation on every step but the last, EDM Algorithm 1).
int64_t evaluations_per_sample(SamplerKind kind, int64_t steps);

struct SamplerConfig {
  SamplerKind kind = SamplerKind::kDdim;
  int64_t steps = 50;  // S <= T; respaced from the training schedule
  TimestepSpacing spacing = TimestepSpacing::kLeading;
  double eta = 0.0;                                      // DDIM only
  // Fast samplers: Karras σ grid (ρ = 7) instead of `spacing`.
  bool karras = false;
  // Euler/Heun stochastic churn (EDM Algorithm 2): γ = min(churn/S, √2-1) where
  // s_tmin <= σ <= s_tmax, fresh noise scaled by s_noise; churn = 0 is the deterministic ODE.
  double churn = 0.0, s_tmin = 0.0, s_tmax = INFINITY, s_noise = 1.0;
  VarianceKind variance = VarianceKind::kFixedLarge;     // DDPM only
  Prediction prediction = Prediction::kEps;
  bool clip_x0 = false;                                  // image data only
  double guidance_scale = 1.0;  // classifier-free guidance s; 1 = plain conditional
  // Guidance only where guidance_sigma_lo < σ_t <= guidance_sigma_hi, σ_t = √((1-ᾱ_t)/ᾱ_t)
  // of the training schedule (Kynkäänniemi et al. 2024, "Applying guidance in a limited
  // interval"); elsewhere the plain conditional output, in one half-size batch.
  double guidance_sigma_lo = 0.0, guidance_sigma_hi = INFINITY;
  // Classifier guidance s (DDPM and DDIM only): used when sample() is given a classifier
  // gradient; applied after classifier-free guidance.
  double classifier_scale = 1.0;
  int64_t num_classes = 0;      // > 0: conditional model whose null label is num_classes
  // Consistency sampling of a distilled student: its training grid (ascending); the time points
  // snap to it (consistency_sampling_timesteps). Empty: plain trailing spacing.
  std::vector<int64_t> consistency_grid;
  // Consistency sampling at these time points (descending from T-1, `steps` of them; on the
  // student's grid when it has one) instead of the spacing; empty: the spacing's.
  std::vector<int64_t> time_points;
  uint64_t seed = 0;
  // Where x_T and the per-step noise are drawn (keyed_normal gives the same values on CPU and
  // CUDA), and where x_T given as latents is moved; the model is called on tensors there.
  at::Device device = at::kCPU;
};

// x_{t-1} = μ_θ + exp(½ log Σ) z, no noise at the last step (index 0). `index` indexes the
// (respaced) schedule; `output` is the network output at (x_t, τ_index). With a classifier
// gradient g = ∇_x log p(y | x_t) the mean is shifted first: μ + s Σ g (classifier_guided_mean).
at::Tensor ddpm_step(const NoiseSchedule& s, int64_t index, const at::Tensor& xt,
                     const at::Tensor& output, Prediction prediction, VarianceKind variance,
                     bool clip_x0, const at::Tensor& noise, const at::Tensor& classifier_grad = {},
                     double classifier_scale = 0.0);

// Classifier guidance (Dhariwal & Nichol 2021; docs/math.md "Classifier guidance"), given
// g = ∇_x log p(y | x_t):
// DDPM (their Algorithm 1): μ' = μ + s Σ g, with Σ = exp(log_variance) the step's variance.
at::Tensor classifier_guided_mean(const at::Tensor& mean, const at::Tensor& log_variance,
                                  const at::Tensor& grad, double scale);
// DDIM (their eq. 14, Algorithm 2): ε̂' = ε̂ - s √(1-ᾱ_t) g.
at::Tensor classifier_guided_eps(const at::Tensor& eps, double alpha_bar_t, const at::Tensor& grad,
                                 double scale);

// DDIM from ᾱ_t to ᾱ_{t'} (docs/math.md): x_{t'} = √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}-σ²) ε̂ + σ z with
// σ = η √((1-ᾱ_{t'})/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_{t'}). With alpha_bar_next > alpha_bar_t this is
// the inversion direction (η must be 0).
at::Tensor ddim_step(double alpha_bar_t, double alpha_bar_next, const at::Tensor& x0,
                     const at::Tensor& eps, double eta, const at::Tensor& noise);

// ε̃ = ε(∅) + s (ε(y) - ε(∅)), on any output (also v or x0 predictions, which are linear in ε).
at::Tensor guided(const at::Tensor& unconditional, const at::Tensor& conditional, double scale);

// Spherical interpolation of each row pair (docs/math.md "Latent interpolation"): a, b [B, ...],
// λ in [0, 1]; sin((1-λ)θ)/sin θ · a + sin(λθ)/sin θ · b with θ the angle between the
// flattened rows, computed in float64; linear where θ is below 1e-6.
at::Tensor slerp(const at::Tensor& a, const at::Tensor& b, double lambda);

// The network as the sampler sees it: x_t, original timesteps τ (int64 [B]), labels (int64
// [B] or undefined) → output.
using DenoiseFn = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>;

// A classifier as the sampler sees it: x_t, original timesteps τ (int64 [B]), target labels
// (int64 [B]) → g = ∇_x log p(y | x_t), x's shape, float32.
using ClassifierGradFn = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>;

// g = ∇_x log softmax(logits(x, t))_y by autograd, in float32 whatever the caller's grad mode:
// `logits` maps (x [B, …], t [B]) to [B, K]. Rows do not interact (the sum over the batch has
// row b's gradient in row b).
at::Tensor classifier_log_prob_grad(const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& logits,
                                    const at::Tensor& x, const at::Tensor& t, const at::Tensor& y);

class Sampler {
 public:
  // `training` is the schedule the model was trained with (T steps).
  Sampler(const NoiseSchedule& training, const SamplerConfig& config);

  // Generates samples `indices` (global sample numbers) from x_T (keyed noise, or `x_T` when
  // defined). Draw k of sample i (k = 0 is x_T, then one per noisy step — DDPM's, DDIM's with
  // η > 0, a churned Euler/Heun step's, each dpmpp-2m-sde step to σ > 0 — also when `x_T` is
  // given) is the keyed normal row of stream_key(seed, kSampleNoise, {i, k}), drawn on
  // config.device. `labels` int64 [B] for conditional models, undefined for unconditional.
  // With guidance (scale != 1 and labels given) both halves run in one batch of 2B.
  // `classifier` (DDPM and DDIM only): classifier guidance towards `labels` with
  // config.classifier_scale, after any classifier-free guidance; the model itself gets the
  // labels only when it is conditional (config.num_classes > 0).
  at::Tensor sample(const DenoiseFn& model, const std::vector<int64_t>& indices,
                    const std::vector<int64_t>& sample_shape, const at::Tensor& labels,
                    const at::Tensor& x_T = {}, const ClassifierGradFn& classifier = {}) const;

  // DDIM inversion (docs/math.md "Samplers": η = 0 forward in time): from data x_0 (ᾱ = 1) up
  // through the visited timesteps in ascending order, each step using ε̂ at (x_t, t); the first
  // step, from ᾱ = 1 where the network is not defined, uses ε̂ at the smallest visited
  // timestep. No clipping. Returns x_T at the largest visited timestep, which sample() decodes.
  at::Tensor invert(const DenoiseFn& model, const at::Tensor& x0, const at::Tensor& labels) const;

  // The timesteps visited, in order (descending original τ; for the fast samplers the
  // timesteps the network is called at on their σ grid).
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  // The fast samplers' σ grid (S + 1 values, the last 0); empty for DDPM and DDIM.
  const std::vector<double>& sigmas() const { return grid_.sigmas; }

 private:
  // Whether the call at τ runs classifier-free guidance: a conditional model, labels, s ≠ 1, and
  // σ_τ inside the guidance interval.
  bool guided_at(int64_t tau, const at::Tensor& labels) const;
  at::Tensor model_output(const DenoiseFn& model, const at::Tensor& x, int64_t tau,
                          const at::Tensor& labels) const;

  SamplerConfig config_;
  NoiseSchedule training_;
  NoiseSchedule respaced_;          // DDPM runs its ancestral chain on this
  // K-step consistency sampling: x̂_0 = f(x_T, T-1), then for each further time point τ_k a
  // fresh keyed draw z, x = √ᾱ x̂_0 + √(1-ᾱ) z and x̂_0 = f(x, τ_k).
  at::Tensor sample_consistency(const DenoiseFn& model, at::Tensor x, const at::Tensor& labels,
                                const std::function<at::Tensor()>& draw) const;
  // The fast samplers' loop (Euler, Heun, DPM-Solver++), x_T in the VP scale → x_0.
  at::Tensor sample_fast(const DenoiseFn& model, at::Tensor x, const at::Tensor& labels,
                         const std::function<at::Tensor()>& draw) const;

  std::vector<int64_t> timesteps_;  // descending
  SigmaGrid grid_;                  // fast samplers only
};

}  // namespace diffusion
