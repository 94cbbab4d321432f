// Keyed per-sample draws for training (core/base/rng.h): a sample's draws depend only on its key,
// never on which rank or batch slot it lands in.
#include "trainer/training_draws.h"

#include <torch/torch.h>

#include "core/base/rng.h"

namespace diffusion {

TrainingDraws draw_training_noise(uint64_t seed, int64_t step, const std::vector<int64_t>& positions,
                                  const std::vector<int64_t>& sample_shape, int64_t timesteps,
                                  double p_uncond, const c10::Device& device) {
  const auto b = static_cast<int64_t>(positions.size());
  TrainingDraws d;
  d.t = torch::empty({b}, torch::kLong);
  d.drop_label = torch::empty({b}, torch::kBool);
  std::vector<int64_t> shape{b};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  d.eps = torch::empty(shape, torch::kFloat32);
  auto t_acc = d.t.accessor<int64_t, 1>();
  float* eps_data = d.eps.data_ptr<float>();
  const int64_t per_sample = b > 0 ? d.eps.numel() / b : 0;
  auto drop_acc = d.drop_label.accessor<bool, 1>();
  for (int64_t i = 0; i < b; ++i) {
    const auto p = static_cast<uint64_t>(positions[i]);
    const auto s = static_cast<uint64_t>(step);
    t_acc[i] = static_cast<int64_t>(
        KeyedRng(stream_key(seed, RngPurpose::kTimestep, {s, p})).below(static_cast<uint64_t>(timesteps)));
    drop_acc[i] = KeyedRng(stream_key(seed, RngPurpose::kLabelDrop, {s, p})).uniform() < p_uncond;
    // A stream per sample keeps ε independent of the sample's slot in the batch. Box–Muller
    // on SplitMix is a few ns per value; a LibTorch generator per sample cost ~3 µs each,
    // which dominated small-model steps.
    KeyedRng rng(stream_key(seed, RngPurpose::kNoise, {s, p}));
    float* out = eps_data + i * per_sample;
    for (int64_t k = 0; k < per_sample; k += 2) {
      const auto [z0, z1] = rng.normal_pair();
      out[k] = static_cast<float>(z0);
      if (k + 1 < per_sample) out[k + 1] = static_cast<float>(z1);
    }
  }
  if (!device.is_cpu()) {
    d.t = d.t.to(device);
    d.eps = d.eps.to(device);
    d.drop_label = d.drop_label.to(device);
  }
  return d;
}

}  // namespace diffusion
