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

namespace diffusion {

// A UNet in the DDPM / Improved-DDPM style. Defaults: the DDPM paper's CIFAR-10 network.
struct UNetConfig {
  int64_t in_channels = 3;
  int64_t base_channels = 128;
  std::vector<int64_t> channel_mult = {1, 2, 2, 2};
  int64_t num_res_blocks = 2;
  // Self-attention at these feature-map sizes, given for an input of `image_size` (DDPM: 16
  // at 32×32). Stored as downsampling factors, so the same net runs at other input sizes.
  std::vector<int64_t> attention_resolutions = {16};
  int64_t image_size = 32;
  int64_t num_heads = 1;
  int64_t num_groups = 32;  // GroupNorm groups
  double dropout = 0.1;
  int64_t num_classes = 0;        // > 0: class-conditional, with an extra null label C
  bool learned_variance = false;  // doubles the output channels
};

// A residual MLP for vector data of any dimension, with the same conditioning.
struct MlpConfig {
  int64_t data_dim = 2;
  int64_t hidden = 256;
  int64_t num_blocks = 4;
  int64_t time_embed_dim = 128;
  double dropout = 0.0;
  int64_t num_classes = 0;
  bool learned_variance = false;
};

struct ModelConfig {
  std::string kind = "unet";  // unet | mlp
  UNetConfig unet;
  MlpConfig mlp;
};

class DenoiserImpl : public torch::nn::Module {
 public:
  // x: [B, C, H, W] or [B, D]; t: int64 [B] in 0 … T-1; y: int64 [B] labels in 0 … C, where C
  // is the null label, or an undefined tensor (every sample gets the null label).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) = 0;
  virtual int64_t num_classes() const = 0;
  virtual bool learned_variance() const = 0;
};

std::shared_ptr<DenoiserImpl> make_denoiser(const ModelConfig& config);

int64_t count_parameters(const torch::nn::Module& module);

// Sinusoidal embedding of integer timesteps (Transformer style, as in DDPM): [B] → [B, dim],
// cosines then sines, frequencies 10000^(-i/half).
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim);

// The label tensor a conditional net consumes: y, or the null label C when y is undefined.
at::Tensor labels_or_null(const at::Tensor& y, int64_t batch, int64_t num_classes,
                          const c10::Device& device);

}  // namespace diffusion
