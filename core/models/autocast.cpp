// Autocast scopes and the bf16 capability check (see autocast.h).
#include "core/models/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/nn/module.h>

#include "core/models/denoiser.h"

namespace diffusion {

bool cpu_has_native_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return false;
#endif
}

Precision effective_precision(Precision requested, c10::DeviceType device) {
  if (requested == Precision::kBf16 && device == c10::DeviceType::CPU && !cpu_has_native_bf16())
    return Precision::kFp32;
  return requested;
}

std::string precision_fallback_note(Precision requested, c10::DeviceType device) {
  if (effective_precision(requested, device) == requested) return "";
  return "--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX-BF16), where bf16 "
         "autocast is emulated and slower than float32; running in fp32";
}

AutocastScope::AutocastScope(c10::DeviceType device, Precision precision)
    : device_(device), previous_dtype_(c10::ScalarType::Undefined) {
  if (precision == Precision::kFp32) return;
  active_ = true;
  previous_enabled_ = at::autocast::is_autocast_enabled(device_);
  previous_dtype_ = at::autocast::get_autocast_dtype(device_);
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::set_autocast_dtype(device_, at::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The weight casts are cached for the scope; forget them when the outermost one ends, so the
  // next forward sees the updated weights (torch.autocast.__exit__ does the same).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, previous_enabled_);
  at::autocast::set_autocast_dtype(device_, previous_dtype_);
}

void set_channels_last(torch::nn::Module& module) {
  for (auto& p : module.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
}

at::Tensor run_network(DenoiserImpl& net, const at::Tensor& x, const at::Tensor& t, const at::Tensor& y,
                       Precision precision) {
  if (precision == Precision::kFp32) return net.forward(x, t, y);
  at::Tensor out;
  {
    AutocastScope autocast(x.device().type(), precision);
    out = net.forward(x, t, y);
  }
  return out.to(at::kFloat);
}

}  // namespace diffusion
