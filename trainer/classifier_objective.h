// The classifier objective of classifier guidance (Dhariwal & Nichol 2021; ADM's
// classifier_train.py): t uniform over the T timesteps (the trainer's keyed draw),
// x_t = q_sample(x0, t, ε) with the keyed ε, cross-entropy of the classifier's logits
// (core/models/classifier.h) on the true label. The labels reach it undropped (trainer.cpp).
#pragma once

#include "core/diffusion/schedule.h"
#include "core/models/precision.h"
#include "trainer/objective.h"

namespace diffusion {

class ClassifierObjective : public TrainingObjective {
 public:
  ClassifierObjective(NoiseSchedule schedule, Precision precision = Precision::kFp32);
  int64_t timestep_draws() const override { return schedule_.num_steps(); }
  // loss [m]: -log softmax(logits(x_t, t))_y per sample. y must be defined (the data's labels).
  ObjectiveLosses losses(DenoiserImpl& model, const at::Tensor& x0, const at::Tensor& y,
                         const at::Tensor& draw, const at::Tensor& eps) override;

 private:
  NoiseSchedule schedule_;
  Precision precision_;
};

}  // namespace diffusion
