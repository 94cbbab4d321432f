// The σ-parameterised fast samplers (docs/math.md "Fast samplers"): Euler and Heun on the
// probability-flow ODE (Karras et al. 2022, Algorithm 1/2 with churn), DPM-Solver++(2M) and its
// SDE variant (Lu et al. 2022), as pure functions of σ values and denoised predictions x̂_0.
// σ = √((1-ᾱ)/ᾱ); Euler/Heun keep x in the "VE" scale x/√ᾱ, DPM-Solver++ in the VP scale, as
// diffusers does. The loop that calls the network is Sampler::sample (samplers.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "core/diffusion/schedule.h"

namespace diffusion {

// The grid of a fast sampler: S+1 σ values, descending, the last 0 (clean data), and the integer
// timestep the network is called at for each of the first S (our networks take int64 τ).
struct SigmaGrid {
  std::vector<double> sigmas;     // [S + 1]
  std::vector<int64_t> timesteps;  // [S]
};

// σ_t = √((1-ᾱ_t)/ᾱ_t) for the given (descending) timesteps, then 0.
SigmaGrid sigma_grid(const NoiseSchedule& training, const std::vector<int64_t>& timesteps);

// Karras et al. (2022) eq. 5 with ρ = 7 between the schedule's σ(0) and σ(T-1), S values, then 0;
// each σ is mapped to a timestep by interpolating log σ over the training table and rounding
// half-to-even (what diffusers' DPMSolverMultistepScheduler does; its Euler/Heun keep the
// fractional timestep, docs/sampling.md "Fast samplers").
SigmaGrid karras_grid(const NoiseSchedule& training, int64_t steps);

// The fractional timestep of σ: log-σ interpolation over the training table, clamped to
// [0, T-1] (diffusers' _sigma_to_t).
double sigma_to_timestep(const NoiseSchedule& training, double sigma);
// Its rounding (half-to-even) to the timestep the network is called at.
int64_t sigma_to_model_timestep(const NoiseSchedule& training, double sigma);

// x̂_0 from a network output at noise level σ, for the VP-scale input x_vp the network saw
// (ᾱ = 1/(1+σ²)): eps (x_vp - √(1-ᾱ) ε)/√ᾱ, x0 as is, v √ᾱ x_vp - √(1-ᾱ) v; clamped to
// [-1, 1] with clip_x0. Uses σ itself, not a timestep's table entry, so it holds off the grid.
at::Tensor x0_at_sigma(Prediction prediction, const at::Tensor& x_vp, double sigma, const at::Tensor& output,
                       bool clip_x0);

// One Euler step of dx/dσ = (x - x̂_0)/σ in the VE scale, from σ to σ_next.
at::Tensor euler_step(const at::Tensor& x, const at::Tensor& x0, double sigma, double sigma_next);

// Heun's correction (EDM Algorithm 1, lines 7-8): x_next = x + (σ_next - σ)(d + d')/2 with
// d = (x - x̂_0)/σ and d' = (x_euler - x̂_0')/σ_next, x_euler the Euler step and x̂_0' the
// prediction there. σ_next > 0.
at::Tensor heun_step(const at::Tensor& x, const at::Tensor& x0, double sigma, const at::Tensor& x_euler,
                     const at::Tensor& x0_next, double sigma_next);

// DPM-Solver++ (data prediction), VP scale, from σ_s to σ_t < σ_s: first order when x0_prev
// is undefined (the first step), else the 2M multistep update with the previous step's x̂_0
// at sigma_prev (midpoint form, diffusers' solver_type "midpoint"). With `noise` defined, the
// SDE variant (sde-dpmsolver++) adding σ_t √(1 - e^{-2h}) z. σ_t = 0 returns x̂_0.
at::Tensor dpmpp_2m_step(const at::Tensor& x, const at::Tensor& x0, double sigma_s, double sigma_t,
                         const at::Tensor& x0_prev, double sigma_prev, const at::Tensor& noise);

}  // namespace diffusion
