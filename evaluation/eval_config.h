// What diffusion-eval was asked to do, as a plain struct (filled by eval_options.cpp, the only
// Boost file of the program). Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace diffusion {

struct ClassifierSettings {
  uint64_t seed = 0;             // weights, split and batch order
  int64_t train_rows = 20000;    // at most this many reference rows train it
  int64_t epochs = 3;
  int64_t batch_size = 64;
  double learning_rate = 2e-3;   // Adam
  double heldout_fraction = 0.1; // of the reference, never trained on (at most 10000 rows)
};

struct EvalConfig {
  std::string samples;    // --samples S.h5
  std::string reference;  // --reference R.h5
  std::string json_out;   // --json OUT.json; empty: stdout only
  std::string features;   // --features model.pt: TorchScript feature net for the distance
  std::string classifier_cache;  // --classifier-cache PATH; empty: next to the reference
  bool retrain = false;          // --retrain: ignore a cached classifier
  ClassifierSettings classifier;
  int64_t max_reference_rows = 20000;  // rows of the reference in the distance; 0 = all
  int64_t max_sample_rows = 0;         // 0 = all
  int64_t batch_size = 256;            // rows per forward pass
  // 2-D mixture fallback when the reference has no gmm_* attributes (a ring like make-toy's).
  std::optional<int64_t> gmm_modes;
  double gmm_radius = 2.0;
  std::optional<double> gmm_std;
  double coverage_radius = 3.0;  // a sample counts for a mode within this many stds
  double coverage_share = 0.1;   // a mode is covered with >= this share of its expected count
  int threads = 0;               // intra-op threads; 0 = LibTorch's default
};

}  // namespace diffusion
