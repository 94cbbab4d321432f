// The network side: one interface for every denoiser (forward(x, t, y) → output with the
// shape of x, or twice its channels with a learned variance), the plain config structs the
// networks are built from, and the factory. Networks know nothing of ᾱ: they see x_t, the
// original integer timestep and an optional class label.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/models/model_config.h"

namespace diffusion {

class DenoiserImpl : public torch::nn::Module {
 public:
  // x: [B, C, H, W] or [B, D]; t: int64 [B] in 0 … T-1; y: int64 [B] labels in 0 … C, where C
  // is the null label, or an undefined tensor (every sample gets the null label).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) = 0;
  virtual int64_t num_classes() const = 0;
  virtual bool learned_variance() const = 0;
};

// The network `config` describes: a UNet or MLP denoiser, or with classifier_classes > 0 the
// classifier of that kind (core/models/classifier.h), whose output is logits [B, K].
std::shared_ptr<DenoiserImpl> make_denoiser(const ModelConfig& config);

int64_t count_parameters(const torch::nn::Module& module);

// Sinusoidal embedding of integer timesteps (Transformer style, as in DDPM): [B] → [B, dim],
// cosines then sines, frequencies 10000^(-i/half).
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim);

// The label tensor a conditional net consumes: y, or the null label C when y is undefined.
at::Tensor labels_or_null(const at::Tensor& y, int64_t batch, int64_t num_classes,
                          const c10::Device& device);

}  // namespace diffusion
