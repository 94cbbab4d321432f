// Exponential moving averages of the parameters, one per rate (e.g. 0.9999 and 0.999):
// ema ← rate·ema + (1 - rate)·θ after every optimiser step.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace diffusion {

class Ema {
 public:
  Ema(const std::vector<at::Tensor>& params, double rate);
  void update(const std::vector<at::Tensor>& params);
  double rate() const { return rate_; }
  std::vector<at::Tensor>& shadow() { return shadow_; }
  const std::vector<at::Tensor>& shadow() const { return shadow_; }

 private:
  double rate_;
  std::vector<at::Tensor> shadow_;
};

}  // namespace diffusion
