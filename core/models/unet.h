// The DDPM / Improved-DDPM UNet: residual blocks with a timestep (and class) embedding,
// self-attention at chosen resolutions, skip connections between the down and up paths.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <functional>
#include <vector>

#include "core/models/denoiser.h"

namespace diffusion {

// GroupNorm → SiLU → conv3×3, + projected embedding, GroupNorm → SiLU → dropout → conv3×3
// (zero-initialised, so each block starts as the identity), with a 1×1 skip when channels
// change.
class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in_channels, int64_t out_channels, int64_t emb_dim, double dropout,
               int64_t groups);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& emb);  // [B, C, H, W], [B, E]

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  torch::nn::Linear emb_proj_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(ResBlock);

// Multi-head self-attention over the H·W positions, residual, output projection zero-init.
class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(int64_t channels, int64_t num_heads, int64_t groups);
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W]

 private:
  int64_t num_heads_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d qkv_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(AttentionBlock);

// One stage of a UNet's down or up path, applied in order: a residual block (with attention
// after it when set), or a resampling convolution.
struct UNetStage {
  ResBlock res{nullptr};
  AttentionBlock attn{nullptr};
  torch::nn::Conv2d resample{nullptr};
};

// The encoder half the UNet and the noisy-image classifier (core/models/classifier.h) share:
// the time embedding MLP, conv_in, the down path and the middle blocks, registered on `owner`
// under the UNet's names ("time_mlp", "conv_in", "down{i}_res", "mid_res1", ...).
struct UNetEncoder {
  torch::nn::Sequential time_mlp{nullptr};
  torch::nn::Conv2d conv_in{nullptr};
  std::vector<UNetStage> down;
  ResBlock mid_res1{nullptr}, mid_res2{nullptr};
  AttentionBlock mid_attn{nullptr};
  std::vector<int64_t> skip_channels;  // what each down stage (and conv_in) leaves for an up path
  int64_t channels = 0;                // channels after the middle
  int64_t downsample = 1;              // total downsampling factor of the down path
};
void validate_unet_config(const UNetConfig& config);
// Registers the time MLP, then runs `between` (the UNet registers its class embedding there,
// keeping its parameter order), then conv_in, the down path and the middle.
UNetEncoder build_unet_encoder(torch::nn::Module& owner, const UNetConfig& config,
                               const std::function<void()>& between = {});
// x [B, C, H, W], emb [B, 4ch] → the middle's output; each stage's output is appended to `skips`
// when given.
at::Tensor run_unet_encoder(UNetEncoder& encoder, const at::Tensor& x, const at::Tensor& emb,
                            std::vector<at::Tensor>* skips = nullptr);

class UNetImpl : public DenoiserImpl {
 public:
  explicit UNetImpl(const UNetConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) override;
  int64_t num_classes() const override { return config_.num_classes; }
  bool learned_variance() const override { return config_.learned_variance; }
  const UNetConfig& config() const { return config_; }

 private:
  UNetConfig config_;
  UNetEncoder encoder_;
  torch::nn::Embedding class_embedding_{nullptr};
  torch::nn::Conv2d conv_out_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
  std::vector<UNetStage> up_;
};

}  // namespace diffusion
