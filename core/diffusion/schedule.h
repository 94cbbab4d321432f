// NoiseSchedule: the β schedule and every table derived from it (docs/math.md "Schedules",
// "Posterior"), computed in float64 once and gathered per timestep. Pure values: no network
// and no sampler state here. Respacing to a subsequence of timesteps gives a new schedule that
// remembers which original timestep each of its steps stands for.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/diffusion/diffusion_config.h"

namespace diffusion {

// β_0 … β_{T-1} in float64. Throws diffusion::Error for T < 2 or betas outside (0, 1).
std::vector<double> make_betas(const ScheduleConfig& config);

class NoiseSchedule {
 public:
  // `timestep_map[i]` is the original timestep that step i stands for (identity when empty).
  explicit NoiseSchedule(std::vector<double> betas, std::vector<int64_t> timestep_map = {});
  static NoiseSchedule from_config(const ScheduleConfig& config);

  // The schedule restricted to the ascending, distinct timesteps `use_timesteps` (docs/math.md
  // "Respacing"): β'_i = 1 - ᾱ_{τ_i}/ᾱ_{τ_{i-1}}, ᾱ_{τ_0} := 1.
  NoiseSchedule respaced(const std::vector<int64_t>& use_timesteps) const;

  int64_t num_steps() const { return static_cast<int64_t>(betas_.size()); }
  const std::vector<int64_t>& timestep_map() const { return timestep_map_; }
  const std::vector<double>& betas_vector() const { return betas_; }

  // ᾱ_t with ᾱ_{-1} = 1 ("clean data"); in float64.
  double alpha_bar(int64_t t) const;

  // float64 tables, [T] each, on CPU.
  const at::Tensor& betas() const { return betas_t_; }
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  const at::Tensor& alphas_cumprod_prev() const { return alphas_cumprod_prev_; }
  const at::Tensor& sqrt_alphas_cumprod() const { return sqrt_alphas_cumprod_; }              // a_t
  const at::Tensor& sqrt_one_minus_alphas_cumprod() const { return sqrt_one_minus_ac_; }     // σ_t
  const at::Tensor& posterior_variance() const { return posterior_variance_; }               // β̃_t
  const at::Tensor& posterior_log_variance_clipped() const { return posterior_log_var_; }
  const at::Tensor& posterior_mean_coef1() const { return posterior_mean_coef1_; }  // · x_0
  const at::Tensor& posterior_mean_coef2() const { return posterior_mean_coef2_; }  // · x_t
  // log β_t with β̃_1 in place of β_0 (fixed-large variance, as Improved DDPM does).
  const at::Tensor& fixed_large_log_variance() const { return fixed_large_log_var_; }

  // table[t] reshaped to [B, 1, …, 1] to broadcast against `like` ([B, …]), in like's dtype
  // and device. `t` is int64 [B].
  at::Tensor gather(const at::Tensor& table, const at::Tensor& t, const at::Tensor& like) const;

 private:
  std::vector<double> betas_;
  std::vector<int64_t> timestep_map_;
  at::Tensor betas_t_, alphas_cumprod_, alphas_cumprod_prev_, sqrt_alphas_cumprod_,
      sqrt_one_minus_ac_, posterior_variance_, posterior_log_var_, posterior_mean_coef1_,
      posterior_mean_coef2_, fixed_large_log_var_;
};

}  // namespace diffusion
