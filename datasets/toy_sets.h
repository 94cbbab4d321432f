// Deterministic 2-D toy sets for fast experiments: a ring of Gaussians, two moons and a 2-D
// swiss roll, written as vectors `x` float32 [N, 2]. A gmm-ring file also carries its mixture
// (attributes gmm_means, gmm_std, gmm_weights) so evaluation can score samples against the
// true density. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset_file.h"

namespace diffusion {

enum class ToyKind { kGmmRing, kMoons, kSwissRoll };

struct ToyOptions {
  ToyKind kind = ToyKind::kGmmRing;
  int64_t num = 10000;
  uint64_t seed = 0;
  std::string out_path;
  // gmm-ring: `modes` equal-weight Gaussians of std `std` centred on a circle of `radius`.
  int64_t modes = 8;
  double radius = 2.0;
  double std = 0.15;
  // moons and swiss-roll: std of the isotropic Gaussian noise added to each point.
  double noise = 0.05;
};

ToyKind parse_toy_kind(const std::string& text);  // "gmm-ring" | "moons" | "swiss-roll"
const char* toy_kind_name(ToyKind kind);

struct ToySamples {
  std::vector<float> x;          // [num, 2]
  std::vector<int64_t> labels;   // [num]; empty for swiss-roll
  std::vector<std::string> class_names;
};

// Sample i depends only on (seed, i): stream_key(seed, kToyData, {i}), so a set of N points is
// a prefix of the set of N + 1 points.
ToySamples make_toy(const ToyOptions& options);

// Centre of gmm-ring mode k: radius·(cos 2πk/M, sin 2πk/M).
void gmm_ring_center(const ToyOptions& options, int64_t mode, double* xy);

// Writes the set to options.out_path (temporary name, then rename); gmm-ring files get the
// mixture attributes of gaussian_mixture_of().
DatasetInfo write_toy(const ToyOptions& options);

// An isotropic Gaussian mixture in D dimensions: component k has mean means[k·D .. k·D+D),
// standard deviation stds[k] in every dimension and weight weights[k] (Σ weights = 1).
struct GaussianMixture {
  int64_t dim = 0;
  std::vector<double> means;    // [M, D]
  std::vector<double> stds;     // [M]
  std::vector<double> weights;  // [M]
  int64_t modes() const { return static_cast<int64_t>(weights.size()); }
};

// The mixture that make_toy samples for gmm-ring options.
GaussianMixture gaussian_mixture_of(const ToyOptions& options);

// Reads the file attributes gmm_means float64 [M, D], gmm_std float64 (scalar or [M]) and
// gmm_weights float64 [M] of `path`. Returns false when the file has none of them (an older or
// non-mixture file); throws diffusion::Error naming the file and attribute when they are
// incomplete or inconsistent (missing one, wrong shape, std <= 0, weights not summing to 1).
bool read_gaussian_mixture(const std::string& path, GaussianMixture* mixture);

}  // namespace diffusion
