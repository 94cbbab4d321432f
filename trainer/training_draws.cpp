// Keyed per-sample draws for training (core/base/rng.h): a sample's draws depend only on its key,
// never on which rank, batch slot or device it lands on.
#include "trainer/training_draws.h"

#include <torch/torch.h>

#include "core/base/rng.h"
#include "core/diffusion/keyed_noise.h"

namespace diffusion {

TrainingDraws draw_training_noise(uint64_t seed, int64_t step, const std::vector<int64_t>& positions,
                                  const std::vector<int64_t>& sample_shape, int64_t timesteps,
                                  double p_uncond, const at::Device& device) {
  const auto b = static_cast<int64_t>(positions.size());
  const auto s = static_cast<uint64_t>(step);
  TrainingDraws d;
  auto t = torch::empty({b}, torch::kLong);
  auto drop = torch::empty({b}, torch::kBool);
  auto t_acc = t.accessor<int64_t, 1>();
  auto drop_acc = drop.accessor<bool, 1>();
  // ε: one stream per sample keeps it independent of the sample's slot in the batch; the whole
  // batch is one keyed_normal pass (on the device when training there).
  std::vector<uint64_t> noise_keys(positions.size());
  for (int64_t i = 0; i < b; ++i) {
    const auto p = static_cast<uint64_t>(positions[i]);
    t_acc[i] = static_cast<int64_t>(
        KeyedRng(stream_key(seed, RngPurpose::kTimestep, {s, p})).below(static_cast<uint64_t>(timesteps)));
    drop_acc[i] = KeyedRng(stream_key(seed, RngPurpose::kLabelDrop, {s, p})).uniform() < p_uncond;
    noise_keys[i] = stream_key(seed, RngPurpose::kNoise, {s, p});
  }
  d.t = t.to(device);
  d.drop_label = drop.to(device);
  d.eps = keyed_normal(noise_keys, sample_shape, device);  // [b, …sample shape]
  return d;
}

}  // namespace diffusion
