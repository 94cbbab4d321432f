// Trainer: data-parallel training of one denoiser over the ranks of an MPI communicator (any
// communicator, not only MPI_COMM_WORLD). run() reads top to bottom: agreed setup → resume →
// per step: batch → draws → forward/backward (gradient buckets reduced meanwhile) → clip →
// AdamW → EMA → log → checkpoint. A stop request (core/base/stop_signal.h) checkpoints and
// leaves after the current step.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/comm/communicator.h"
#include "trainer/objective.h"
#include "trainer/train_config.h"

namespace diffusion {

struct TrainResult {
  int64_t final_step = 0;
  int64_t skipped_steps = 0;
  bool stopped_by_signal = false;
  std::string last_checkpoint;
};

class Trainer {
 public:
  // `comm` carries control traffic and checkpoints; `communicator` reduces gradients. Both
  // span the same ranks. `objective` (not owned) replaces the denoising objective, e.g. with
  // a distillation student's.
  Trainer(TrainConfig config, MPI_Comm comm, Communicator& communicator,
          TrainingObjective* objective = nullptr);
  TrainResult run();

 private:
  TrainConfig config_;
  MPI_Comm comm_;
  Communicator& communicator_;
  TrainingObjective* objective_;
};

}  // namespace diffusion
