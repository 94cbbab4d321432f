// Autocast for the networks. In bf16 a network's forward runs under autocast (matmuls and
// convolutions in bfloat16, as torch.autocast does), while the weights, gradients, optimiser
// state, EMAs, losses and diffusion math stay in float32/float64: run_network returns float32
// whatever the precision.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <string>

#include "core/models/precision.h"

namespace torch::nn {
class Module;
}

namespace diffusion {

class DenoiserImpl;

// Puts every 4-d parameter of `module` in channels-last memory format (the images' layout
// under --channels-last).
void set_channels_last(torch::nn::Module& module);

// Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16). Without it, bf16
// autocast on CPU is emulated and slower than float32.
bool cpu_has_native_bf16();

// The precision a run actually uses on `device`: bf16 on a CPU without native bf16 falls back
// to fp32 (the caller logs precision_fallback_note).
Precision effective_precision(Precision requested, c10::DeviceType device);
// One log line explaining a fallback, or "" when `requested` is used as is.
std::string precision_fallback_note(Precision requested, c10::DeviceType device);

// Autocast for `device` while alive (nesting like torch.autocast: the cast cache is cleared
// when the outermost scope ends). Does nothing for kFp32.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, Precision precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType device_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_;
};

// net.forward(x, t, y) in `precision` on x's device, returned as float32.
at::Tensor run_network(DenoiserImpl& net, const at::Tensor& x, const at::Tensor& t, const at::Tensor& y,
                       Precision precision);

}  // namespace diffusion
