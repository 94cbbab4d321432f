// DDPM and DDIM sampling (Ho et al. 2020; Song et al. 2020; Ho & Salimans 2022 for guidance),
// and the loop of the fast samplers whose steps are in ode_samplers.cpp.
#include "core/diffusion/samplers.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/base/error.h"
#include "core/base/rng.h"
#include "core/diffusion/consistency.h"
#include "core/diffusion/gaussian_diffusion.h"
#include "core/diffusion/keyed_noise.h"

namespace diffusion {

SamplerKind parse_sampler_kind(const std::string& name) {
  if (name == "ddpm") return SamplerKind::kDdpm;
  if (name == "ddim") return SamplerKind::kDdim;
  if (name == "euler") return SamplerKind::kEuler;
  if (name == "heun") return SamplerKind::kHeun;
  if (name == "dpmpp-2m") return SamplerKind::kDpmpp2m;
  if (name == "dpmpp-2m-sde") return SamplerKind::kDpmpp2mSde;
  if (name == "consistency") return SamplerKind::kConsistency;
  // dpmpp-1m, dpmpp-3m, dpmpp-3m-sde, ...: name the order that exists.
  if (name.rfind("dpmpp-", 0) == 0)
    throw Error(fmt::format("sampler '{}': DPM-Solver++ is implemented with solver order 2 only "
                            "(dpmpp-2m, dpmpp-2m-sde)", name));
  throw Error(fmt::format("unknown sampler '{}': expected ddpm, ddim, euler, heun, dpmpp-2m, dpmpp-2m-sde or consistency",
                          name));
}

std::string to_string(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::kDdpm: return "ddpm";
    case SamplerKind::kDdim: return "ddim";
    case SamplerKind::kEuler: return "euler";
    case SamplerKind::kHeun: return "heun";
    case SamplerKind::kDpmpp2m: return "dpmpp-2m";
    case SamplerKind::kDpmpp2mSde: return "dpmpp-2m-sde";
    case SamplerKind::kConsistency: return "consistency";
  }
  return "?";
}

bool is_fast_sampler(SamplerKind kind) {
  return kind != SamplerKind::kDdpm && kind != SamplerKind::kDdim && kind != SamplerKind::kConsistency;
}

int64_t evaluations_per_sample(SamplerKind kind, int64_t steps) {
  return kind == SamplerKind::kHeun ? 2 * steps - 1 : steps;
}

at::Tensor ddpm_step(const NoiseSchedule& s, int64_t index, const at::Tensor& xt,
                     const at::Tensor& output, Prediction prediction, VarianceKind variance,
                     bool clip_x0, const at::Tensor& noise, const at::Tensor& classifier_grad,
                     double classifier_scale) {
  const auto t = torch::full({xt.size(0)}, index, torch::kLong);
  const auto step = p_mean_variance(s, prediction, variance, output, xt, t, clip_x0);
  const auto mean = classifier_grad.defined()
                        ? classifier_guided_mean(step.p.mean, step.p.log_variance, classifier_grad, classifier_scale)
                        : step.p.mean;
  if (index == 0) return mean;  // no noise on the last step
  return mean + (0.5 * step.p.log_variance).exp() * noise;
}

at::Tensor classifier_guided_mean(const at::Tensor& mean, const at::Tensor& log_variance, const at::Tensor& grad,
                                  double scale) {
  return mean + scale * log_variance.exp() * grad;
}

at::Tensor classifier_guided_eps(const at::Tensor& eps, double alpha_bar_t, const at::Tensor& grad, double scale) {
  return eps - (scale * std::sqrt(1.0 - alpha_bar_t)) * grad;
}

at::Tensor classifier_log_prob_grad(const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& logits,
                                    const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  torch::AutoGradMode grad_mode(true);
  const auto xi = x.detach().to(torch::kFloat32).requires_grad_(true);
  const auto out = logits(xi, t).to(torch::kFloat32);  // [B, K]
  if (out.dim() != 2 || out.size(0) != x.size(0))
    throw Error(fmt::format("classifier: output has shape [{}], expected logits [{}, K]", fmt::join(out.sizes(), ", "),
                            x.size(0)));
  const auto log_p = torch::log_softmax(out, /*dim=*/1).gather(1, y.to(out.device(), torch::kLong).unsqueeze(1));
  return torch::autograd::grad({log_p.sum()}, {xi})[0].detach();
}

at::Tensor ddim_step(double alpha_bar_t, double alpha_bar_next, const at::Tensor& x0,
                     const at::Tensor& eps, double eta, const at::Tensor& noise) {
  const double sigma = eta * std::sqrt((1.0 - alpha_bar_next) / (1.0 - alpha_bar_t)) *
                       std::sqrt(std::max(0.0, 1.0 - alpha_bar_t / alpha_bar_next));
  auto x = std::sqrt(alpha_bar_next) * x0 +
           std::sqrt(std::max(0.0, 1.0 - alpha_bar_next - sigma * sigma)) * eps;
  if (sigma > 0) x = x + sigma * noise;
  return x;
}

at::Tensor guided(const at::Tensor& unconditional, const at::Tensor& conditional, double scale) {
  return unconditional + scale * (conditional - unconditional);
}

Sampler::Sampler(const NoiseSchedule& training, const SamplerConfig& config)
    : config_(config),
      training_(training),
      respaced_(training),
      timesteps_(timestep_spacing(config.spacing, training.num_steps(), config.steps)) {
  if (config_.kind == SamplerKind::kDdpm) {
    std::vector<int64_t> ascending(timesteps_.rbegin(), timesteps_.rend());
    respaced_ = training_.respaced(ascending);
  }
  if (config_.eta < 0) throw Error(fmt::format("--eta {} must be >= 0", config_.eta));
  if (!(config_.guidance_sigma_lo >= 0 && config_.guidance_sigma_lo < config_.guidance_sigma_hi))
    throw Error(fmt::format("--guidance-interval {},{}: need 0 <= low < high (sigma values)", config_.guidance_sigma_lo,
                            config_.guidance_sigma_hi));
  const bool churning = config_.kind == SamplerKind::kEuler || config_.kind == SamplerKind::kHeun;
  if (config_.karras && !is_fast_sampler(config_.kind))
    throw Error(fmt::format("--karras: not available with --sampler {} (euler, heun, dpmpp-2m, dpmpp-2m-sde)",
                            to_string(config_.kind)));
  if (config_.churn != 0.0 && !churning)
    throw Error(fmt::format("--churn: only euler and heun churn, not --sampler {}", to_string(config_.kind)));
  if (config_.churn < 0) throw Error(fmt::format("--churn {} must be >= 0", config_.churn));
  if (!config_.time_points.empty() && config_.kind != SamplerKind::kConsistency)
    throw Error(fmt::format("--time-points: only consistency sampling takes chosen time points, not --sampler {}",
                            to_string(config_.kind)));
  if (config_.kind == SamplerKind::kConsistency) {
    if (config_.eta != 0.0) throw Error(fmt::format("--eta {}: consistency sampling has no eta", config_.eta));
    if (!config_.time_points.empty()) {
      if (static_cast<int64_t>(config_.time_points.size()) != config_.steps)
        throw Error(fmt::format("--time-points: {} points for --steps {}", config_.time_points.size(), config_.steps));
      timesteps_ = consistency_time_points(training.num_steps(), config_.time_points, config_.consistency_grid);
    } else if (!config_.consistency_grid.empty() && config_.spacing == TimestepSpacing::kTrailing) {
      timesteps_ = consistency_sampling_timesteps(training.num_steps(), config_.steps, config_.consistency_grid);
    }
    if (timesteps_.front() != training.num_steps() - 1)
      throw Error(fmt::format("--timestep-spacing {}: consistency sampling starts at sigma_max (t = {}), this spacing "
                              "starts at t = {}; use trailing",
                              to_string(config_.spacing), training.num_steps() - 1, timesteps_.front()));
  }
  if (is_fast_sampler(config_.kind)) {
    grid_ = config_.karras ? karras_grid(training_, config_.steps) : sigma_grid(training_, timesteps_);
    timesteps_ = grid_.timesteps;
  }
}

bool Sampler::guided_at(int64_t tau, const at::Tensor& labels) const {
  if (!labels.defined() || config_.num_classes == 0 || config_.guidance_scale == 1.0) return false;
  const double sigma = std::sqrt((1.0 - training_.alpha_bar(tau)) / training_.alpha_bar(tau));
  return sigma > config_.guidance_sigma_lo && sigma <= config_.guidance_sigma_hi;
}

at::Tensor Sampler::model_output(const DenoiseFn& model, const at::Tensor& x, int64_t tau,
                                 const at::Tensor& labels) const {
  const int64_t B = x.size(0);
  const bool guide = guided_at(tau, labels);
  const auto on = x.options().dtype(torch::kLong);
  // An unconditional model is given no labels (they may be a classifier's targets).
  if (!guide) return model(x, torch::full({B}, tau, on), config_.num_classes > 0 ? labels : at::Tensor());
  // Both halves in one batch: [conditional; unconditional].
  const auto null = torch::full({B}, config_.num_classes, on);
  const auto out = model(torch::cat({x, x}), torch::full({2 * B}, tau, on),
                         torch::cat({labels.to(torch::kLong), null}));
  const auto cond = out.slice(0, 0, B), uncond = out.slice(0, B, 2 * B);
  if (out.size(1) == 2 * x.size(1)) {
    // Learned variance: guide the prediction channels, keep the conditional variance.
    const int64_t C = x.size(1);
    return torch::cat({guided(uncond.slice(1, 0, C), cond.slice(1, 0, C), config_.guidance_scale),
                       cond.slice(1, C, 2 * C)},
                      /*dim=*/1);
  }
  return guided(uncond, cond, config_.guidance_scale);
}

at::Tensor Sampler::sample(const DenoiseFn& model, const std::vector<int64_t>& indices,
                           const std::vector<int64_t>& sample_shape, const at::Tensor& labels,
                           const at::Tensor& x_T, const ClassifierGradFn& classifier) const {
  const auto B = static_cast<int64_t>(indices.size());
  // One keyed stream per (sample, draw): x_T is draw 0, then each noisy step's noise in order;
  // a draw is one keyed_normal pass over the batch, on the sampling device.
  uint64_t draw_counter = 0;
  std::vector<uint64_t> keys(indices.size());
  const auto draw = [&]() {
    for (size_t b = 0; b < indices.size(); ++b)
      keys[b] = stream_key(config_.seed, RngPurpose::kSampleNoise,
                           {static_cast<uint64_t>(indices[b]), draw_counter});
    ++draw_counter;
    return keyed_normal(keys, sample_shape, config_.device);  // [B, ...sample_shape]
  };

  at::Tensor x = draw();  // always drawn, so per-step noise does not depend on --latents
  if (x_T.defined()) {
    if (x_T.sizes() != x.sizes())
      throw Error(fmt::format("latents have shape [{}], expected [{}]", fmt::join(x_T.sizes(), ", "),
                              fmt::join(x.sizes(), ", ")));
    x = x_T.to(config_.device, torch::kFloat32).clone();
  }
  if (classifier && (is_fast_sampler(config_.kind) || config_.kind == SamplerKind::kConsistency || !labels.defined()))
    throw Error(fmt::format("classifier guidance needs target labels and --sampler ddpm or ddim, not {}",
                            to_string(config_.kind)));
  if (is_fast_sampler(config_.kind)) return sample_fast(model, x, labels, draw);
  if (config_.kind == SamplerKind::kConsistency) return sample_consistency(model, x, labels, draw);
  const auto S = static_cast<int64_t>(timesteps_.size());
  const int64_t C = x.size(1);
  torch::NoGradGuard no_grad;
  for (int64_t k = 0; k < S; ++k) {
    const int64_t tau = timesteps_[k];
    const auto t = torch::full({B}, tau, x.options().dtype(torch::kLong));
    auto out = model_output(model, x, tau, labels);
    // g = ∇_x log p(y | x_t) at the original timestep τ (the classifier's own autograd scope).
    const at::Tensor grad = classifier ? classifier(x, t, labels) : at::Tensor();
    if (config_.kind == SamplerKind::kDdpm) {
      const int64_t index = S - 1 - k;  // position in the respaced (ascending) chain
      const auto noise = index > 0 ? draw() : torch::zeros_like(x);
      x = ddpm_step(respaced_, index, x, out, config_.prediction, config_.variance, config_.clip_x0, noise, grad,
                    config_.classifier_scale);
    } else {
      if (out.size(1) == 2 * C) out = out.slice(1, 0, C);  // DDIM ignores a learned variance
      auto d = interpret_output(training_, config_.prediction, x, t, out, config_.clip_x0);
      const double ab = training_.alpha_bar(tau);
      if (grad.defined()) {
        // ε̂' and the x̂_0 it implies, unclipped (as ADM's condition_score).
        d.eps = classifier_guided_eps(d.eps, ab, grad, config_.classifier_scale);
        d.x0 = (x - std::sqrt(1.0 - ab) * d.eps) / std::sqrt(ab);
      }
      // After the last step ᾱ = 1 (clean data), as the DDIM paper's code does.
      const double ab_next = k + 1 < S ? training_.alpha_bar(timesteps_[k + 1]) : 1.0;
      const auto noise = config_.eta > 0 ? draw() : at::Tensor();
      x = ddim_step(ab, ab_next, d.x0, d.eps, config_.eta, noise);
    }
  }
  return x;
}

at::Tensor Sampler::sample_consistency(const DenoiseFn& model, at::Tensor x, const at::Tensor& labels,
                                      const std::function<at::Tensor()>& draw) const {
  torch::NoGradGuard no_grad;
  const int64_t B = x.size(0), C = x.size(1);
  at::Tensor x0;
  for (size_t k = 0; k < timesteps_.size(); ++k) {
    const int64_t tau = timesteps_[k];
    const double ab = training_.alpha_bar(tau);
    if (k > 0) x = std::sqrt(ab) * x0 + std::sqrt(1.0 - ab) * draw();  // back onto the trajectory at τ
    auto out = model_output(model, x, tau, labels);
    if (out.size(1) == 2 * C) out = out.slice(1, 0, C);
    const auto t = torch::full({B}, tau, x.options().dtype(torch::kLong));
    x0 = consistency_output(training_, x, t, interpret_output(training_, config_.prediction, x, t, out, false).x0);
    if (config_.clip_x0) x0 = x0.clamp(-1.0, 1.0);
  }
  return x0;
}

at::Tensor Sampler::sample_fast(const DenoiseFn& model, at::Tensor x, const at::Tensor& labels,
                                const std::function<at::Tensor()>& draw) const {
  torch::NoGradGuard no_grad;
  const auto S = static_cast<int64_t>(timesteps_.size());
  const int64_t C = x.size(1);      // x: [B, C, H, W] or [B, D]
  const auto& sig = grid_.sigmas;  // [S + 1], sig[S] = 0
  // x̂_0 at noise level σ from the VP-scale input the network sees, called at timestep τ
  // (guided; a learned variance is ignored).
  const auto denoise = [&](const at::Tensor& x_vp, double sigma, int64_t tau) {
    auto out = model_output(model, x_vp, tau, labels);
    if (out.size(1) == 2 * C) out = out.slice(1, 0, C);
    return x0_at_sigma(config_.prediction, x_vp, sigma, out, config_.clip_x0);
  };
  if (config_.kind == SamplerKind::kDpmpp2m || config_.kind == SamplerKind::kDpmpp2mSde) {
    // VP scale throughout; the 2M update uses the previous step's x̂_0 (docs/math.md). Where a
    // guidance interval starts or ends, the previous x̂_0 comes from the other guidance regime:
    // their difference is the guidance, not the trajectory's curvature, and extrapolating it
    // (by 1/(2r), 0.64 at the Karras grid's exit at 10 steps) corrupts the sample, so that step
    // is first order (docs/sampling.md "Guidance interval").
    const bool sde = config_.kind == SamplerKind::kDpmpp2mSde;
    at::Tensor x0_prev;
    bool guided_prev = false;
    for (int64_t k = 0; k < S; ++k) {
      const bool guided = guided_at(timesteps_[k], labels);
      const auto x0 = denoise(x, sig[k], timesteps_[k]);
      const auto noise = sde && sig[k + 1] > 0 ? draw() : at::Tensor();
      x = dpmpp_2m_step(x, x0, sig[k], sig[k + 1], guided == guided_prev ? x0_prev : at::Tensor(),
                        k > 0 ? sig[k - 1] : 0.0, noise);
      x0_prev = x0;
      guided_prev = guided;
    }
    return x;
  }
  // Euler/Heun in the VE scale x/√ᾱ: x_T ~ N(0, I) in the VP scale is N(0, (1+σ_0²) I) there.
  x = x * std::sqrt(1.0 + sig[0] * sig[0]);
  const auto ve_denoise = [&](const at::Tensor& x_ve, double sigma, int64_t tau) {
    return denoise(x_ve / std::sqrt(1.0 + sigma * sigma), sigma, tau);
  };
  const bool heun = config_.kind == SamplerKind::kHeun;
  for (int64_t k = 0; k < S; ++k) {
    double sigma = sig[k];
    int64_t tau = timesteps_[k];
    // Churn (EDM Algorithm 2): raise σ to σ̂ = (1+γ)σ with fresh noise, then step from σ̂. The
    // network is evaluated at σ̂, at its rounded timestep.
    const double gamma = config_.churn > 0 && config_.s_tmin <= sigma && sigma <= config_.s_tmax
                             ? std::min(config_.churn / static_cast<double>(S), std::sqrt(2.0) - 1.0)
                             : 0.0;
    if (gamma > 0) {
      const double sigma_hat = sigma * (1.0 + gamma);
      x = x + (config_.s_noise * std::sqrt(sigma_hat * sigma_hat - sigma * sigma)) * draw();
      sigma = sigma_hat;
      tau = sigma_to_model_timestep(training_, sigma);
    }
    const auto x0 = ve_denoise(x, sigma, tau);
    const auto x_euler = euler_step(x, x0, sigma, sig[k + 1]);
    // Heun corrects every step except the last, to σ = 0 where dx/dσ is not defined.
    if (heun && sig[k + 1] > 0) {
      x = heun_step(x, x0, sigma, x_euler, ve_denoise(x_euler, sig[k + 1], timesteps_[k + 1]), sig[k + 1]);
    } else {
      x = x_euler;
    }
  }
  return x;  // σ = 0: the VE and VP scales agree
}

at::Tensor Sampler::invert(const DenoiseFn& model, const at::Tensor& x0, const at::Tensor& labels) const {
  if (config_.kind != SamplerKind::kDdim || config_.eta != 0.0)
    throw Error("DDIM inversion needs the DDIM sampler with eta = 0");
  const std::vector<int64_t> up(timesteps_.rbegin(), timesteps_.rend());  // ascending
  const int64_t B = x0.size(0), C = x0.size(1);
  torch::NoGradGuard no_grad;
  at::Tensor x = x0.to(torch::kFloat32).clone();
  double ab = 1.0;  // x is clean data
  for (size_t k = 0; k < up.size(); ++k) {
    const int64_t t_eval = up[k == 0 ? 0 : k - 1];
    auto out = model_output(model, x, t_eval, labels);
    if (out.size(1) == 2 * C) out = out.slice(1, 0, C);
    const auto t = torch::full({B}, t_eval, x.options().dtype(torch::kLong));
    const auto eps = interpret_output(training_, config_.prediction, x, t, out, /*clip_x0=*/false).eps;
    // x̂_0 from ε̂ at x's own noise level ᾱ (not t_eval's), then the η = 0 update upwards.
    const auto x0_hat = (x - std::sqrt(1.0 - ab) * eps) / std::sqrt(ab);
    const double ab_next = training_.alpha_bar(up[k]);
    x = ddim_step(ab, ab_next, x0_hat, eps, 0.0, at::Tensor());
    ab = ab_next;
  }
  return x;
}

at::Tensor slerp(const at::Tensor& a, const at::Tensor& b, double lambda) {
  const auto a64 = a.to(torch::kFloat64).flatten(1), b64 = b.to(torch::kFloat64).flatten(1);  // [B, n]
  const auto cos = ((a64 * b64).sum(1) / (a64.norm(2, 1) * b64.norm(2, 1))).clamp(-1.0, 1.0);
  const auto theta = cos.acos().unsqueeze(1);  // [B, 1]
  const auto small = theta < 1e-6;
  const auto sin = theta.sin();
  const auto wa = torch::where(small, torch::full_like(theta, 1.0 - lambda), ((1.0 - lambda) * theta).sin() / sin);
  const auto wb = torch::where(small, torch::full_like(theta, lambda), (lambda * theta).sin() / sin);
  return (wa * a64 + wb * b64).reshape(a.sizes()).to(a.scalar_type());
}

}  // namespace diffusion
