// The Gaussian diffusion math as pure tensor functions over a NoiseSchedule (docs/math.md
// "Forward process and training", "Posterior and the reverse step"): q_sample, the eps/x0/v
// conversions, the posterior, the reverse-step mean and variance for each variance choice,
// and the L_vlb terms. No network in here: callers pass the network's output in.
// `t` is always int64 [B] indexing the given (possibly respaced) schedule.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "core/diffusion/schedule.h"

namespace diffusion {

// x_t = a_t x_0 + σ_t ε
at::Tensor q_sample(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& t,
                    const at::Tensor& eps);

// v = a_t ε - σ_t x_0
at::Tensor v_from_x0_eps(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& t,
                         const at::Tensor& eps);
at::Tensor x0_from_eps(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                       const at::Tensor& eps);
at::Tensor eps_from_x0(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                       const at::Tensor& x0);
at::Tensor x0_from_v(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                     const at::Tensor& v);
at::Tensor eps_from_v(const NoiseSchedule& s, const at::Tensor& xt, const at::Tensor& t,
                      const at::Tensor& v);

struct Gaussian {
  at::Tensor mean;
  at::Tensor log_variance;  // broadcastable to mean
};

// q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t); log variance clipped at t = 0 to log β̃_1.
Gaussian q_posterior(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& xt,
                     const at::Tensor& t);

// What the network's (mean-channel) output says about x_0 and ε. With clip_x0, x̂_0 is
// clamped to [-1, 1] and ε̂ recomputed from the clamped x̂_0 (image data only).
struct Denoised {
  at::Tensor x0;
  at::Tensor eps;
};
Denoised interpret_output(const NoiseSchedule& s, Prediction prediction, const at::Tensor& xt,
                          const at::Tensor& t, const at::Tensor& output, bool clip_x0);

// log Σ_t for a fixed variance choice, [B, 1, …] broadcast against `like`.
at::Tensor fixed_log_variance(const NoiseSchedule& s, VarianceKind kind, const at::Tensor& t,
                              const at::Tensor& like);
// Learned-range: log Σ = ((v+1)/2) log β_t + (1 - (v+1)/2) log β̃_t (clipped), v ∈ [-1, 1].
at::Tensor learned_range_log_variance(const NoiseSchedule& s, const at::Tensor& v,
                                      const at::Tensor& t);

// p_θ(x_{t-1} | x_t) from the full network output. For kLearnedRange the output carries 2C
// channels along dim 1: the prediction, then v.
struct ReverseStep {
  Gaussian p;       // μ_θ and log Σ_θ
  Denoised denoised;
};
ReverseStep p_mean_variance(const NoiseSchedule& s, Prediction prediction, VarianceKind variance,
                            const at::Tensor& output, const at::Tensor& xt, const at::Tensor& t,
                            bool clip_x0);

// KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats.
at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1, const at::Tensor& mean2,
                     const at::Tensor& logvar2);

// log-likelihood of x (data on 256 levels in [-1, 1]) under N(means, e^{2 log_scales})
// discretised into 256 bins of width 2/255, the outer bins reaching to ±∞; elementwise, nats.
at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means,
                                               const at::Tensor& log_scales);

// One L_vlb term per sample, nats per dimension ([B]): the KL of the true posterior to p_θ for
// t > 0, the decoder NLL of x_0 for t = 0.
at::Tensor vlb_terms(const NoiseSchedule& s, const at::Tensor& x0, const at::Tensor& xt,
                     const at::Tensor& t, const Gaussian& model);

// Mean over every dimension but the first: [B, …] → [B].
at::Tensor mean_over_nonbatch(const at::Tensor& x);

}  // namespace diffusion
