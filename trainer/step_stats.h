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
  double accuracy = -1;                      // a classifier's top-1 accuracy on its x_t; -1 for denoisers
};

class StepStats {
 public:
  explicit StepStats(int64_t timesteps) : timesteps_(timesteps) {}
  // Starts a step's statistics (zeroes them, on the device of `like`).
  void begin_step(const at::Tensor& like);
  // losses [m] per sample, t int64 [m] the timesteps they were taken at; correct [m] (a
  // classifier's 0/1 per sample) or undefined.
  void add(const at::Tensor& losses, const at::Tensor& t, const at::Tensor& correct = {});
  // The step's statistics summed over every rank (one all-reduce of 12 values).
  StepStatsSummary reduce(Communicator& communicator);

 private:
  int64_t timesteps_;
  // [sum, count, sum per quarter ×4, count per quarter ×4, correct, judged]
  at::Tensor sums_;
};

}  // namespace diffusion
