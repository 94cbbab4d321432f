// Fréchet distance in float64 (see frechet.h). tr((C1^½ C2 C1^½)^½) is the sum of the square
// roots of the eigenvalues of the symmetric PSD matrix C1^½ C2 C1^½, so only symmetric
// eigendecompositions are needed (no general sqrtm, no complex round-off as in scipy's).
#include "evaluation/frechet.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

#include "core/base/error.h"

namespace diffusion {

GaussianStats gaussian_stats(const at::Tensor& features) {
  if (features.dim() != 2 || features.size(0) < 1)
    throw Error(fmt::format("gaussian_stats: expected features [N, F] with N >= 1, got a "
                            "tensor of rank {} with {} elements",
                            features.dim(), features.numel()));
  const auto x = features.to(torch::kFloat64);  // [N, F]
  GaussianStats s;
  s.count = x.size(0);
  s.mean = x.mean(0);  // [F]
  const auto centred = x - s.mean;
  s.cov = s.count > 1 ? centred.t().matmul(centred) / static_cast<double>(s.count - 1)
                      : torch::zeros({x.size(1), x.size(1)}, x.options());  // [F, F]
  return s;
}

at::Tensor sqrtm_psd(const at::Tensor& matrix) {
  const auto m = matrix.to(torch::kFloat64);
  const auto sym = (m + m.t()) * 0.5;  // round-off makes products slightly asymmetric
  auto [eigenvalues, eigenvectors] = torch::linalg_eigh(sym);
  const auto root = eigenvalues.clamp_min(0).sqrt();  // [F]
  return (eigenvectors * root.unsqueeze(0)).matmul(eigenvectors.t());
}

double frechet_distance(const GaussianStats& a, const GaussianStats& b) {
  if (a.mean.size(0) != b.mean.size(0))
    throw Error(fmt::format("frechet_distance: feature sizes differ ({} vs {})", a.mean.size(0),
                            b.mean.size(0)));
  const double mean_term = (a.mean - b.mean).pow(2).sum().item<double>();
  const auto root_a = sqrtm_psd(a.cov);
  const auto inner = root_a.matmul(b.cov).matmul(root_a);
  const auto sym = (inner + inner.t()) * 0.5;
  const double trace_root = torch::linalg_eigvalsh(sym).clamp_min(0).sqrt().sum().item<double>();
  const double fd = mean_term + a.cov.trace().item<double>() + b.cov.trace().item<double>() -
                    2.0 * trace_root;
  return std::max(0.0, fd);
}

}  // namespace diffusion
