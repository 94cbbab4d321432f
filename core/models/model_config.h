// Plain configuration of the two network families (built by core/models/denoiser.h's factory).
// Torch-free, so option parsers and tools include it without LibTorch.
#pragma once

#include <cstdint>
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
  // > 0: not a denoiser but a time-conditional classifier of x_t with this many logits, built
  // from the same unet/mlp settings (core/models/classifier.h; diffusion-train --objective
  // classifier).
  int64_t classifier_classes = 0;
};

}  // namespace diffusion
