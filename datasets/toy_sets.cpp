// Toy 2-D distributions, each sample drawn from its own keyed stream (core/rng.h).
#include "datasets/toy_sets.h"

#include <fmt/core.h>

#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"

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

DatasetInfo write_toy(const ToyOptions& options) {
  const ToySamples s = make_toy(options);
  DatasetSpec spec;
  spec.kind = DataKind::kVectors;
  spec.sample_shape = {2};
  spec.has_labels = !s.labels.empty();
  spec.num_classes = static_cast<int64_t>(s.class_names.size());
  spec.class_names = s.class_names;
  DatasetWriter writer(options.out_path, spec);
  writer.append_vectors(s.x.data(), spec.has_labels ? s.labels.data() : nullptr, options.num);
  writer.commit();
  DatasetInfo info = probe_dataset(options.out_path);
  log0("[data] wrote {}: {} ({}, seed {})", options.out_path, info.describe(),
       toy_kind_name(options.kind), options.seed);
  return info;
}

}  // namespace diffusion
