// Noisy-sample classifiers for classifier guidance (see classifier.h).
#include "core/models/classifier.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "core/base/error.h"

namespace diffusion {
namespace nn = torch::nn;
namespace {

template <typename Module>
void zero_init(Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.zero_();
}

void check_classes(int64_t classes) {
  if (classes < 2)
    throw Error(fmt::format("classifier: {} classes, expected at least 2 (the training data's labels)", classes));
}

}  // namespace

UNetClassifierImpl::UNetClassifierImpl(const UNetConfig& config, int64_t classes)
    : config_(config), classes_(classes) {
  check_classes(classes_);
  config_.num_classes = 0;
  config_.learned_variance = false;
  encoder_ = build_unet_encoder(*this, config_);
  norm_out_ = register_module("norm_out", nn::GroupNorm(config_.num_groups, encoder_.channels));
  head_ = register_module("head", nn::Linear(encoder_.channels, classes_));
  zero_init(head_);
}

at::Tensor UNetClassifierImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& /*y*/) {
  if (x.dim() != 4 || x.size(1) != config_.in_channels)
    throw Error(fmt::format("unet classifier: input has shape [{}], expected [B, {}, H, W]",
                            fmt::join(x.sizes(), ", "), config_.in_channels));
  const auto emb = encoder_.time_mlp->forward(timestep_embedding(t, config_.base_channels));  // [B, 4ch]
  const auto h = run_unet_encoder(encoder_, x, emb);                                          // [B, C', h, w]
  return head_(torch::silu(norm_out_(h)).mean({2, 3}));                                       // [B, K]
}

MlpClassifierImpl::MlpClassifierImpl(const MlpConfig& config, int64_t classes) : config_(config), classes_(classes) {
  check_classes(classes_);
  if (config_.data_dim < 1 || config_.hidden < 1 || config_.num_blocks < 0 || config_.time_embed_dim < 2)
    throw Error(fmt::format("mlp classifier config: data_dim {}, hidden {}, num_blocks {}, time_embed_dim {}: "
                            "expected positive sizes",
                            config_.data_dim, config_.hidden, config_.num_blocks, config_.time_embed_dim));
  const int64_t hidden = config_.hidden;
  in_ = register_module("in", nn::Linear(config_.data_dim, hidden));
  time_fc1_ = register_module("time_fc1", nn::Linear(config_.time_embed_dim, hidden));
  time_fc2_ = register_module("time_fc2", nn::Linear(hidden, hidden));
  for (int64_t i = 0; i < config_.num_blocks; ++i)
    blocks_.push_back(register_module(fmt::format("block{}", i), MlpBlock(hidden, hidden, config_.dropout)));
  norm_out_ = register_module("norm_out", nn::LayerNorm(nn::LayerNormOptions({hidden})));
  head_ = register_module("head", nn::Linear(hidden, classes_));
  zero_init(head_);
}

at::Tensor MlpClassifierImpl::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& /*y*/) {
  if (x.dim() != 2 || x.size(1) != config_.data_dim)
    throw Error(fmt::format("mlp classifier: input has shape [{}], expected [B, {}]", fmt::join(x.sizes(), ", "),
                            config_.data_dim));
  const auto emb = time_fc2_(torch::silu(time_fc1_(timestep_embedding(t, config_.time_embed_dim))));  // [B, hidden]
  auto h = in_(x);  // [B, hidden]
  for (auto& block : blocks_) h = block(h, emb);
  return head_(torch::silu(norm_out_(h)));  // [B, K]
}

std::shared_ptr<ClassifierImpl> make_classifier(const ModelConfig& config) {
  if (config.kind == "unet") return std::make_shared<UNetClassifierImpl>(config.unet, config.classifier_classes);
  if (config.kind == "mlp") return std::make_shared<MlpClassifierImpl>(config.mlp, config.classifier_classes);
  throw Error(fmt::format("unknown model kind '{}': expected unet or mlp", config.kind));
}

}  // namespace diffusion
