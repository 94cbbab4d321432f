// The training diagnostics of a step (its loss, and the loss per quarter of the t range) kept
// as one small float64 tensor on the model's device, so a step makes no host reads for them;
// read and all-reduced once, as one vector, at log steps only.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

namespace diffusion {

class Communicator;

struct StepStatsSummary {
  double loss = 0;                           // mean over the global batch of the step
  std::array<double, 4> loss_per_quarter{};  // mean per quarter of the t range; 0 where none fell
};

class StepStats {
 public:
  explicit StepStats(int64_t timesteps) : timesteps_(timesteps) {}
  // Starts a step's statistics (zeroes them, on the device of `like`).
  void begin_step(const at::Tensor& like);
  // losses [m] per sample, t int64 [m] the timesteps they were taken at.
  void add(const at::Tensor& losses, const at::Tensor& t);
  // The step's statistics summed over every rank (one all-reduce of 10 values).
  StepStatsSummary reduce(Communicator& communicator);

 private:
  int64_t timesteps_;
  // [sum, count, sum per quarter ×4, count per quarter ×4]
  at::Tensor sums_;
};

}  // namespace diffusion
