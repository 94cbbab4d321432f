// The feature network of diffusion-eval: a small classifier trained on the labelled reference
// set (a CNN for images, an MLP for vectors) whose penultimate layer is the feature space of
// the Fréchet distance and whose predictions give the samples' class histogram and accuracy.
// Training is seeded and short; the trained weights are cached next to the reference
// (R.h5 -> R.classifier.pt + R.classifier.json) and reused while the reference file (size,
// mtime), its shape and the training settings are unchanged.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "evaluation/eval_config.h"
#include "evaluation/eval_set.h"

namespace diffusion {

struct ClassifierInfo {
  std::string cache_path;    // the .pt file
  bool reused = false;       // loaded from the cache instead of trained
  bool cached = false;       // the cache holds this classifier now (false: could not write)
  std::string architecture;  // e.g. "cnn(16,32)-128" or "mlp-64-64"
  int64_t feature_dim = 0;
  int64_t train_rows = 0;
  int64_t heldout_rows = 0;
  double heldout_accuracy = 0;  // on reference rows never trained on
  double train_seconds = 0;     // 0 when reused
};

// "R.classifier.pt" for "R.h5" (the extension replaced), in the reference's folder.
std::string default_classifier_cache(const std::string& reference_path);

class FeatureClassifier {
 public:
  // Loads the cached classifier of `reference` from `cache_path` when it is valid for it and
  // these settings (and `retrain` is false), else trains one and writes the cache (a warning,
  // not an error, when the folder is read-only). The reference must have labels.
  FeatureClassifier(const EvalSet& reference, const ClassifierSettings& settings,
                    const std::string& cache_path, bool retrain);
  ~FeatureClassifier();
  FeatureClassifier(const FeatureClassifier&) = delete;
  FeatureClassifier& operator=(const FeatureClassifier&) = delete;

  const ClassifierInfo& info() const;

  // Penultimate-layer features [N, F] float32 of x (the EvalSet layout), batch by batch.
  at::Tensor features(const at::Tensor& x, int64_t batch_size) const;
  // Predicted classes [N] int64.
  at::Tensor predict(const at::Tensor& x, int64_t batch_size) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffusion
