// One round of progressive distillation as a trainer objective: the student (N steps) learns
// to reach in one DDIM step where the frozen teacher's two DDIM steps on the 2N-grid land
// (docs/math.md "Progressive distillation"). The trainer supplies data, keyed draws (a draw picks
// k in 1 … N), gradient reduction and checkpoints.
#pragma once

#include <memory>

#include "core/models/denoiser.h"
#include "core/diffusion/diffusion_config.h"
#include "core/diffusion/schedule.h"
#include "core/models/precision.h"
#include "trainer/objective.h"

namespace diffusion {

struct DistillationSettings {
  int64_t student_steps = 1;  // N
  Prediction teacher_prediction = Prediction::kEps;
  Prediction student_prediction = Prediction::kV;
  bool clip_x0 = false;       // clip the teacher's x̂_0 (image data), as its sampler would
  double guidance_scale = 1.0;
  int64_t num_classes = 0;    // > 0: conditional; the null label is num_classes
  int64_t channels = 0;       // output channels of the mean (a learned variance adds as many)
  Precision precision = Precision::kFp32;  // of the teacher's and the student's forward passes
};

// The teacher's x̂_0 and ε̂ at (z, t) (int64 [m]), guided when settings.guidance_scale != 1 and
// labels are given, x̂_0 clipped with settings.clip_x0; no gradient is taken through it.
std::pair<at::Tensor, at::Tensor> teacher_denoise(DenoiserImpl& teacher, const NoiseSchedule& schedule,
                                                  const DistillationSettings& settings, const at::Tensor& z,
                                                  const at::Tensor& t, const at::Tensor& y);

class DistillationObjective : public TrainingObjective {
 public:
  // The teacher must already be on the device the student trains on.
  DistillationObjective(NoiseSchedule schedule, std::shared_ptr<DenoiserImpl> teacher,
                        DistillationSettings settings);
  int64_t timestep_draws() const override { return settings_.student_steps; }
  // The student starts from the teacher's weights.
  void initialize(DenoiserImpl& student) override;
  ObjectiveLosses losses(DenoiserImpl& student, const at::Tensor& x0, const at::Tensor& y,
                         const at::Tensor& draw, const at::Tensor& eps) override;

 private:
  NoiseSchedule schedule_;
  std::shared_ptr<DenoiserImpl> teacher_;
  DistillationSettings settings_;
  at::Tensor grid_;  // int64 [2N + 1], g_j
};

}  // namespace diffusion
