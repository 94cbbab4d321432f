// A residual MLP denoiser for vector data ([B, D]) with timestep and class conditioning.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <vector>

#include "core/models/denoiser.h"

namespace diffusion {

// LayerNorm → SiLU → Linear, + projected embedding, SiLU → dropout → Linear (zero-init), residual.
class MlpBlockImpl : public torch::nn::Module {
 public:
  MlpBlockImpl(int64_t hidden, int64_t emb_dim, double dropout);
  at::Tensor forward(const at::Tensor& h, const at::Tensor& emb);  // [B, hidden], [B, E]

 private:
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr}, emb_proj_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(MlpBlock);

class MlpDenoiserImpl : public DenoiserImpl {
 public:
  explicit MlpDenoiserImpl(const MlpConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) override;
  int64_t num_classes() const override { return config_.num_classes; }
  bool learned_variance() const override { return config_.learned_variance; }

 private:
  MlpConfig config_;
  torch::nn::Linear in_{nullptr}, time_fc1_{nullptr}, time_fc2_{nullptr}, out_{nullptr};
  torch::nn::Embedding class_embedding_{nullptr};
  torch::nn::LayerNorm norm_out_{nullptr};
  std::vector<MlpBlock> blocks_;
};

}  // namespace diffusion
