// Consistency-model math (see consistency.h).
#include "core/diffusion/consistency.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/base/error.h"
#include "core/diffusion/distillation.h"
#include "core/diffusion/ode_samplers.h"
#include "core/diffusion/spacing.h"

namespace diffusion {
std::vector<int64_t> consistency_grid(const NoiseSchedule& schedule, int64_t points) {
  if (points < 2) throw Error(fmt::format("consistency grid: {} points, need at least 2", points));
  auto t = karras_grid(schedule, points).timesteps;  // descending
  std::reverse(t.begin(), t.end());
  t.erase(std::unique(t.begin(), t.end()), t.end());
  return t;
}

std::vector<double> sigmas_of(const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps) {
  std::vector<double> out;
  out.reserve(timesteps.size());
  for (const int64_t t : timesteps) {
    const double ab = schedule.alpha_bar(t);
    out.push_back(std::sqrt((1.0 - ab) / ab));
  }
  return out;
}

int64_t ict_points(int64_t step, int64_t total_steps, int64_t initial_points, int64_t final_points) {
  const int64_t doublings = static_cast<int64_t>(std::floor(std::log2(static_cast<double>(final_points / initial_points))));
  const int64_t stage = std::max<int64_t>(1, total_steps / (doublings + 1));  // K'
  const int64_t k = std::min<int64_t>(step / stage, 62);
  const double n = std::min(static_cast<double>(initial_points) * std::ldexp(1.0, static_cast<int>(k)),
                            static_cast<double>(final_points));
  return static_cast<int64_t>(n) + 1;
}

std::vector<double> lognormal_pair_cdf(const std::vector<double>& sigmas, double p_mean, double p_std) {
  if (sigmas.size() < 2) throw Error("lognormal pair distribution: needs at least 2 grid points");
  const auto phi = [&](double s) { return std::erf((std::log(s) - p_mean) / (std::sqrt(2.0) * p_std)); };
  std::vector<double> cdf;
  double total = 0;
  for (size_t n = 0; n + 1 < sigmas.size(); ++n) {
    total += phi(sigmas[n + 1]) - phi(sigmas[n]);
    cdf.push_back(total);
  }
  for (auto& c : cdf) c /= total;
  cdf.back() = 1.0;
  return cdf;
}

int64_t pair_from_uniform(const std::vector<double>& cdf, double u) {
  const auto it = std::upper_bound(cdf.begin(), cdf.end(), u);
  return std::min<int64_t>(it - cdf.begin(), static_cast<int64_t>(cdf.size()) - 1);
}

at::Tensor pseudo_huber(const at::Tensor& a, const at::Tensor& b, double c) {
  const auto d2 = (a.to(torch::kFloat32) - b.to(torch::kFloat32)).square().reshape({a.size(0), -1}).sum(1);
  return (d2 + c * c).sqrt() - c;
}

double default_huber_c(int64_t sample_numel) { return 0.00054 * std::sqrt(static_cast<double>(sample_numel)); }

at::Tensor consistency_output(const NoiseSchedule& schedule, const at::Tensor& x_t, const at::Tensor& t,
                              const at::Tensor& x0_hat) {
  const auto boundary = per_sample(t.eq(0), x_t).to(torch::kBool);
  return torch::where(boundary, x_t / std::sqrt(schedule.alpha_bar(0)), x0_hat);
}

TeacherSolver parse_teacher_solver(const std::string& name) {
  if (name == "ddim") return TeacherSolver::kDdim;
  if (name == "heun") return TeacherSolver::kHeun;
  throw Error(fmt::format("teacher solver '{}': expected heun or ddim", name));
}

std::string to_string(TeacherSolver solver) { return solver == TeacherSolver::kDdim ? "ddim" : "heun"; }

at::Tensor teacher_ode_step(const NoiseSchedule& schedule, TeacherSolver solver,
                            const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& denoise,
                            const at::Tensor& z_hi, const at::Tensor& t_hi, const at::Tensor& t_lo) {
  // σ and √ᾱ per sample, float64 [B] → broadcast; the step runs in the VE scale x = z/√ᾱ, where
  // DDIM is exactly Euler's method (docs/math.md "Fast samplers").
  const auto ab_hi = alpha_bar_at(schedule, t_hi), ab_lo = alpha_bar_at(schedule, t_lo);
  const auto a_hi = per_sample(ab_hi.sqrt(), z_hi), a_lo = per_sample(ab_lo.sqrt(), z_hi);
  const auto s_hi = per_sample(((1.0 - ab_hi) / ab_hi).sqrt(), z_hi);
  const auto s_lo = per_sample(((1.0 - ab_lo) / ab_lo).sqrt(), z_hi);
  const auto x = z_hi / a_hi;
  const auto x0 = denoise(z_hi, t_hi);
  const auto d = (x - x0) / s_hi;  // dx/dσ
  const auto x_euler = x + (s_lo - s_hi) * d;
  if (solver == TeacherSolver::kDdim) return x_euler * a_lo;
  const auto x0_next = denoise(x_euler * a_lo, t_lo);
  const auto d_next = (x_euler - x0_next) / s_lo;
  return (x + (s_lo - s_hi) * (0.5 * (d + d_next))) * a_lo;
}

std::vector<int64_t> consistency_sampling_timesteps(int64_t T, int64_t steps, const std::vector<int64_t>& grid) {
  auto t = timestep_spacing(TimestepSpacing::kTrailing, T, steps);
  if (grid.empty()) return t;
  for (auto& tau : t) {
    const auto hi = std::lower_bound(grid.begin(), grid.end(), tau);
    if (hi == grid.end()) tau = grid.back();
    else if (hi == grid.begin() || *hi - tau <= tau - *(hi - 1)) tau = *hi;
    else tau = *(hi - 1);
  }
  t.erase(std::unique(t.begin(), t.end()), t.end());
  if (static_cast<int64_t>(t.size()) != steps)
    throw Error(fmt::format("--steps {}: the consistency student's training grid ({} points) has only {} distinct "
                            "points near trailing spacing; use fewer steps",
                            steps, grid.size(), t.size()));
  return t;
}

std::vector<int64_t> consistency_time_points(int64_t T, const std::vector<int64_t>& points,
                                             const std::vector<int64_t>& grid) {
  if (points.empty()) throw Error("--time-points: empty; give K descending timesteps starting at T-1");
  if (points.front() != T - 1)
    throw Error(fmt::format("--time-points {}: the first point must be t = {} (sigma_max, where x_T is drawn)",
                            fmt::join(points, ","), T - 1));
  for (size_t k = 1; k < points.size(); ++k)
    if (!(points[k] >= 0 && points[k] < points[k - 1]))
      throw Error(fmt::format("--time-points {}: point {} (t = {}) must be in [0, {}) and below the one before it",
                              fmt::join(points, ","), k + 1, points[k], points[k - 1]));
  if (!grid.empty())
    for (const auto tau : points)
      if (!std::binary_search(grid.begin(), grid.end(), tau)) {
        const auto hi = std::lower_bound(grid.begin(), grid.end(), tau);  // not end: grid.back() = T-1 > tau
        const std::string nearest =
            hi == grid.begin() ? fmt::format("t = {}", *hi) : fmt::format("t = {} and {}", *(hi - 1), *hi);
        throw Error(fmt::format("--time-points: t = {} is not on the consistency student's training grid ({} points; "
                                "the nearest are {}); it was trained on that grid only",
                                tau, grid.size(), nearest));
      }
  return points;
}

}  // namespace diffusion
