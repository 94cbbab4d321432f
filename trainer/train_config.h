// The trainer's configuration as plain structs, one per option group (data, model, diffusion,
// optimiser, checkpoint, logging). Filled by train_options.cpp, the only file that knows
// Boost; checked in one place, validate_train_config, with errors that name the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "core/models/model_config.h"
#include "core/models/precision.h"
#include "trainer/lr_schedule.h"

namespace diffusion {

struct DataOptions {
  std::string path;          // --data
  bool random_flip = false;  // images only
  int64_t memory_limit_mb = 1024;
};

struct DiffusionOptions {
  ScheduleConfig schedule;
  Prediction prediction = Prediction::kEps;
  bool learned_variance = false;  // L_hybrid with a learned-range variance
  double vlb_weight = 0.001;
  double min_snr_gamma = 0.0;  // min-SNR-γ loss weighting; 0 = off
  bool class_conditional = false;
  double p_uncond = 0.1;  // label dropped to the null label with this probability
  // --objective: what is trained. "denoise" (the default), "classifier": a time-conditional
  // classifier of x_t for classifier guidance (trainer/classifier_objective.h), with as many
  // classes as the data's labels, or "consistency": a consistency model trained without a
  // teacher (trainer/consistency_objective.h).
  std::string objective = "denoise";
};

// Consistency training (--objective consistency, trainer/consistency_objective.h): the iCT
// curriculum of grid points, the lognormal pair proposal and the pseudo-Huber constant.
struct ConsistencyOptions {
  int64_t initial_points = 10;   // s0
  int64_t final_points = 1280;   // s1 (the grid keeps at most T distinct timesteps)
  double p_mean = -1.1, p_std = 2.0;
  double huber_c = 0;            // 0 = auto, 0.00054·√d
};

struct OptimOptions {
  int64_t steps = 1000;       // --steps: total optimiser steps of the run
  int64_t batch_size = 64;    // --batch-size: global batch over all ranks
  int64_t micro_batch = 0;    // per-rank micro-batch for accumulation; 0 = the whole local batch
  double lr = 2e-4;
  int64_t warmup = 0;         // linear warmup steps
  LrDecay lr_decay = LrDecay::kConstant;  // --lr-decay: the rate after the warmup
  double lr_min = 0.0;        // --lr-min: where a cosine decay ends, at step `steps`
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double grad_clip = 1.0;     // max global gradient norm; 0 = off
  std::vector<double> ema_rates = {0.9999};
  // --ema-sigma-rels: power-function EMAs (trainer/ema.h) by relative width, e.g. EDM2's
  // 0.05,0.10; with checkpoint.ema_snapshot_every they allow post-hoc EMA.
  std::vector<double> ema_sigma_rels;
  int64_t max_nonfinite = 10;  // consecutive skipped updates before the run stops
  uint64_t seed = 0;           // --seed
  int64_t bucket_mb = 25;      // gradient all-reduce bucket size
  int threads = 0;             // intra-op threads per rank; 0 = LibTorch's default
};

struct CheckpointOptions {
  std::string out;              // --out: the run folder
  int64_t checkpoint_every = 1000;  // --checkpoint-every (steps); the last step always saves
  int keep = 3;                 // complete checkpoints kept
  // --ema-snapshot-every: every K steps the power EMAs go to RUN/ema-snapshots/step-X (all
  // kept), from which `--ema sigma-rel-S` rebuilds any other width; 0 = none.
  int64_t ema_snapshot_every = 0;
};

struct LoggingOptions {
  int64_t log_every = 50;  // progress line and metrics.jsonl record every K steps
};

// Where and how the run computes; none of it changes the model, so a run may resume on other
// devices or in another precision.
struct RuntimeOptions {
  std::string device = "auto";  // --device auto | cpu | cuda (core/comm/device.h)
  bool share_gpus = false;      // more ranks per node than GPUs
  Precision precision = Precision::kFp32;
  bool channels_last = false;
  // --collective-timeout: seconds a rank waits in a collective before the watchdog asks the
  // others and ends the job naming a stuck one (core/comm/collective_watchdog.h); 0 = off.
  double collective_timeout_s = 300;
};

// Set for a distillation student (diffusion-distill writes it as the [distilled] section of the
// run's config): a progressive student samples with DDIM (η = 0) on its own grid; a consistency
// student records the guidance built into it.
struct DistilledInfo {
  // "progressive" (the grid below) or "consistency" (diffusion-distill --method consistency: no
  // grid, a consistency model; sampling_steps stays 0).
  std::string method = "progressive";
  int64_t sampling_steps = 0;       // N; 0 = not a progressive-distillation student
  std::vector<int64_t> timesteps;   // the N timesteps visited, descending (then ᾱ = 1)
  double guidance_scale = 1.0;      // guidance of the teacher targets, baked into the student
  std::vector<int64_t> grid;        // a consistency student's training grid, ascending (key `grid`)
};

struct TrainConfig;
// Fills in what comes from the data: channels (images [C, H, W]) or dimension (vectors [D]),
// and the class count of a class-conditional model (0 otherwise) or of a classifier.
void apply_data_shape(TrainConfig& config, const std::vector<int64_t>& sample_shape, int64_t num_classes);

struct TrainConfig {
  std::string config_file;  // --config, if any
  DataOptions data;
  ModelConfig model;
  DiffusionOptions diffusion;
  ConsistencyOptions consistency;
  OptimOptions optim;
  CheckpointOptions checkpoint;
  LoggingOptions logging;
  RuntimeOptions runtime;
  std::string resolved_text;  // every option with its value, INI-style; printed and saved
  // Derived from the data by apply_data_shape.
  std::vector<int64_t> sample_shape;  // [C, H, W] or [D]
  int64_t num_classes = 0;            // classes the model is conditioned on; 0 = unconditional
  // (a classifier's classes are model.classifier_classes)
  DistilledInfo distilled;            // from the [distilled] section, if any
};

// Checks what can be checked before any data is read (T >= 2, the batch divides over the
// world, sizes positive, ...). Throws diffusion::Error naming the key.
void validate_train_config(const TrainConfig& config, int world_size);

// Checks the dataset against the model (kind, channels or dimension, labels for a
// class-conditional model). Throws diffusion::Error naming the file and the key.
struct DatasetInfo;
void validate_data_fits_model(const TrainConfig& config, const DatasetInfo& info);

}  // namespace diffusion
