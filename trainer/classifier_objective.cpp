// The noisy-sample classifier objective (see classifier_objective.h).
#include "trainer/classifier_objective.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "core/base/error.h"
#include "core/diffusion/gaussian_diffusion.h"
#include "core/models/autocast.h"
#include "core/models/denoiser.h"

namespace diffusion {

ClassifierObjective::ClassifierObjective(NoiseSchedule schedule, Precision precision)
    : schedule_(std::move(schedule)), precision_(precision) {}

ObjectiveLosses ClassifierObjective::losses(DenoiserImpl& model, const at::Tensor& x0, const at::Tensor& y,
                                            const at::Tensor& draw, const at::Tensor& eps) {
  if (!y.defined()) throw Error("classifier objective: the batch has no labels");
  const auto xt = q_sample(schedule_, x0, draw, eps);
  const auto logits = run_network(model, xt, draw, {}, precision_);  // [m, K], float32
  if (logits.dim() != 2 || logits.size(0) != x0.size(0))
    throw Error(fmt::format("classifier objective: the network returned [{}], expected logits [{}, K]",
                            fmt::join(logits.sizes(), ", "), x0.size(0)));
  const auto loss = torch::nn::functional::cross_entropy(
      logits, y.to(torch::kLong), torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  const auto correct = (logits.argmax(/*dim=*/1) == y.to(torch::kLong)).to(torch::kFloat32);  // [m]
  return {loss, draw, correct};
}

}  // namespace diffusion
