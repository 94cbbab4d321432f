// Fréchet distance between two sets of feature vectors, each summarised by the mean and
// covariance of a Gaussian (FID when the features are Inception's):
//   FD = |μ1 − μ2|² + tr(C1 + C2 − 2 (C1^½ C2 C1^½)^½).
// Pure float64 tensor math; the matrix square roots come from symmetric eigendecompositions.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace diffusion {

struct GaussianStats {
  at::Tensor mean;  // [F] float64
  at::Tensor cov;   // [F, F] float64, unbiased (divides by N − 1; zero for N = 1)
  int64_t count = 0;
};

// Mean and covariance of the rows of `features` [N, F] (any float dtype), in float64.
GaussianStats gaussian_stats(const at::Tensor& features);

// Square root of a symmetric positive semi-definite matrix [F, F] (float64): V diag(√λ) Vᵀ
// with the eigenvalues clamped at 0 (round-off makes tiny negative ones).
at::Tensor sqrtm_psd(const at::Tensor& matrix);

// FD of two Gaussians; both must have the same F. Clamped at 0 against round-off.
double frechet_distance(const GaussianStats& a, const GaussianStats& b);

}  // namespace diffusion
