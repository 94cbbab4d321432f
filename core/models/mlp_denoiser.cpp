// Residual MLP denoiser for low-dimensional data (toy sets, embeddings).
#include "core/models/mlp_denoiser.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "core/base/error.h"

namespace diffusion {
namespace nn = torch::nn;

MlpBlockImpl::MlpBlockImpl(int64_t hidden, int64_t emb_dim, double dropout) {
  norm_ = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({hidden})));
  fc1_ = register_module("fc1", nn::Linear(hidden, hidden));
  emb_proj_ = register_module("emb_proj", nn::Linear(emb_dim, hidden));
  dropout_ = register_module("dropout", nn::Dropout(dropout));
  fc2_ = register_module("fc2", nn::Linear(hidden, hidden));
  torch::NoGradGuard no_grad;
  fc2_->weight.zero_();
  fc2_->bias.zero_();
}

at::Tensor MlpBlockImpl::forward(const at::Tensor& h, const at::Tensor& emb) {
  auto z = fc1_(torch::silu(norm_(h))) + emb_proj_(torch::silu(emb));
  return h + fc2_(dropout_(torch::silu(z)));
}

MlpDenoiserImpl::MlpDenoiserImpl(const MlpConfig& config) : config_(config) {
  if (config_.data_dim < 1 || config_.hidden < 1 || config_.num_blocks < 0 ||
      config_.time_embed_dim < 2 || config_.num_classes < 0)
    throw Error(fmt::format("mlp config: data_dim {}, hidden {}, num_blocks {}, time_embed_dim {}, "
                            "num_classes {}: expected positive sizes",
                            config_.data_dim, config_.hidden, config_.num_blocks,
                            config_.time_embed_dim, config_.num_classes));
  const int64_t hidden = config_.hidden;
  in_ = register_module("in", nn::Linear(config_.data_dim, hidden));
  time_fc1_ = register_module("time_fc1", nn::Linear(config_.time_embed_dim, hidden));
  time_fc2_ = register_module("time_fc2", nn::Linear(hidden, hidden));
  if (config_.num_classes > 0)
    class_embedding_ = register_module("class_embedding", nn::Embedding(config_.num_classes + 1, hidden));
  for (int64_t i = 0; i < config_.num_blocks; ++i)
    blocks_.push_back(register_module(fmt::format("block{}", i), MlpBlock(hidden, hidden, config_.dropout)));
  norm_out_ = register_module("norm_out", nn::LayerNorm(nn::LayerNormOptions({hidden})));
  out_ = register_module("out", nn::Linear(hidden, config_.data_dim * (config_.learned_variance ? 2 : 1)));
}

at::Tensor MlpDenoiserImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  if (x.dim() != 2 || x.size(1) != config_.data_dim)
    throw Error(fmt::format("mlp: input has shape [{}], expected [B, {}]", fmt::join(x.sizes(), ", "),
                            config_.data_dim));
  auto emb = time_fc2_(torch::silu(time_fc1_(timestep_embedding(t, config_.time_embed_dim))));
  if (class_embedding_)
    emb = emb + class_embedding_(labels_or_null(y, x.size(0), config_.num_classes, x.device()));
  auto h = in_(x);  // [B, hidden]
  for (auto& block : blocks_) h = block(h, emb);
  return out_(torch::silu(norm_out_(h)));  // [B, D] or [B, 2D]
}

}  // namespace diffusion
