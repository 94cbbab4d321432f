// What diffusion-sample was asked to do, as plain structs (filled by sample_options.cpp, the
// only Boost file). Settings whose default depends on the model (steps, variance, clipping,
// EMA rate) stay unset here and are resolved by generation.cpp once the checkpoint is read.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "core/diffusion/spacing.h"
#include "core/models/precision.h"

namespace diffusion {

// A TorchScript model is described on the command line (a checkpoint describes itself).
struct TorchScriptModel {
  std::string path;                   // --torchscript model.pt
  std::vector<int64_t> sample_shape;  // --sample-shape: [D] or [C, H, W]
  ScheduleKind schedule = ScheduleKind::kLinear;
  int64_t timesteps = 1000;
  Prediction prediction = Prediction::kEps;
  int64_t num_classes = 0;  // > 0: forward(x, t, y) with null label num_classes
};

struct SampleConfig {
  std::string checkpoint;  // --checkpoint: a run folder (its `latest`) or a step folder
  std::string ema;         // --ema: a rate in the checkpoint, "none" (raw weights), "" = slowest
  TorchScriptModel torchscript;  // used when torchscript.path is set (instead of --checkpoint)
  int64_t num_samples = 0;  // --num-samples N; 0 = as many as --latents/--invert define
  std::string latents;      // --latents FILE.h5: decode these x_T (dataset `x`, [N, sample shape])
  std::string invert;       // --invert DATA.h5: DDIM-invert these data to latents
  int64_t interpolate = 0;  // --interpolate K: K slerp steps per pair of latents (needs --latents)
  int array_task = 0;       // --array-task K of --array-tasks P: this job's block of indices
  int array_tasks = 1;
  std::string out;          // --out DIR
  int64_t batch_size = 0;   // per rank; does not change the samples; 0 = auto (choose_batch_size)
  uint64_t seed = 0;
  // ddpm | ddim | euler | heun | dpmpp-2m | dpmpp-2m-sde | consistency; auto = consistency for
  // a consistency model, ddim otherwise
  std::string sampler = "auto";
  std::optional<int64_t> steps;           // unset: T for ddpm, 1 for consistency, min(50, T) otherwise
  std::vector<int64_t> time_points;       // --time-points: consistency sampling's K points (empty: spacing)
  double eta = 0.0;                       // DDIM only
  bool karras = false;                    // fast samplers: Karras σ grid instead of the spacing
  double churn = 0.0;                     // euler | heun: EDM's S_churn, S_tmin, S_tmax, S_noise
  double s_tmin = 0.0, s_tmax = INFINITY, s_noise = 1.0;
  std::optional<VarianceKind> variance;   // DDPM only; unset: learned if the model learned it
  std::optional<TimestepSpacing> spacing;  // unset: leading, or a distilled student's own grid
  std::optional<bool> clip_x0;            // unset: true for image models, false for vectors
  double guidance_scale = 1.0;
  // --guidance-interval LOW,HIGH: guidance only where LOW < σ_t <= HIGH; unset = every step.
  std::optional<std::pair<double, double>> guidance_interval;
  // Classifier guidance (docs/sampling.md): a run folder of diffusion-train --objective
  // classifier, and its scale s (unset: 1; refused without --classifier).
  std::string classifier;
  std::optional<double> classifier_scale;
  std::optional<int64_t> class_label;     // unset: sample i gets class i mod C
  bool save_float = false;                // images: write float `x` instead of uint8 `images`
  int threads = 0;                        // intra-op threads per rank; 0 = LibTorch's default
  std::string device = "auto";            // --device auto | cpu | cuda (core/comm/device.h)
  bool share_gpus = false;                // more ranks per node than GPUs
  double collective_timeout_s = 300;      // --collective-timeout (core/comm/collective_watchdog.h); 0 = off
  Precision precision = Precision::kFp32;  // of the forward passes; the update math is float32
};

}  // namespace diffusion
