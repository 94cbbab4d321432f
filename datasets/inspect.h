// `diffusion-data inspect`: what a dataset file holds (shape, dtype, label histogram, value
// range) and whether the trainer can read it. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset_file.h"

namespace diffusion {

struct InspectReport {
  std::string path;
  bool readable = false;
  std::string reason;  // why not, when !readable
  DatasetInfo info;    // valid when the layout passed validation
  bool layout_ok = false;
  std::vector<int64_t> label_counts;  // [num_classes]
  double min = 0, max = 0, mean = 0;  // over every stored value (pixels or coordinates)
};

// Validates the layout, then scans every row (labels and values, NaN/inf included). Never
// throws for a bad file: the problem becomes the report's reason.
InspectReport inspect_dataset(const std::string& path);

// Human-readable report; the last line is "trainer can read it: yes" or "... no: <reason>".
std::string format_report(const InspectReport& report);

}  // namespace diffusion
