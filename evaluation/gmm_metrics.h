// Sample quality against a known isotropic Gaussian mixture (the gmm-ring toy set): which
// modes the samples cover and their mean negative log-likelihood under the mixture.
// Torch-free, float64.
#pragma once

#include <cstdint>
#include <vector>

#include "datasets/toy_sets.h"

namespace diffusion {

// M equal-weight modes of std `std` on a circle of `radius` (as diffusion-data make-toy).
GaussianMixture ring_mixture(int64_t modes, double radius, double std);

struct ModeCoverage {
  std::vector<int64_t> mode_counts;    // [M] samples assigned to each mode
  int64_t off_mode = 0;                // samples farther than radius_stds from every mode
  std::vector<int64_t> missing_modes;  // modes with fewer than their minimum count
  std::vector<int64_t> min_counts;     // [M] the minimum count of each mode
  double coverage = 0;                 // covered modes / M
};

// Assigns each of the n rows of `x` [n, D] to its nearest mode in units of that mode's std,
// ‖x − μk‖ / σk, if that is at most `radius_stds`. A mode is covered when its count is at
// least max(1, ceil(min_share · n · wk)): it received some share of what it should get.
ModeCoverage mode_coverage(const GaussianMixture& mixture, const float* x, int64_t n,
                           double radius_stds, double min_share);

// −(1/n) Σi log Σk wk N(xi; μk, σk² I), in nats, with a log-sum-exp over the modes.
double mean_nll(const GaussianMixture& mixture, const float* x, int64_t n);

}  // namespace diffusion
