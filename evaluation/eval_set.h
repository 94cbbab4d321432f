// A dataset file loaded for evaluation: the rows as a float tensor in the networks' layout
// ([N, C, H, W] in [-1, 1] for images, [N, D] for vectors) plus labels and class names.
// Reads the project's dataset format and also the sampler's --save-float files (`x` float32
// [N, H, W, C] in [-1, 1], which are images although stored as `x`).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace diffusion {

struct EvalSet {
  std::string path;
  bool images = false;
  std::vector<int64_t> sample_shape;  // images: {H, W, C}; vectors: {D}
  int64_t num_rows = 0;               // rows in the file (x may hold a subset)
  at::Tensor x;                       // images [N, C, H, W] float32 in [-1, 1]; vectors [N, D]
  at::Tensor labels;                  // [N] int64; undefined when the file has no labels
  int64_t num_classes = 0;
  std::vector<std::string> class_names;

  bool has_labels() const { return labels.defined(); }
  std::string shape_text() const;  // "images 28x28x1" / "vectors of 2"
};

// Loads `path`; `max_rows` > 0 keeps the first max_rows rows. Throws diffusion::Error naming
// the file and key for anything that is not a dataset file.
EvalSet load_eval_set(const std::string& path, int64_t max_rows);

// Rows `rows` (ascending) of `set` as a new set.
EvalSet select_rows(const EvalSet& set, const at::Tensor& rows);

}  // namespace diffusion
