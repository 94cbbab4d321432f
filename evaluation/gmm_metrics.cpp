// Mode coverage and mixture NLL (see gmm_metrics.h).
#include "evaluation/gmm_metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/base/error.h"

namespace diffusion {
namespace {

double squared_distance(const GaussianMixture& g, int64_t mode, const float* row) {
  double total = 0;
  for (int64_t d = 0; d < g.dim; ++d) {
    const double diff = static_cast<double>(row[d]) - g.means[static_cast<size_t>(mode * g.dim + d)];
    total += diff * diff;
  }
  return total;
}

}  // namespace

GaussianMixture ring_mixture(int64_t modes, double radius, double std) {
  ToyOptions options;
  options.modes = modes;
  options.radius = radius;
  options.std = std;
  return gaussian_mixture_of(options);
}

ModeCoverage mode_coverage(const GaussianMixture& g, const float* x, int64_t n,
                           double radius_stds, double min_share) {
  const int64_t m = g.modes();
  ModeCoverage c;
  c.mode_counts.assign(static_cast<size_t>(m), 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * g.dim;
    int64_t best = -1;
    double best_distance = std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < m; ++k) {
      const double distance = std::sqrt(squared_distance(g, k, row)) / g.stds[static_cast<size_t>(k)];
      if (distance < best_distance) {
        best_distance = distance;
        best = k;
      }
    }
    if (best >= 0 && best_distance <= radius_stds)
      ++c.mode_counts[static_cast<size_t>(best)];
    else
      ++c.off_mode;
  }
  int64_t covered = 0;
  for (int64_t k = 0; k < m; ++k) {
    const double expected = min_share * static_cast<double>(n) * g.weights[static_cast<size_t>(k)];
    const auto min_count = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(expected - 1e-9)));
    c.min_counts.push_back(min_count);
    if (c.mode_counts[static_cast<size_t>(k)] >= min_count)
      ++covered;
    else
      c.missing_modes.push_back(k);
  }
  c.coverage = m > 0 ? static_cast<double>(covered) / static_cast<double>(m) : 0.0;
  return c;
}

double mean_nll(const GaussianMixture& g, const float* x, int64_t n) {
  if (n <= 0) throw Error("mean_nll: no samples");
  const int64_t m = g.modes();
  const double half_d = 0.5 * static_cast<double>(g.dim);
  std::vector<double> log_terms(static_cast<size_t>(m));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x + i * g.dim;
    double top = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < m; ++k) {
      const auto kk = static_cast<size_t>(k);
      const double var = g.stds[kk] * g.stds[kk];
      // log wk − (D/2) log(2π σk²) − ‖x − μk‖² / (2 σk²); a zero weight contributes −inf.
      log_terms[kk] = std::log(g.weights[kk]) - half_d * std::log(2.0 * M_PI * var) -
                      squared_distance(g, k, row) / (2.0 * var);
      top = std::max(top, log_terms[kk]);
    }
    double sum = 0;
    for (double t : log_terms) sum += std::exp(t - top);
    total -= top + std::log(sum);
  }
  return total / static_cast<double>(n);
}

}  // namespace diffusion
