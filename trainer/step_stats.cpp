// Training diagnostics (see step_stats.h).
#include "trainer/step_stats.h"

#include <ATen/ATen.h>

#include "core/comm/communicator.h"

namespace diffusion {

void StepStats::begin_step(const at::Tensor& like) {
  if (sums_.defined() && sums_.device() == like.device())
    sums_.zero_();
  else
    sums_ = at::zeros({12}, like.options().dtype(at::kDouble));
}

void StepStats::add(const at::Tensor& losses, const at::Tensor& t, const at::Tensor& correct) {
  const auto l = losses.detach().to(at::kDouble);
  const auto quarter = at::div(t * 4, timesteps_, "floor").clamp_max(3);  // [m] in 0 … 3
  sums_.slice(0, 0, 1).add_(l.sum());
  sums_.slice(0, 1, 2).add_(static_cast<double>(l.numel()));
  sums_.slice(0, 2, 6).index_add_(0, quarter, l);
  sums_.slice(0, 6, 10).index_add_(0, quarter, at::ones_like(l));
  if (correct.defined()) {
    sums_.slice(0, 10, 11).add_(correct.detach().to(at::kDouble).sum());
    sums_.slice(0, 11, 12).add_(static_cast<double>(correct.numel()));
  }
}

StepStatsSummary StepStats::reduce(Communicator& communicator) {
  communicator.all_reduce_sum(sums_);
  const auto host = sums_.cpu();
  const double* s = host.data_ptr<double>();
  StepStatsSummary out;
  out.loss = s[1] > 0 ? s[0] / s[1] : 0.0;
  for (int k = 0; k < 4; ++k) out.loss_per_quarter[k] = s[6 + k] > 0 ? s[2 + k] / s[6 + k] : 0.0;
  if (s[11] > 0) out.accuracy = s[10] / s[11];
  return out;
}

}  // namespace diffusion
