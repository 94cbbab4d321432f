// Exponential moving averages of the parameters, updated after every optimiser step:
//  - a constant decay (e.g. 0.9999): ema ← rate·ema + (1 − rate)·θ;
//  - EDM2's power-function EMA (Karras et al. 2024, "Analyzing and improving the training
//    dynamics of diffusion models", section 3): ema ← β_t·ema + (1 − β_t)·θ with
//    β_t = (1 − 1/t)^(γ+1) at optimiser step t ≥ 1. Its average over the steps 1..t weighs step i
//    by (i^(γ+1) − (i−1)^(γ+1)) / t^(γ+1), i.e. the density (γ+1)·τ^γ / t^(γ+1) on [0, t]: its
//    width is a fixed fraction σ_rel of the run, and it holds no trace of the random start.
// Snapshots of two power EMAs taken during training let any other σ_rel be rebuilt afterwards
// as a least-squares combination of them (post-hoc EMA): posthoc_ema_fit below.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace diffusion {

class Ema {
 public:
  // A constant decay `rate` in (0, 1).
  Ema(const std::vector<at::Tensor>& params, double rate);
  // A power-function EMA of relative standard deviation `sigma_rel` (power_ema_gamma).
  static Ema power(const std::vector<at::Tensor>& params, double sigma_rel);

  // `step`: the optimiser steps taken, this one included (>= 1); only the power EMA reads it.
  void update(const std::vector<at::Tensor>& params, int64_t step);

  bool is_power() const { return sigma_rel_ > 0; }
  double rate() const { return rate_; }            // constant decay; 0 for a power EMA
  double sigma_rel() const { return sigma_rel_; }  // power EMA; 0 for a constant decay
  // The tag of its tensors in checkpoints ("ema_<tag>/..."): the rate ("0.9999") or
  // power_ema_tag(sigma_rel) ("sigma-rel-0.05").
  std::string tag() const;
  std::vector<at::Tensor>& shadow() { return shadow_; }
  const std::vector<at::Tensor>& shadow() const { return shadow_; }

 private:
  Ema(const std::vector<at::Tensor>& params, double rate, double sigma_rel);
  double rate_ = 0;
  double sigma_rel_ = 0;
  double gamma_ = 0;
  std::vector<at::Tensor> shadow_;
};

// --- power-function EMA math (plain doubles; EDM2's ema_std/solve_posthoc_coefficients) ---------

// The relative standard deviation of the density (γ+1)·τ^γ on [0, 1]:
// √(γ+1) / ((γ+2)·√(γ+3)). Decreasing in γ; 0.2887 at γ = 0.
double power_ema_sigma_rel(double gamma);
// Its inverse for σ_rel in (0, kMaxPowerEmaSigmaRel), where γ > 0.
double power_ema_gamma(double sigma_rel);
constexpr double kMaxPowerEmaSigmaRel = 0.28;

// "sigma-rel-<value>" (the checkpoint tag and the --ema spelling) and its inverse; the parse
// returns 0 for anything else.
std::string power_ema_tag(double sigma_rel);
double parse_power_ema_tag(const std::string& tag);

// The L2 inner product of two power profiles p(τ) = (γ+1)·τ^γ / t^(γ+1) on [0, t].
double power_profile_dot(double t_a, double gamma_a, double t_b, double gamma_b);

struct PowerProfile {
  double t = 0;      // the optimiser step the average ends at
  double gamma = 0;  // its exponent
};
struct PosthocEmaFit {
  std::vector<double> coefficients;  // one per input; the rebuilt weights are Σ c_i·snapshot_i
  double relative_error = 0;         // ‖Σ c_i·p_i − p_target‖ / ‖p_target‖
};
// The least-squares combination of the input profiles closest to the target profile.
PosthocEmaFit posthoc_ema_fit(const std::vector<PowerProfile>& inputs, const PowerProfile& target);

}  // namespace diffusion
