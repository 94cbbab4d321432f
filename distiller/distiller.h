// Progressive distillation over the ranks of an MPI communicator: rounds halve the sampling
// steps from --start-steps to --target-steps; each round trains a student run folder
// OUT/steps-N with the trainer's machinery (global batch, checkpoints, resume, W-invariance),
// starting from its teacher's weights. A re-run skips finished rounds and resumes the current
// one where it stopped.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "core/comm/communicator.h"
#include "distiller/distill_config.h"

namespace diffusion {

struct DistillResult {
  std::vector<std::string> students;  // run folders finished, in order
  bool stopped_by_signal = false;
};

// Checks everything (teacher, data, step counts) before any work starts; throws
// diffusion::Error naming the option or file.
DistillResult run_distillation(const DistillConfig& config, MPI_Comm comm, Communicator& communicator);

}  // namespace diffusion
