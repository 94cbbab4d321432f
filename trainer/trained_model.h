// A trained denoiser read back from a checkpoint: the run's resolved config rebuilds the
// network, whose weights come from the chosen EMA rate or the raw parameters. Used by the
// sampler and by the distiller (its teachers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/models/denoiser.h"
#include "trainer/train_config.h"

namespace diffusion {

struct TrainedModel {
  std::string checkpoint_dir;  // absolute step folder
  int64_t step = 0;
  std::string ema;  // the rate as stored in the tensor names, or "none"
  TrainConfig train;
  std::shared_ptr<DenoiserImpl> net;  // in eval mode
};

// `checkpoint`: a run folder (its `latest`) or a step folder. `ema`: a rate the checkpoint
// holds, "none" (raw weights) or "" (the slowest rate; raw weights when there is none).
// `what` names the option in errors ("option --checkpoint", "teacher").
TrainedModel load_trained_model(const std::string& checkpoint, const std::string& ema,
                                const std::string& what);

}  // namespace diffusion
