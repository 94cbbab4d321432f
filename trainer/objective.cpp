// The plain denoising objective (see objective.h).
#include "trainer/objective.h"

#include "core/diffusion/gaussian_diffusion.h"
#include "core/models/autocast.h"
#include "core/models/denoiser.h"

namespace diffusion {

DenoisingObjective::DenoisingObjective(NoiseSchedule schedule, LossConfig config, Precision precision)
    : schedule_(std::move(schedule)), config_(config), precision_(precision) {}

ObjectiveLosses DenoisingObjective::losses(DenoiserImpl& model, const at::Tensor& x0, const at::Tensor& y,
                                           const at::Tensor& draw, const at::Tensor& eps) {
  const auto xt = q_sample(schedule_, x0, draw, eps);
  const auto out = run_network(model, xt, draw, y, precision_);
  return {training_losses(schedule_, config_, out, x0, xt, draw, eps).loss, draw};
}

}  // namespace diffusion
