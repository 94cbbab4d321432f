// What the trainer minimises, behind one small interface, so the same data-parallel loop
// (global batch, keyed draws, gradient buckets, checkpoints, resume) trains a plain denoiser
// and a progressive-distillation student. The trainer owns the data and the random draws; an
// objective turns one micro-batch of them into per-sample losses.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "core/diffusion/losses.h"
#include "core/diffusion/schedule.h"
#include "core/models/precision.h"

namespace diffusion {

class DenoiserImpl;
class Ema;

struct ObjectiveLosses {
  at::Tensor loss;  // [m], what is minimised (the rank minimises its local mean)
  at::Tensor t;     // int64 [m], the timesteps the losses were taken at (for the t-quarter stats)
  at::Tensor correct;  // a classifier's: [m], 1 where its top logit is the label; undefined otherwise
};

class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;
  // The trainer draws a timestep index uniformly from 0 … timestep_draws() - 1 per sample.
  virtual int64_t timestep_draws() const = 0;
  // Called once on the freshly built model before rank 0's weights are broadcast (a resumed
  // checkpoint overwrites them afterwards).
  virtual void initialize(DenoiserImpl& /*model*/) {}
  // Called once the EMAs exist and a resumed checkpoint has restored them: an objective whose
  // target network follows an EMA (consistency distillation) keeps the reference.
  virtual void bind_emas(const std::vector<Ema>& /*emas*/) {}
  // Called before each step's forward passes with its 0-based optimiser step (curricula that
  // depend on the step, target networks refreshed from an EMA).
  virtual void begin_step(int64_t /*step*/) {}
  // x0 [m, …] data, y int64 [m] labels (null label where dropped) or undefined, draw int64 [m]
  // timestep indices, eps [m, …] keyed noise.
  virtual ObjectiveLosses losses(DenoiserImpl& model, const at::Tensor& x0, const at::Tensor& y,
                                 const at::Tensor& draw, const at::Tensor& eps) = 0;
};

// The denoising objective of docs/math.md "Forward process and training": t = draw uniform over the
// T timesteps, x_t = q_sample(x0, t, ε), MSE on the prediction's target (L_simple) or L_hybrid.
class DenoisingObjective : public TrainingObjective {
 public:
  // The network runs in `precision` (core/models/autocast.h); the loss is taken in float32.
  DenoisingObjective(NoiseSchedule schedule, LossConfig config, Precision precision = Precision::kFp32);
  int64_t timestep_draws() const override { return schedule_.num_steps(); }
  ObjectiveLosses losses(DenoiserImpl& model, const at::Tensor& x0, const at::Tensor& y,
                         const at::Tensor& draw, const at::Tensor& eps) override;

 private:
  NoiseSchedule schedule_;
  LossConfig config_;
  Precision precision_;
};

}  // namespace diffusion
