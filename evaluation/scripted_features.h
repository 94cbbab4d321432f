// A user-supplied TorchScript feature network for the Fréchet distance (for example an
// Inception network for standard FID): forward(x) -> [B, F], x float32 [B, C, H, W] in
// [-1, 1] (or [B, D] for vectors), as diffusion-eval feeds its own classifier.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace diffusion {

class ScriptedFeatures {
 public:
  // Loads `path` (torch.jit.save output); throws diffusion::Error naming the file.
  explicit ScriptedFeatures(const std::string& path);
  ~ScriptedFeatures();
  ScriptedFeatures(const ScriptedFeatures&) = delete;
  ScriptedFeatures& operator=(const ScriptedFeatures&) = delete;

  // Features [N, F] float32 of x, batch by batch; throws naming the file when the network
  // fails on the input or does not return one [B, F] tensor.
  at::Tensor features(const at::Tensor& x, int64_t batch_size) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffusion
