// The distillation objective (see distillation_objective.h).
#include "distiller/distillation_objective.h"

#include <fmt/format.h>
#include <torch/torch.h>


#include "core/diffusion/distillation.h"
#include "core/base/error.h"
#include "core/diffusion/gaussian_diffusion.h"
#include "core/diffusion/samplers.h"
#include "core/models/autocast.h"
#include "trainer/train_state.h"

namespace diffusion {

DistillationObjective::DistillationObjective(NoiseSchedule schedule, std::shared_ptr<DenoiserImpl> teacher,
                                             DistillationSettings settings)
    : schedule_(std::move(schedule)), teacher_(std::move(teacher)), settings_(settings) {
  grid_ = torch::tensor(distillation_grid(schedule_.num_steps(), settings_.student_steps), torch::kLong);
  teacher_->eval();
  for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
}

void DistillationObjective::initialize(DenoiserImpl& student) {
  copy_parameters(*teacher_, student, "distillation");
}

std::pair<at::Tensor, at::Tensor> teacher_denoise(DenoiserImpl& teacher, const NoiseSchedule& schedule,
                                                  const DistillationSettings& settings, const at::Tensor& z,
                                                  const at::Tensor& t, const at::Tensor& y) {
  torch::NoGradGuard no_grad;
  const bool guide = settings.guidance_scale != 1.0 && y.defined();
  at::Tensor out;
  if (guide) {
    // Both halves in one batch: conditional, then the null label.
    const auto out2 = run_network(teacher, torch::cat({z, z}), torch::cat({t, t}),
                                  torch::cat({y, torch::full_like(y, settings.num_classes)}), settings.precision);
    const auto halves = out2.chunk(2, 0);
    out = guided(halves[1], halves[0], settings.guidance_scale);
  } else {
    out = run_network(teacher, z, t, y, settings.precision);
  }
  out = out.narrow(1, 0, settings.channels);  // the mean channels of a learned-variance output
  const auto d = interpret_output(schedule, settings.teacher_prediction, z, t, out, settings.clip_x0);
  return {d.x0, d.eps};
}

ObjectiveLosses DistillationObjective::losses(DenoiserImpl& student, const at::Tensor& x0, const at::Tensor& y,
                                              const at::Tensor& draw, const at::Tensor& eps) {
  const auto k2 = (draw + 1) * 2;  // 2k, k = 1 … N
  if (grid_.device() != draw.device()) grid_ = grid_.to(draw.device());
  const auto t = grid_.index({k2});          // [m]
  const auto t_mid = grid_.index({k2 - 1});  // t' (>= 0: 2N <= T)
  const auto t_end = grid_.index({k2 - 2});  // t'' (-1 for k = 1: clean data)
  const auto ab_t = alpha_bar_at(schedule_, t);
  const auto ab_end = alpha_bar_at(schedule_, t_end);
  const auto z_t = q_sample(schedule_, x0, t, eps);  // [m, …]

  at::Tensor target;
  {
    torch::NoGradGuard no_grad;
    const auto [x0_a, eps_a] = teacher_denoise(*teacher_, schedule_, settings_, z_t, t, y);
    const auto z_mid = ddim_deterministic(alpha_bar_at(schedule_, t_mid), x0_a, eps_a);
    const auto [x0_b, eps_b] = teacher_denoise(*teacher_, schedule_, settings_, z_mid, t_mid, y);
    const auto z_end = ddim_deterministic(ab_end, x0_b, eps_b);
    target = distillation_target(z_t, z_end, ab_t, ab_end);
  }
  const auto out = run_network(student, z_t, t, y, settings_.precision).narrow(1, 0, settings_.channels);
  const auto x0_hat = interpret_output(schedule_, settings_.student_prediction, z_t, t, out, false).x0;
  const auto loss = truncated_snr_weight(ab_t) * mean_over_nonbatch((x0_hat - target).square());
  return {loss, t};
}

}  // namespace diffusion
