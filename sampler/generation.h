// The sampling job behind diffusion-sample: load a model (checkpoint or TorchScript), give
// each array task and within it each rank a contiguous block of the N sample indices, generate them in batches with core's Sampler
// (sample i is a pure function of model, settings, seed and i, whatever W or batch size) and
// write them as they finish into per-rank shards, joined by rank 0 into DIR/samples.h5.
#pragma once

#include <c10/core/Device.h>
#include <mpi.h>

#include <cstdint>

#include "sampler/sample_config.h"

namespace diffusion {

// Rank r of W takes the contiguous block [⌊rN/W⌋, ⌊(r+1)N/W⌋): blocks differ by at most one
// sample, cover 0 … N-1 exactly once, and map to one hyperslab each in the virtual dataset.
struct SampleRange {
  int64_t begin = 0;
  int64_t end = 0;
};
SampleRange rank_sample_range(int64_t num_samples, int world_size, int rank);

// Runs the job (or its array task) collectively over `comm`. Re-running the same command on the same --out
// continues from what each rank's shard records as complete; a different command is refused.
// Throws diffusion::Error (naming the option, file or key) before writing anything for bad
// input.
// `device` is this rank's (core/comm/device.h, chosen over the whole world, so that jobs on
// slices of the ranks do not pick the same GPU).
void run_sampling(const SampleConfig& config, MPI_Comm comm, const c10::Device& device);

}  // namespace diffusion
