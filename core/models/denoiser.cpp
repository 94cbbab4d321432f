// Denoiser factory and the conditioning pieces both network families share.
#include "core/models/denoiser.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>

#include "core/base/error.h"
#include "core/models/classifier.h"
#include "core/models/mlp_denoiser.h"
#include "core/models/unet.h"

namespace diffusion {

std::shared_ptr<DenoiserImpl> make_denoiser(const ModelConfig& config) {
  if (config.classifier_classes > 0) return make_classifier(config);
  if (config.kind == "unet") return std::make_shared<UNetImpl>(config.unet);
  if (config.kind == "mlp") return std::make_shared<MlpDenoiserImpl>(config.mlp);
  throw Error(fmt::format("unknown model kind '{}': expected unet or mlp", config.kind));
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(t.device());
  const auto freqs = torch::exp(-std::log(10000.0) * torch::arange(half, opts) / half);  // [half]
  const auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);              // [B, half]
  auto emb = torch::cat({args.cos(), args.sin()}, /*dim=*/1);
  if (dim % 2) emb = torch::cat({emb, torch::zeros({t.size(0), 1}, opts)}, /*dim=*/1);
  return emb;  // [B, dim]
}

at::Tensor labels_or_null(const at::Tensor& y, int64_t batch, int64_t num_classes,
                          const c10::Device& device) {
  if (!y.defined())
    return torch::full({batch}, num_classes, torch::TensorOptions().dtype(torch::kLong).device(device));
  if (y.dim() != 1 || y.size(0) != batch)
    throw Error(fmt::format("labels have shape {}, expected [{}]", fmt::join(y.sizes(), ", "), batch));
  return y.to(device, torch::kLong);
}

}  // namespace diffusion
