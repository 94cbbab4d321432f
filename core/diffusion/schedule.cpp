// Schedule tables in float64 (docs/math.md "Schedules"; Ho et al. 2020, Nichol & Dhariwal 2021).
#include "core/diffusion/schedule.h"

#include <fmt/core.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"

namespace diffusion {

std::vector<double> make_betas(const ScheduleConfig& config) {
  const int64_t T = config.timesteps;
  if (T < 2) throw Error(fmt::format("diffusion timesteps T = {}: expected T >= 2", T));
  std::vector<double> betas(static_cast<size_t>(T));
  if (config.kind == ScheduleKind::kLinear) {
    const double scale = 1000.0 / static_cast<double>(T);
    const double start = config.beta_start.value_or(scale * 1e-4);
    const double end = config.beta_end.value_or(scale * 0.02);
    for (int64_t t = 0; t < T; ++t)  // linspace(start, end, T)
      betas[t] = start + (end - start) * static_cast<double>(t) / static_cast<double>(T - 1);
  } else {
    const double s = config.cosine_offset;
    auto f = [&](double u) {
      const double c = std::cos((u / static_cast<double>(T) + s) / (1.0 + s) * M_PI / 2.0);
      return c * c;
    };
    for (int64_t t = 0; t < T; ++t)
      betas[t] = std::min(1.0 - f(static_cast<double>(t + 1)) / f(static_cast<double>(t)), 0.999);
  }
  for (int64_t t = 0; t < T; ++t)
    if (!(betas[t] > 0.0 && betas[t] < 1.0))
      throw Error(fmt::format(
          "{} schedule with T = {}: beta[{}] = {} is outside (0, 1){}", to_string(config.kind), T, t,
          betas[t],
          config.kind == ScheduleKind::kLinear && !config.beta_end
              ? " (the default endpoints scale with 1000/T: use T >= 21, explicit beta endpoints, "
                "or the cosine schedule)"
              : ""));
  return betas;
}

NoiseSchedule NoiseSchedule::from_config(const ScheduleConfig& config) {
  return NoiseSchedule(make_betas(config));
}

NoiseSchedule::NoiseSchedule(std::vector<double> betas, std::vector<int64_t> timestep_map)
    : betas_(std::move(betas)), timestep_map_(std::move(timestep_map)) {
  const auto T = static_cast<int64_t>(betas_.size());
  if (T < 1) throw Error("noise schedule: no timesteps");
  if (timestep_map_.empty()) {
    timestep_map_.resize(betas_.size());
    for (int64_t i = 0; i < T; ++i) timestep_map_[i] = i;
  } else if (static_cast<int64_t>(timestep_map_.size()) != T) {
    throw Error(fmt::format("noise schedule: {} betas but {} timestep map entries", T,
                            timestep_map_.size()));
  }
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  betas_t_ = torch::tensor(betas_, f64);                                     // [T]
  const auto alphas = 1.0 - betas_t_;
  alphas_cumprod_ = torch::cumprod(alphas, /*dim=*/0);
  alphas_cumprod_prev_ = torch::cat({torch::ones({1}, f64), alphas_cumprod_.slice(0, 0, T - 1)});
  sqrt_alphas_cumprod_ = alphas_cumprod_.sqrt();
  sqrt_one_minus_ac_ = (1.0 - alphas_cumprod_).sqrt();
  posterior_variance_ = betas_t_ * (1.0 - alphas_cumprod_prev_) / (1.0 - alphas_cumprod_);
  // β̃_0 = 0: its log is clipped to log β̃_1 (with one step there is nothing to clip to).
  const auto clip_from = T > 1 ? posterior_variance_[1] : betas_t_[0];
  posterior_log_var_ = torch::cat({clip_from.reshape({1}), posterior_variance_.slice(0, 1, T)}).log();
  posterior_mean_coef1_ = betas_t_ * alphas_cumprod_prev_.sqrt() / (1.0 - alphas_cumprod_);
  posterior_mean_coef2_ = (1.0 - alphas_cumprod_prev_) * alphas.sqrt() / (1.0 - alphas_cumprod_);
  fixed_large_log_var_ = torch::cat({clip_from.reshape({1}), betas_t_.slice(0, 1, T)}).log();
}

double NoiseSchedule::alpha_bar(int64_t t) const {
  if (t == -1) return 1.0;
  if (t < -1 || t >= num_steps())
    throw Error(fmt::format("timestep {} outside -1 … {}", t, num_steps() - 1));
  return alphas_cumprod_[t].item<double>();
}

NoiseSchedule NoiseSchedule::respaced(const std::vector<int64_t>& use_timesteps) const {
  if (use_timesteps.empty()) throw Error("respacing: no timesteps given");
  std::vector<double> new_betas;
  std::vector<int64_t> new_map;
  double last_alpha_bar = 1.0;
  int64_t previous = -1;
  for (int64_t t : use_timesteps) {
    if (t <= previous || t >= num_steps())
      throw Error(fmt::format("respacing: timesteps must be ascending, distinct and in 0 … {}; "
                              "got {} after {}", num_steps() - 1, t, previous));
    const double ab = alpha_bar(t);
    new_betas.push_back(1.0 - ab / last_alpha_bar);
    new_map.push_back(timestep_map_[t]);
    last_alpha_bar = ab;
    previous = t;
  }
  return NoiseSchedule(std::move(new_betas), std::move(new_map));
}

at::Tensor NoiseSchedule::gather(const at::Tensor& table, const at::Tensor& t,
                                 const at::Tensor& like) const {
  auto values = table.to(t.device()).index_select(0, t.to(torch::kLong));  // [B]
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = t.size(0);
  return values.reshape(shape).to(like.options());  // [B, 1, …, 1]
}

}  // namespace diffusion
