// What a training run carries from step to step and through a checkpoint: the counters, and
// the translation between the live model/EMA/AdamW state and the checkpoint's named tensors
// (Marian's training_state.h). Also the model identity that decides whether a run folder or a
// checkpoint belongs to the model being trained.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "trainer/ema.h"

namespace diffusion {

struct NamedParams {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
};
NamedParams named_parameters(const torch::nn::Module& module);
// Copies every parameter of `from` into the parameter of `to` with the same name and shape (a
// student starting from its teacher); throws diffusion::Error naming `what` and the parameter
// that has no match.
void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to, const std::string& what);

// Everything a checkpoint holds beyond the tensors and the config.
struct TrainCounters {
  int64_t step = 0;
  int64_t images_seen = 0;
  int64_t data_position = 0;  // next global sample position of the data stream
  int64_t nonfinite_in_row = 0;
  int64_t skipped = 0;
};

// The live state as checkpoint tensors ("model/…", "ema_RATE/…", "adam/…/{step,exp_avg,
// exp_avg_sq}") and counters (meta_json).
CheckpointState make_checkpoint_state(const NamedParams& params, const std::vector<Ema>& emas,
                                      torch::optim::AdamW& optimizer, const TrainCounters& counters,
                                      uint64_t seed);

// An EMA snapshot for post-hoc EMA: the power EMAs only, under their checkpoint names
// ("ema_sigma-rel-0.05/…"), at `step`.
inline constexpr const char* kEmaSnapshotFolder = "ema-snapshots";
CheckpointState make_ema_snapshot_state(const NamedParams& params, const std::vector<Ema>& emas, int64_t step);
// Removes the snapshots past `step` (rank 0, before training): those of an abandoned timeline
// (a run resumed from an earlier checkpoint, or started afresh in the folder) must not be mixed
// with the ones this run writes.
void remove_snapshots_after(const std::string& snapshot_dir, int64_t step);

// The inverse of make_checkpoint_state; every mismatch names the folder and the tensor.
TrainCounters restore_checkpoint_state(const LoadedCheckpoint& loaded, const NamedParams& params,
                                       std::vector<Ema>& emas, torch::optim::AdamW& optimizer,
                                       uint64_t seed);

// The sections of a resolved config that define the model and its diffusion ([model],
// [diffusion], [distilled]); a run folder or checkpoint whose sections differ belongs to
// another model.
std::string model_identity(const std::string& resolved_text);

// The value of `key` in the [runtime] section of a resolved config, or `fallback` (configs
// written before the section existed ran on the CPU in fp32).
std::string runtime_setting(const std::string& resolved_text, const std::string& key, const std::string& fallback);

}  // namespace diffusion
