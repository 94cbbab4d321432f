// Training diagnostics (see step_stats.h).
#include "trainer/step_stats.h"

#include <ATen/ATen.h>

#include "core/comm/communicator.h"

namespace diffusion {

void StepStats::begin_step(const at::Tensor& like) {
  if (sums_.defined() && sums_.device() == like.device())
    sums_.zero_();
  else
    sums_ = at::zeros({10}, like.options().dtype(at::kDouble));
}

void StepStats::add(const at::Tensor& losses, const at::Tensor& t) {
  const auto l = losses.detach().to(at::kDouble);
  const auto quarter = at::div(t * 4, timesteps_, "floor").clamp_max(3);  // [m] in 0 … 3
  sums_.slice(0, 0, 1).add_(l.sum());
  sums_.slice(0, 1, 2).add_(static_cast<double>(l.numel()));
  sums_.slice(0, 2, 6).index_add_(0, quarter, l);
  sums_.slice(0, 6, 10).index_add_(0, quarter, at::ones_like(l));
}

StepStatsSummary StepStats::reduce(Communicator& communicator) {
  communicator.all_reduce_sum(sums_);
  const auto host = sums_.cpu();
  const double* s = host.data_ptr<double>();
  StepStatsSummary out;
  out.loss = s[1] > 0 ? s[0] / s[1] : 0.0;
  for (int k = 0; k < 4; ++k) out.loss_per_quarter[k] = s[6 + k] > 0 ? s[2 + k] / s[6 + k] : 0.0;
  return out;
}

}  // namespace diffusion
