// TorchScript feature networks (see scripted_features.h).
#include "evaluation/scripted_features.h"

#include <fmt/format.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/base/error.h"

namespace diffusion {

struct ScriptedFeatures::Impl {
  std::string path;
  mutable torch::jit::Module module;
};

ScriptedFeatures::ScriptedFeatures(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error(fmt::format("--features '{}' does not exist", path));
  try {
    impl_->module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    throw Error(fmt::format("--features '{}': not a TorchScript module (torch.jit.save output): {}",
                            path, std::string(e.what()).substr(0, 400)));
  }
  impl_->module.eval();
}

ScriptedFeatures::~ScriptedFeatures() = default;

at::Tensor ScriptedFeatures::features(const at::Tensor& x, int64_t batch_size) const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t b = 0; b < x.size(0); b += batch_size) {
    const auto batch = x.slice(0, b, std::min(x.size(0), b + batch_size));
    torch::jit::IValue out;
    try {
      out = impl_->module.forward({batch});
    } catch (const std::exception& e) {
      throw Error(fmt::format("--features '{}': forward failed on input of shape {}: {}",
                              impl_->path, c10::str(batch.sizes()),
                              std::string(e.what()).substr(0, 400)));
    }
    if (!out.isTensor() || out.toTensor().dim() != 2 || out.toTensor().size(0) != batch.size(0))
      throw Error(fmt::format("--features '{}': forward must return one tensor [B, F] for input "
                              "of shape {}",
                              impl_->path, c10::str(batch.sizes())));
    parts.push_back(out.toTensor().to(torch::kFloat32));
  }
  return torch::cat(parts);  // [N, F]
}

}  // namespace diffusion
