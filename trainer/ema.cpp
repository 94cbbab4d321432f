// Parameter EMAs and the power-function EMA math (see ema.h).
#include "trainer/ema.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>

#include "core/base/error.h"

namespace diffusion {

Ema::Ema(const std::vector<at::Tensor>& params, double rate, double sigma_rel)
    : rate_(rate), sigma_rel_(sigma_rel), gamma_(sigma_rel > 0 ? power_ema_gamma(sigma_rel) : 0) {
  torch::NoGradGuard no_grad;
  for (const auto& p : params) shadow_.push_back(p.detach().clone());
}

Ema::Ema(const std::vector<at::Tensor>& params, double rate) : Ema(params, rate, 0) {}

Ema Ema::power(const std::vector<at::Tensor>& params, double sigma_rel) { return Ema(params, 0, sigma_rel); }

void Ema::update(const std::vector<at::Tensor>& params, int64_t step) {
  // At step 1 the power EMA's β is 0: it becomes the weights after the first update, so the
  // random initialisation never enters it.
  const double beta = is_power() ? std::pow(1.0 - 1.0 / double(std::max<int64_t>(step, 1)), gamma_ + 1) : rate_;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) shadow_[i].mul_(beta).add_(params[i].detach(), 1.0 - beta);
}

std::string Ema::tag() const { return is_power() ? power_ema_tag(sigma_rel_) : fmt::format("{}", rate_); }

double power_ema_sigma_rel(double gamma) {
  return std::sqrt(gamma + 1) / ((gamma + 2) * std::sqrt(gamma + 3));
}

double power_ema_gamma(double sigma_rel) {
  if (!(sigma_rel > 0 && sigma_rel < kMaxPowerEmaSigmaRel))
    throw Error(fmt::format("power EMA sigma_rel {} is not in (0, {})", sigma_rel, kMaxPowerEmaSigmaRel));
  // σ_rel(γ) falls monotonically from 0.2887 at γ = 0; bisect on log γ.
  double lo = std::log(1e-6), hi = std::log(1e9);
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (power_ema_sigma_rel(std::exp(mid)) > sigma_rel ? lo : hi) = mid;
  }
  return std::exp(0.5 * (lo + hi));
}

std::string power_ema_tag(double sigma_rel) { return fmt::format("sigma-rel-{}", sigma_rel); }

double parse_power_ema_tag(const std::string& tag) {
  static const std::string kPrefix = "sigma-rel-";
  if (tag.rfind(kPrefix, 0) != 0 || tag.size() == kPrefix.size()) return 0;
  const char* begin = tag.c_str() + kPrefix.size();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  return (end && *end == '\0' && v > 0) ? v : 0;
}

double power_profile_dot(double t_a, double gamma_a, double t_b, double gamma_b) {
  // ∫_0^min(t_a,t_b) (γa+1)(γb+1) τ^(γa+γb) dτ / (t_a^(γa+1) t_b^(γb+1)), written with the ratio of
  // the two ends so that large exponents do not overflow.
  const double t_min = std::min(t_a, t_b), t_max = std::max(t_a, t_b);
  const double g_max = t_a >= t_b ? gamma_a : gamma_b;  // exponent of the longer profile
  return (gamma_a + 1) * (gamma_b + 1) * std::pow(t_min / t_max, g_max + 1) /
         ((gamma_a + gamma_b + 1) * t_min);
}

PosthocEmaFit posthoc_ema_fit(const std::vector<PowerProfile>& inputs, const PowerProfile& target) {
  const auto n = static_cast<int64_t>(inputs.size());
  if (n == 0) throw Error("post-hoc EMA: no input profiles");
  auto gram = torch::empty({n, n}, torch::kFloat64);  // [n, n] ⟨p_i, p_j⟩
  auto rhs = torch::empty({n, 1}, torch::kFloat64);   // [n, 1] ⟨p_i, p_target⟩
  auto g = gram.accessor<double, 2>();
  auto r = rhs.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j)
      g[i][j] = power_profile_dot(inputs[i].t, inputs[i].gamma, inputs[j].t, inputs[j].gamma);
    r[i][0] = power_profile_dot(inputs[i].t, inputs[i].gamma, target.t, target.gamma);
  }
  // Snapshots of neighbouring steps are nearly parallel, so the Gram matrix can be close to
  // singular: a least-squares solve with an SVD (gelsd) keeps the minimum-norm solution.
  const auto x = std::get<0>(at::linalg_lstsq(gram, rhs, c10::nullopt, std::string("gelsd")));  // [n, 1]
  PosthocEmaFit fit;
  auto xa = x.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) fit.coefficients.push_back(xa[i][0]);
  // ‖Σ c_i p_i − p_t‖² = cᵀGc − 2cᵀr + ⟨p_t, p_t⟩
  const double tt = power_profile_dot(target.t, target.gamma, target.t, target.gamma);
  const double err2 = (x.t().matmul(gram).matmul(x) - 2 * x.t().matmul(rhs)).item<double>() + tt;
  fit.relative_error = std::sqrt(std::max(err2, 0.0) / tt);
  return fit;
}

}  // namespace diffusion
