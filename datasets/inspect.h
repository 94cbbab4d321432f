// `diffusion-data inspect`: what a dataset file holds (shape, dtype, label histogram, value
// range), which image classes face one way (so that random horizontal flips would put mirrored
// copies off the data), and whether the trainer can read it. Torch-free.
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
  // Images only: per class (one entry, all rows, when unlabelled) the share of rows that face
  // the way the class mean faces. A row x faces that way when <x, m - mirror(m)> > 0 for the
  // class mean m, i.e. when x is nearer m than its mirror image is (ties count half). About 0.5
  // when both orientations are as likely, 1 when every row faces one way; 0.5 for an empty
  // class, which the report does not print. Empty for vectors, and when the class means would
  // take more than kMirrorCheckValues doubles (then mirror_check_skipped).
  std::vector<double> facing_share;
  bool mirror_check_skipped = false;
};

// A class at or above this share faces one way: mirroring it makes images the data never has.
inline constexpr double kFacesOneWay = 0.9;
// The check holds the class sums in doubles (turned into the mirror differences in place): 2^24
// values, 128 MiB at most, enough for 1000 classes of 64x64x3.
inline constexpr int64_t kMirrorCheckValues = int64_t{1} << 24;

// Validates the layout, then scans every row (labels and values, NaN/inf included). Never
// throws for a bad file: the problem becomes the report's reason.
InspectReport inspect_dataset(const std::string& path);

// Human-readable report; the last line is "trainer can read it: yes" or "... no: <reason>".
std::string format_report(const InspectReport& report);

}  // namespace diffusion
