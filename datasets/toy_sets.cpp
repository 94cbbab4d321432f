// Toy 2-D distributions, each sample drawn from its own keyed stream (core/base/rng.h).
#include "datasets/toy_sets.h"

#include <fmt/core.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "core/base/error.h"
#include "core/base/h5.h"
#include "core/base/log.h"
#include "core/base/rng.h"

namespace diffusion {

ToyKind parse_toy_kind(const std::string& text) {
  if (text == "gmm-ring") return ToyKind::kGmmRing;
  if (text == "moons") return ToyKind::kMoons;
  if (text == "swiss-roll") return ToyKind::kSwissRoll;
  throw Error(fmt::format("--kind '{}': expected gmm-ring, moons or swiss-roll", text));
}

const char* toy_kind_name(ToyKind kind) {
  switch (kind) {
    case ToyKind::kGmmRing: return "gmm-ring";
    case ToyKind::kMoons: return "moons";
    case ToyKind::kSwissRoll: return "swiss-roll";
  }
  return "?";
}

void gmm_ring_center(const ToyOptions& options, int64_t mode, double* xy) {
  const double angle = 2.0 * M_PI * static_cast<double>(mode) / static_cast<double>(options.modes);
  xy[0] = options.radius * std::cos(angle);
  xy[1] = options.radius * std::sin(angle);
}

ToySamples make_toy(const ToyOptions& options) {
  if (options.num <= 0) throw Error(fmt::format("--num {}: expected at least 1 sample", options.num));
  if (options.kind == ToyKind::kGmmRing) {
    if (options.modes <= 0) throw Error(fmt::format("--modes {}: expected at least 1", options.modes));
    if (!(options.std > 0) || !std::isfinite(options.std))
      throw Error(fmt::format("--std {}: expected a finite value > 0", options.std));
    if (!std::isfinite(options.radius))
      throw Error(fmt::format("--radius {}: expected a finite value", options.radius));
  } else if (!(options.noise >= 0) || !std::isfinite(options.noise)) {
    throw Error(fmt::format("--noise {}: expected a finite value >= 0", options.noise));
  }

  ToySamples s;
  const auto n = static_cast<size_t>(options.num);
  s.x.resize(2 * n);
  if (options.kind != ToyKind::kSwissRoll) s.labels.resize(n);
  for (size_t i = 0; i < n; ++i) {
    KeyedRng rng(stream_key(options.seed, RngPurpose::kToyData, {static_cast<uint64_t>(i)}));
    double x = 0, y = 0;
    switch (options.kind) {
      case ToyKind::kGmmRing: {
        const auto mode = static_cast<int64_t>(rng.below(static_cast<uint64_t>(options.modes)));
        double c[2];
        gmm_ring_center(options, mode, c);
        x = c[0] + options.std * rng.normal();
        y = c[1] + options.std * rng.normal();
        s.labels[i] = mode;
        break;
      }
      case ToyKind::kMoons: {
        // scikit-learn's make_moons, shifted by (-0.5, -0.25) so the set is centred at 0.
        const int64_t moon = static_cast<int64_t>(rng.below(2));
        const double t = M_PI * rng.uniform();
        x = moon == 0 ? std::cos(t) : 1.0 - std::cos(t);
        y = moon == 0 ? std::sin(t) : 0.5 - std::sin(t);
        x += -0.5 + options.noise * rng.normal();
        y += -0.25 + options.noise * rng.normal();
        s.labels[i] = moon;
        break;
      }
      case ToyKind::kSwissRoll: {
        // The (x, z) plane of scikit-learn's make_swiss_roll, scaled by 1/5 to about [-2, 2].
        const double t = 1.5 * M_PI * (1.0 + 2.0 * rng.uniform());
        x = t * std::cos(t) / 5.0 + options.noise * rng.normal();
        y = t * std::sin(t) / 5.0 + options.noise * rng.normal();
        break;
      }
    }
    s.x[2 * i] = static_cast<float>(x);
    s.x[2 * i + 1] = static_cast<float>(y);
  }
  if (options.kind == ToyKind::kGmmRing)
    for (int64_t k = 0; k < options.modes; ++k) s.class_names.push_back(fmt::format("mode {}", k));
  if (options.kind == ToyKind::kMoons) s.class_names = {"upper moon", "lower moon"};
  return s;
}

GaussianMixture gaussian_mixture_of(const ToyOptions& options) {
  GaussianMixture g;
  g.dim = 2;
  for (int64_t k = 0; k < options.modes; ++k) {
    double c[2];
    gmm_ring_center(options, k, c);
    g.means.insert(g.means.end(), {c[0], c[1]});
    g.stds.push_back(options.std);
    g.weights.push_back(1.0 / static_cast<double>(options.modes));
  }
  return g;
}

namespace {

constexpr const char* kGmmMeansAttr = "gmm_means";
constexpr const char* kGmmStdAttr = "gmm_std";
constexpr const char* kGmmWeightsAttr = "gmm_weights";

void write_double_attribute(hid_t file, const char* name, const std::vector<double>& values,
                            const std::vector<hsize_t>& dims) {
  H5DataSpace space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  H5Attribute attr(H5_CHECK(H5Acreate2(file, name, H5T_IEEE_F64LE, space.get(), H5P_DEFAULT,
                                       H5P_DEFAULT)));
  H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, values.data()));
}

// Reads a float attribute as doubles with its dimensions ({} for a scalar).
std::vector<double> read_double_attribute(hid_t file, const std::string& path, const char* name,
                                          std::vector<hsize_t>* dims) {
  H5Attribute attr(H5Aopen(file, name, H5P_DEFAULT));
  if (!attr.valid()) throw Error(fmt::format("{}: attribute '{}' could not be opened", path, name));
  H5DataType type(H5_CHECK(H5Aget_type(attr.get())));
  if (H5Tget_class(type.get()) != H5T_FLOAT)
    throw Error(fmt::format("{}: attribute '{}' must be float64", path, name));
  H5DataSpace space(H5_CHECK(H5Aget_space(attr.get())));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  dims->assign(static_cast<size_t>(rank), 0);
  if (rank > 0) H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims->data(), nullptr));
  std::vector<double> values(static_cast<size_t>(H5_CHECK(H5Sget_simple_extent_npoints(space.get()))));
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, values.data()));
  return values;
}

}  // namespace

DatasetInfo write_toy(const ToyOptions& options) {
  const ToySamples s = make_toy(options);
  DatasetSpec spec;
  spec.kind = DataKind::kVectors;
  spec.sample_shape = {2};
  spec.has_labels = !s.labels.empty();
  spec.num_classes = static_cast<int64_t>(s.class_names.size());
  spec.class_names = s.class_names;
  std::error_code ec;
  if (std::filesystem::exists(options.out_path, ec) || std::filesystem::is_symlink(options.out_path, ec))
    throw Error(fmt::format("output '{}' already exists; refusing to overwrite it (remove it or "
                            "choose another --out)",
                            options.out_path));
  // The mixture attributes go into the committed file before it gets its final name, so the
  // output appears complete or not at all.
  const std::string staged = fmt::format("{}.toy-{}", options.out_path, ::getpid());
  try {
    DatasetWriter writer(staged, spec);
    writer.append_vectors(s.x.data(), spec.has_labels ? s.labels.data() : nullptr, options.num);
    writer.commit();
    if (options.kind == ToyKind::kGmmRing) {
      h5_silence_errors();
      const GaussianMixture g = gaussian_mixture_of(options);
      H5File file(H5Fopen(staged.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
      if (!file.valid())
        throw Error(fmt::format("cannot reopen '{}' to add the mixture attributes: {}", staged,
                                h5_error_text()));
      const auto m = static_cast<hsize_t>(g.modes());
      write_double_attribute(file.get(), kGmmMeansAttr, g.means, {m, 2});
      write_double_attribute(file.get(), kGmmStdAttr, g.stds, {m});
      write_double_attribute(file.get(), kGmmWeightsAttr, g.weights, {m});
    }
    std::filesystem::rename(staged, options.out_path);
  } catch (...) {
    std::filesystem::remove(staged, ec);
    throw;
  }
  DatasetInfo info = probe_dataset(options.out_path);
  log0("[data] wrote {}: {} ({}, seed {})", options.out_path, info.describe(),
       toy_kind_name(options.kind), options.seed);
  return info;
}

bool read_gaussian_mixture(const std::string& path, GaussianMixture* mixture) {
  h5_silence_errors();
  H5File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) throw Error(fmt::format("cannot open HDF5 file '{}': {}", path, h5_error_text()));
  const char* names[] = {kGmmMeansAttr, kGmmStdAttr, kGmmWeightsAttr};
  int present = 0;
  for (const char* name : names) present += H5Aexists(file.get(), name) > 0 ? 1 : 0;
  if (present == 0) return false;
  for (const char* name : names)
    if (H5Aexists(file.get(), name) <= 0)
      throw Error(fmt::format("{}: has mixture attributes but not '{}' (expected gmm_means [M, D], "
                              "gmm_std [M] and gmm_weights [M], see docs/formats.md)",
                              path, name));
  GaussianMixture g;
  std::vector<hsize_t> dims;
  g.means = read_double_attribute(file.get(), path, kGmmMeansAttr, &dims);
  if (dims.size() != 2 || dims[0] == 0 || dims[1] == 0)
    throw Error(fmt::format("{}: attribute '{}' must have shape [M, D] with M, D >= 1", path,
                            kGmmMeansAttr));
  const auto m = static_cast<size_t>(dims[0]);
  g.dim = static_cast<int64_t>(dims[1]);
  g.stds = read_double_attribute(file.get(), path, kGmmStdAttr, &dims);
  if (g.stds.size() == 1) g.stds.assign(m, g.stds[0]);  // one std for every mode
  if (g.stds.size() != m)
    throw Error(fmt::format("{}: attribute '{}' has {} values, expected 1 or M = {}", path,
                            kGmmStdAttr, g.stds.size(), m));
  g.weights = read_double_attribute(file.get(), path, kGmmWeightsAttr, &dims);
  if (g.weights.size() != m)
    throw Error(fmt::format("{}: attribute '{}' has {} values, expected M = {}", path,
                            kGmmWeightsAttr, g.weights.size(), m));
  double total = 0;
  for (size_t k = 0; k < m; ++k) {
    if (!(g.stds[k] > 0) || !std::isfinite(g.stds[k]))
      throw Error(fmt::format("{}: attribute '{}' value {} is {}, expected a finite value > 0",
                              path, kGmmStdAttr, k, g.stds[k]));
    if (!(g.weights[k] >= 0) || !std::isfinite(g.weights[k]))
      throw Error(fmt::format("{}: attribute '{}' value {} is {}, expected a finite value >= 0",
                              path, kGmmWeightsAttr, k, g.weights[k]));
    total += g.weights[k];
  }
  if (std::abs(total - 1.0) > 1e-6)
    throw Error(fmt::format("{}: attribute '{}' sums to {}, expected 1", path, kGmmWeightsAttr, total));
  *mixture = std::move(g);
  return true;
}

}  // namespace diffusion
