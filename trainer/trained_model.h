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
  std::string ema;  // the tag as stored in the tensor names ("0.999", "sigma-rel-0.05"), or "none"
  std::string ema_note;  // how a post-hoc EMA was built; empty for stored weights
  TrainConfig train;
  std::shared_ptr<DenoiserImpl> net;  // in eval mode
};

// `checkpoint`: a run folder (its `latest`) or a step folder. `ema`: a rate the checkpoint
// holds, "sigma-rel-S" (a power EMA it holds, or else rebuilt post hoc from the run's EMA
// snapshots, trainer/ema.h), "none" (raw weights) or "" (the slowest EMA; raw weights when
// there is none).
// `what` names the option in errors ("option --checkpoint", "teacher").
TrainedModel load_trained_model(const std::string& checkpoint, const std::string& ema,
                                const std::string& what);

}  // namespace diffusion
