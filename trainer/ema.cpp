// Parameter EMA.
#include "trainer/ema.h"

#include <torch/torch.h>

namespace diffusion {

Ema::Ema(const std::vector<at::Tensor>& params, double rate) : rate_(rate) {
  torch::NoGradGuard no_grad;
  for (const auto& p : params) shadow_.push_back(p.detach().clone());
}

void Ema::update(const std::vector<at::Tensor>& params) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) shadow_[i].mul_(rate_).add_(params[i].detach(), 1.0 - rate_);
}

}  // namespace diffusion
