// Consistency models as a trainer objective (docs/math.md "Consistency models"): the student
// f_θ(x, t) = x̂_0 of its network (the boundary f(x, σ_min) = x held exactly,
// core/diffusion/consistency.h) learns to map two adjacent points (t_n, t_{n+1}) of one ODE
// trajectory to the same output. The trainer supplies data, the keyed draws (a draw picks the
// pair), the bucketed reduction, EMAs and checkpoints, so both methods inherit the global batch,
// resume and W-invariance.
//   - Consistency training (improved CT, Song & Dhariwal 2023; diffusion-train --objective
//     consistency): no teacher; x_{t_n} = q_sample(x0, t_n, ε) with the same ε, the target is
//     the student itself without gradient, pairs drawn lognormally on a grid that doubles along
//     the run, weight 1/(σ_{n+1} - σ_n).
//   - Consistency distillation (Song et al. 2023; diffusion-distill --method consistency): x_{t_n}
//     is one teacher ODE step from x_{t_{n+1}}, the target network is the trainer's EMA at the
//     target rate, pairs uniform on a fixed grid, weight 1.
// Both minimise the pseudo-Huber distance between f_θ(x_{t_{n+1}}, t_{n+1}) and the target's
// f(x_{t_n}, t_n).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "core/diffusion/schedule.h"
#include "core/models/precision.h"
#include "trainer/objective.h"

namespace diffusion {

struct ConsistencySettings {
  Prediction prediction = Prediction::kV;  // how the student's output is read as x̂_0
  int64_t channels = 0;                    // output channels of the mean (a learned variance adds as many)
  Precision precision = Precision::kFp32;
  double huber_c = 0;                      // pseudo-Huber c; <= 0: 0.00054·√d (iCT)
  // Training: the curriculum N(k) from initial_points to final_points over total_steps, and the
  // lognormal pair proposal.
  int64_t initial_points = 10, final_points = 1280, total_steps = 1;
  double p_mean = -1.1, p_std = 2.0;
  // Distillation: the fixed grid's N and the EMA rate of the target network.
  int64_t points = 18;
  double target_ema = 0.95;
};

// The teacher's ODE step for distillation: (z at t_hi, t_hi, t_lo, y) → z at t_lo (VP scale).
using TeacherStepFn =
    std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>;

class ConsistencyObjective : public TrainingObjective {
 public:
  // Consistency training.
  ConsistencyObjective(NoiseSchedule schedule, ConsistencySettings settings);
  // Consistency distillation: `target` is a network of the student's architecture holding the
  // student's initial weights (the teacher's), on the training device; the student starts from
  // them too, and the target follows the EMA at settings.target_ema (which the run must keep).
  ConsistencyObjective(NoiseSchedule schedule, ConsistencySettings settings, TeacherStepFn teacher_step,
                       std::shared_ptr<DenoiserImpl> target);

  // Distillation: one draw per pair of the fixed grid. Training: a fine uniform draw, mapped to
  // a pair through the lognormal CDF of the step's grid.
  int64_t timestep_draws() const override;
  void initialize(DenoiserImpl& student) override;
  void bind_emas(const std::vector<Ema>& emas) override;
  void begin_step(int64_t step) override;
  ObjectiveLosses losses(DenoiserImpl& student, const at::Tensor& x0, const at::Tensor& y,
                         const at::Tensor& draw, const at::Tensor& eps) override;

  // The grid of the current step (ascending timesteps), for tests and logs.
  const std::vector<int64_t>& grid() const { return grid_; }

 private:
  // f(x_t, t) of `net`: its x̂_0 under the student's prediction, with the boundary condition.
  at::Tensor consistency_fn(DenoiserImpl& net, const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& y) const;

  NoiseSchedule schedule_;
  ConsistencySettings settings_;
  TeacherStepFn teacher_step_;             // distillation only
  std::shared_ptr<DenoiserImpl> target_;   // distillation only
  const Ema* target_ema_ = nullptr;        // distillation only
  std::vector<int64_t> grid_;              // ascending timesteps t_0 = 0 … t_{N-1} = T-1
  std::vector<double> cdf_;                // training: the lognormal pair CDF of grid_
  int64_t grid_points_ = 0;                // training: the N(k) grid_ was built for
};

}  // namespace diffusion
