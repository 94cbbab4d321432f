// The consistency objectives (see consistency_objective.h).
#include "trainer/consistency_objective.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"
#include "core/diffusion/consistency.h"
#include "core/diffusion/distillation.h"
#include "core/diffusion/gaussian_diffusion.h"
#include "core/models/autocast.h"
#include "core/models/denoiser.h"
#include "trainer/ema.h"
#include "trainer/train_state.h"

namespace diffusion {
namespace {

// Training draws a uniform integer below this per sample; (draw + ½)/kUniformDraws is the u of
// inverse-CDF pair sampling.
constexpr int64_t kUniformDraws = int64_t{1} << 24;

}  // namespace

ConsistencyObjective::ConsistencyObjective(NoiseSchedule schedule, ConsistencySettings settings)
    : schedule_(std::move(schedule)), settings_(settings) {
  if (settings_.prediction == Prediction::kEps)
    throw Error("consistency models: prediction eps is unstable (x0 = (x - sigma eps)/a blows up at sigma_max, where "
                "a consistency model takes its one step); use prediction v or x0");
  if (settings_.initial_points < 2 || settings_.final_points < settings_.initial_points)
    throw Error(fmt::format("consistency training: initial-points {} must be >= 2 and <= final-points {}",
                            settings_.initial_points, settings_.final_points));
  begin_step(0);
}

ConsistencyObjective::ConsistencyObjective(NoiseSchedule schedule, ConsistencySettings settings,
                                           TeacherStepFn teacher_step, std::shared_ptr<DenoiserImpl> target)
    : schedule_(std::move(schedule)), settings_(settings), teacher_step_(std::move(teacher_step)),
      target_(std::move(target)) {
  if (settings_.prediction == Prediction::kEps)
    throw Error("consistency distillation: a student predicting eps is unstable at sigma_max; use v or x0");
  grid_ = consistency_grid(schedule_, settings_.points);
  target_->eval();
  for (auto& p : target_->parameters()) p.set_requires_grad(false);
}

int64_t ConsistencyObjective::timestep_draws() const {
  return teacher_step_ ? static_cast<int64_t>(grid_.size()) - 1 : kUniformDraws;
}

void ConsistencyObjective::initialize(DenoiserImpl& student) {
  if (target_) copy_parameters(*target_, student, "consistency distillation");  // training starts fresh
}

void ConsistencyObjective::bind_emas(const std::vector<Ema>& emas) {
  if (!target_) return;
  for (const auto& ema : emas)
    if (!ema.is_power() && std::abs(ema.rate() - settings_.target_ema) < 1e-12) target_ema_ = &ema;
  if (!target_ema_)
    throw Error(fmt::format("consistency distillation: the run keeps no EMA at the target rate {} (--target-ema); "
                            "its ema-rates must include it",
                            settings_.target_ema));
}

void ConsistencyObjective::begin_step(int64_t step) {
  if (target_) {
    // θ⁻ = the EMA after the previous step (at step 0 the initial weights), read from the
    // trainer's EMA, which checkpoints carry: a resumed run continues with the same target.
    if (!target_ema_) throw Error("consistency distillation: begin_step before bind_emas");
    torch::NoGradGuard no_grad;
    const auto params = named_parameters(*target_).tensors;
    const auto& shadow = target_ema_->shadow();
    if (params.size() != shadow.size())
      throw Error("consistency distillation: the target network and the student have different parameters");
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(shadow[i]);
    return;
  }
  const int64_t points =
      ict_points(step, settings_.total_steps, settings_.initial_points, settings_.final_points);
  if (points == grid_points_) return;
  grid_points_ = points;
  grid_ = consistency_grid(schedule_, points);
  cdf_ = lognormal_pair_cdf(sigmas_of(schedule_, grid_), settings_.p_mean, settings_.p_std);
}

at::Tensor ConsistencyObjective::consistency_fn(DenoiserImpl& net, const at::Tensor& x_t, const at::Tensor& t,
                                                const at::Tensor& y) const {
  const auto out = run_network(net, x_t, t, y, settings_.precision).narrow(1, 0, settings_.channels);
  const auto x0 = interpret_output(schedule_, settings_.prediction, x_t, t, out, false).x0;
  return consistency_output(schedule_, x_t, t, x0);
}

ObjectiveLosses ConsistencyObjective::losses(DenoiserImpl& student, const at::Tensor& x0, const at::Tensor& y,
                                             const at::Tensor& draw, const at::Tensor& eps) {
  // The pair (t_n, t_{n+1}) of each sample, from its keyed draw.
  const int64_t m = draw.size(0);
  const auto draw_cpu = draw.to(torch::kCPU).contiguous();
  auto lo = torch::empty({m}, torch::kLong), hi = torch::empty({m}, torch::kLong);
  {
    const auto d = draw_cpu.accessor<int64_t, 1>();
    auto l = lo.accessor<int64_t, 1>(), h = hi.accessor<int64_t, 1>();
    for (int64_t i = 0; i < m; ++i) {
      const int64_t n =
          teacher_step_ ? d[i]
                        : pair_from_uniform(cdf_, (static_cast<double>(d[i]) + 0.5) / static_cast<double>(kUniformDraws));
      l[i] = grid_[static_cast<size_t>(n)];
      h[i] = grid_[static_cast<size_t>(n) + 1];
    }
  }
  const auto t_lo = lo.to(draw.device()), t_hi = hi.to(draw.device());
  const auto z_hi = q_sample(schedule_, x0, t_hi, eps);  // [m, …]

  at::Tensor target;
  {
    torch::NoGradGuard no_grad;
    if (teacher_step_) {
      const auto z_lo = teacher_step_(z_hi, t_hi, t_lo, y);
      target = consistency_fn(*target_, z_lo, t_lo, y);
    } else {
      // The same ε at both levels: both points lie on one conditional ODE trajectory.
      target = consistency_fn(student, q_sample(schedule_, x0, t_lo, eps), t_lo, y);
    }
  }
  const auto f = consistency_fn(student, z_hi, t_hi, y);
  const double c = settings_.huber_c > 0 ? settings_.huber_c : default_huber_c(x0[0].numel());
  auto loss = pseudo_huber(f, target, c);  // [m]
  if (!teacher_step_) {
    // iCT's λ(σ_n) = 1/(σ_{n+1} - σ_n).
    const auto ab_lo = alpha_bar_at(schedule_, t_lo), ab_hi = alpha_bar_at(schedule_, t_hi);
    const auto gap = ((1.0 - ab_hi) / ab_hi).sqrt() - ((1.0 - ab_lo) / ab_lo).sqrt();
    loss = loss * (1.0 / gap).to(loss.scalar_type());
  }
  return {loss, t_hi, {}};
}

}  // namespace diffusion
