// Progressive distillation math (docs/math.md "Progressive distillation", Salimans & Ho 2022,
// Algorithm 2 in discrete time) as pure tensor code: the 2N-step grid, the student's sampling
// timesteps, the teacher's two DDIM steps, the student's regression target x̃ and the
// truncated-SNR weight. The distiller runs the networks; nothing here knows about them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "core/diffusion/schedule.h"

namespace diffusion {

// g_j = round(j·T/(2N)) - 1 (half to even), j = 0 … 2N: g_0 = -1 (clean data), g_{2N} = T - 1. Throws
// diffusion::Error unless 1 <= N and 2N <= T.
std::vector<int64_t> distillation_grid(int64_t T, int64_t student_steps);

// The N timesteps a student with N steps visits, descending: g_{2N}, g_{2N-2}, … , g_2 (then
// ᾱ = 1). They equal trailing spacing with S = N.
std::vector<int64_t> student_timesteps(int64_t T, int64_t student_steps);

// A per-sample value v [B] reshaped to [B, 1, …, 1] against `like` ([B, …]), in like's dtype.
at::Tensor per_sample(const at::Tensor& v, const at::Tensor& like);

// ᾱ at original timesteps t (int64 [B], -1 allowed and mapping to ᾱ = 1), float64 [B].
at::Tensor alpha_bar_at(const NoiseSchedule& s, const at::Tensor& t);

// Deterministic DDIM (η = 0) per sample: √ᾱ' x̂_0 + √(1-ᾱ') ε̂, with ᾱ' float64 [B] broadcast
// over the sample dimensions.
at::Tensor ddim_deterministic(const at::Tensor& alpha_bar_next, const at::Tensor& x0,
                              const at::Tensor& eps);

// x̃ = (z_{t''} - (σ_{t''}/σ_t) z_t) / (a_{t''} - (σ_{t''}/σ_t) a_t): the x̂_0 with which one
// student DDIM step from z_t lands where the teacher's two steps landed. For t'' = -1 (ᾱ = 1)
// it is z_{t''}. Alpha bars float64 [B].
at::Tensor distillation_target(const at::Tensor& z_t, const at::Tensor& z_tpp,
                               const at::Tensor& alpha_bar_t, const at::Tensor& alpha_bar_tpp);

// w_t = max(SNR_t, 1), SNR = ᾱ/(1-ᾱ); float64 [B] → float32 [B].
at::Tensor truncated_snr_weight(const at::Tensor& alpha_bar_t);

}  // namespace diffusion
