// What diffusion-sample was asked to do, as plain structs (filled by sample_options.cpp, the
// only Boost file). Settings whose default depends on the model (steps, variance, clipping,
// EMA rate) stay unset here and are resolved by generation.cpp once the checkpoint is read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/diffusion_config.h"
#include "core/spacing.h"

namespace diffusion {

struct SampleConfig {
  std::string checkpoint;  // --checkpoint: a run folder (its `latest`) or a step folder
  std::string ema;         // --ema: a rate in the checkpoint, "none" (raw weights), "" = slowest
  int64_t num_samples = 0;  // --num-samples N
  std::string out;          // --out DIR
  int64_t batch_size = 64;  // per rank; does not change the samples
  uint64_t seed = 0;
  std::string sampler = "ddim";           // ddpm | ddim
  std::optional<int64_t> steps;           // unset: T for ddpm, min(50, T) for ddim
  double eta = 0.0;                       // DDIM only
  std::optional<VarianceKind> variance;   // DDPM only; unset: learned if the model learned it
  TimestepSpacing spacing = TimestepSpacing::kLeading;
  std::optional<bool> clip_x0;            // unset: true for image models, false for vectors
  double guidance_scale = 1.0;
  std::optional<int64_t> class_label;     // unset: sample i gets class i mod C
  bool save_float = false;                // images: write float `x` instead of uint8 `images`
  int threads = 0;                        // intra-op threads per rank; 0 = LibTorch's default
};

}  // namespace diffusion
