// Sharded, crash-safe checkpoints (llm.c's write_checkpoint; torch.distributed.checkpoint's
// metadata-last rule). The state is a list of named tensors; their bytes, concatenated in list
// order, are cut into W equal slices and rank r writes slice r to its own HDF5 shard, so write
// time falls as W grows. Protocol: shards → fsync → barrier → rank 0 writes manifest.json
// (step, W, config, tensor table, slices, CRC32 of each shard) → fsync → the folder is renamed
// from its temporary name to step-XXXXXXXX → `latest` is replaced atomically → old
// checkpoints beyond keep_last are removed (never the newest complete one). A folder without a
// valid manifest, or whose checksums fail, is never loaded. Loading reads every shard, so a
// checkpoint written at W ranks loads at any W'.
#pragma once

#include <mpi.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace diffusion {

struct CheckpointState {
  int64_t step = 0;
  // Named CPU tensors (any dtype, contiguous); names are unique. The same list, in the same
  // order, on every rank.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  // Free-form JSON text the trainer keeps beside the tensors (config, counters, data position).
  std::string meta_json = "{}";
};

struct CheckpointWriteOptions {
  int keep_last = 3;             // complete checkpoints kept, newest first; >= 1
  std::string config_text;       // resolved config, stored in the manifest
  std::string folder = "checkpoints";  // the folder of RUN the step folders go to
};

// Writes RUN/<options.folder>/step-XXXXXXXX/ collectively over `comm` (every rank calls it with the
// same tensor list); returns the folder. Throws diffusion::Error on every rank if any rank
// failed, leaving the previous checkpoints and `latest` untouched.
std::string write_checkpoint(MPI_Comm comm, const std::string& run_dir, const CheckpointState& state,
                             const CheckpointWriteOptions& options);

// The step folder `latest` points to in RUN/checkpoints, if any; `path` may also be a step
// folder itself. nullopt when the run has no complete checkpoint yet.
std::optional<std::string> find_checkpoint(const std::string& path);

struct CheckpointFolder {
  int64_t step = 0;
  std::string path;
};

// Every complete step folder (valid manifest) of `folder` with its step, oldest first; empty
// when there is none or the folder does not exist.
std::vector<CheckpointFolder> complete_checkpoints(const std::string& folder);

struct LoadedCheckpoint {
  std::string dir;
  int64_t step = 0;
  int written_by_world_size = 0;
  std::string config_text;
  CheckpointState state;
};

// Reads and verifies (manifest, sizes, CRC32) a step folder on the calling rank alone.
// Throws diffusion::Error naming the folder and file for a missing/invalid manifest or a
// shard whose checksum fails.
LoadedCheckpoint read_checkpoint(const std::string& step_dir);

}  // namespace diffusion
