// The random draws of one training step for a rank's samples: timestep t, noise ε and label
// dropout, each keyed by (seed, step, global sample position), so the training stream is the
// same at every rank count, batch split, micro-batch size and device.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace diffusion {

struct TrainingDraws {
  at::Tensor t;           // int64 [b], uniform in 0 … T-1
  at::Tensor eps;         // float32 [b, …sample shape]
  at::Tensor drop_label;  // bool [b]: replace the label with the null label
};

// All three on `device`. t and the label drop (one value per sample) are drawn on the host and
// copied; ε comes from keyed_normal (core/diffusion/keyed_noise.h) on the device itself, with
// the same values on CPU and GPU.
TrainingDraws draw_training_noise(uint64_t seed, int64_t step, const std::vector<int64_t>& positions,
                                  const std::vector<int64_t>& sample_shape, int64_t timesteps,
                                  double p_uncond, const at::Device& device);

}  // namespace diffusion
