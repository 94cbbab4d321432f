// Consistency-model math (docs/math.md "Consistency models"; Song et al. 2023, improved
// consistency training of Song & Dhariwal 2023) as pure tensor code over a NoiseSchedule: the
// discrete σ grid the pairs are drawn from, the iCT N-doubling curriculum, the lognormal pair
// distribution, the pseudo-Huber distance, the consistency function's boundary condition, the
// teacher's ODE step between two grid points and multistep sampling's time points. The trainer
// and distiller run the networks; nothing here knows about them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "core/diffusion/schedule.h"

namespace diffusion {

// The N-point grid of the consistency objectives, as training timesteps, ascending: Karras
// et al.'s σ spacing (ρ = 7) from σ(0) = σ_min to σ(T-1) = σ_max, each σ mapped to its nearest
// timestep (log-σ interpolation, half to even), duplicates dropped. Our networks take integer
// timesteps, so the σ of grid point n is the schedule's own σ(t_n) and the teacher's ODE steps
// run exactly between table entries. Starts at 0 and ends at T-1; fewer than N entries where
// Karras points share a timestep (near σ_min on a linear schedule). N >= 2.
std::vector<int64_t> consistency_grid(const NoiseSchedule& schedule, int64_t points);

// σ_t = √((1-ᾱ_t)/ᾱ_t) of each timestep.
std::vector<double> sigmas_of(const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps);

// Improved CT's curriculum (Song & Dhariwal 2023, eq. 5): N(k) = min(s0·2^⌊k/K'⌋, s1) + 1 grid
// points at optimiser step k of K, K' = ⌊K / (log2⌊s1/s0⌋ + 1)⌋ (at least 1).
int64_t ict_points(int64_t step, int64_t total_steps, int64_t initial_points, int64_t final_points);

// The cumulative probabilities of drawing pair n = (σ_n, σ_{n+1}), n = 0 … N-2, under iCT's
// lognormal proposal: p(n) ∝ erf((ln σ_{n+1} - P_mean)/(√2 P_std)) - erf((ln σ_n - P_mean)/(√2 P_std)).
// `sigmas` ascending, at least 2. The last entry is 1.
std::vector<double> lognormal_pair_cdf(const std::vector<double>& sigmas, double p_mean, double p_std);

// The pair index n with cdf[n-1] <= u < cdf[n] for u in [0, 1): inverse-CDF sampling, so a keyed
// uniform draw becomes a keyed pair draw.
int64_t pair_from_uniform(const std::vector<double>& cdf, double u);

// Pseudo-Huber distance per sample: √(‖a - b‖² + c²) - c over the non-batch dimensions;
// [B, …] → float32 [B].
at::Tensor pseudo_huber(const at::Tensor& a, const at::Tensor& b, double c);
// iCT's c = 0.00054·√d for samples of d numbers.
double default_huber_c(int64_t sample_numel);

// The consistency function from the network's x̂_0 (read under its prediction type) at VP-scale
// input x_t and timesteps t (int64 [B]): f = x_t/√ᾱ_t where t = 0 (σ_min, the boundary condition
// f(x, σ_min) = x held exactly), x̂_0 elsewhere. The skip scaling of Song et al. is the
// continuous form of this; on an integer timestep grid it is an indicator (as in LCM).
at::Tensor consistency_output(const NoiseSchedule& schedule, const at::Tensor& x_t, const at::Tensor& t,
                              const at::Tensor& x0_hat);

// The teacher's probability-flow ODE step of consistency distillation, per sample, from z_hi at
// timesteps t_hi down to t_lo (int64 [B], t_lo < t_hi), in the VP scale: DDIM (deterministic,
// first order) from the teacher's (x̂_0, ε̂) at t_hi, or Heun (EDM Algorithm 1 in σ, second order),
// which calls `denoise` again at the Euler point. `denoise(z, t)` returns x̂_0 at VP-scale z.
enum class TeacherSolver { kDdim, kHeun };
TeacherSolver parse_teacher_solver(const std::string& name);  // ddim | heun
std::string to_string(TeacherSolver solver);
at::Tensor teacher_ode_step(const NoiseSchedule& schedule, TeacherSolver solver,
                            const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& denoise,
                            const at::Tensor& z_hi, const at::Tensor& t_hi, const at::Tensor& t_lo);

// The time points of K-step consistency sampling (Song et al. 2023, Algorithm 1), descending:
// trailing spacing, so the first is T-1 (σ_max) whatever K. With a distilled student's training
// grid (ascending, ending at T-1) each point moves to the nearest grid timestep (ties to the
// larger): the student has only been trained there. Throws diffusion::Error when fewer than K
// distinct points remain.
std::vector<int64_t> consistency_sampling_timesteps(int64_t T, int64_t steps,
                                                    const std::vector<int64_t>& grid = {});

// Chosen time points of K-step consistency sampling (--time-points; Song et al. 2023 choose
// them per data set, e.g. by a search on sample quality): checked and returned as given. They
// must descend strictly from T-1 (σ_max, where x_T is drawn) and, with a distilled student's
// grid, lie on it. Throws diffusion::Error naming --time-points and the offending point.
std::vector<int64_t> consistency_time_points(int64_t T, const std::vector<int64_t>& points,
                                             const std::vector<int64_t>& grid = {});

}  // namespace diffusion
