// Time-conditional classifiers of noisy samples x_t (Dhariwal & Nichol 2021, classifier
// guidance): logits of p(y | x_t, t) for the sampler's ∇_x log p(y | x_t). For images the
// UNet's encoder half (core/models/unet.h, shared with the UNet, not copied) with a pooled
// linear head; for vectors the MLP's residual blocks with the same time embedding.
//
// A classifier is a DenoiserImpl so that the trainer, its checkpoints, EMA and resume, and
// load_trained_model handle it unchanged: forward(x, t, y) ignores y (a classifier is not
// conditioned on a label, num_classes() = 0) and returns logits [B, K] instead of a tensor of
// x's shape; only ClassifierObjective (trainer/classifier_objective.h) and the sampler's
// classifier guidance call it, and both know that. make_denoiser builds one when
// ModelConfig::classifier_classes > 0.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <memory>
#include <vector>

#include "core/models/denoiser.h"
#include "core/models/mlp_denoiser.h"
#include "core/models/unet.h"

namespace diffusion {

class ClassifierImpl : public DenoiserImpl {
 public:
  int64_t num_classes() const override { return 0; }  // not conditioned on a label
  bool learned_variance() const override { return false; }
  virtual int64_t num_logits() const = 0;             // K, the classes it tells apart
};

// UNet encoder (time MLP, conv_in, down path, middle) → GroupNorm → SiLU → global average
// pool → linear (zero-initialised: a fresh classifier says 1/K everywhere), ADM's "adaptive"
// pooling head.
class UNetClassifierImpl : public ClassifierImpl {
 public:
  UNetClassifierImpl(const UNetConfig& config, int64_t classes);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) override;  // → [B, K]
  int64_t num_logits() const override { return classes_; }

 private:
  UNetConfig config_;
  int64_t classes_;
  UNetEncoder encoder_;
  torch::nn::GroupNorm norm_out_{nullptr};
  torch::nn::Linear head_{nullptr};
};

// in → residual MLP blocks with the time embedding → LayerNorm → SiLU → linear (zero-init).
class MlpClassifierImpl : public ClassifierImpl {
 public:
  MlpClassifierImpl(const MlpConfig& config, int64_t classes);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) override;  // → [B, K]
  int64_t num_logits() const override { return classes_; }

 private:
  MlpConfig config_;
  int64_t classes_;
  torch::nn::Linear in_{nullptr}, time_fc1_{nullptr}, time_fc2_{nullptr}, head_{nullptr};
  torch::nn::LayerNorm norm_out_{nullptr};
  std::vector<MlpBlock> blocks_;
};

// The classifier of `config.kind` (unet | mlp) with config.classifier_classes logits.
std::shared_ptr<ClassifierImpl> make_classifier(const ModelConfig& config);

}  // namespace diffusion
