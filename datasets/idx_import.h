// Import of MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST ...), gzipped or not, into the
// dataset format: images uint8 [N, H, W, 1] with int64 labels. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset_file.h"

namespace diffusion {

struct IdxImportOptions {
  std::string images_path;
  std::string labels_path;
  std::string out_path;
  // Empty: chosen by default_idx_class_names from the labels path.
  std::vector<std::string> class_names;
};

// One IDX file: unsigned-byte payload (type 0x08) with its dimensions.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads an IDX file (gzip or plain; zlib reads both). Throws diffusion::Error naming the file
// on a bad magic, an unsupported element type, a rank other than `expected_rank`, or a payload
// shorter or longer than the header promises (with the expected byte count).
IdxArray read_idx_file(const std::string& path, int expected_rank);

// The 10 Fashion-MNIST names when the labels path contains "fashion" (any case), otherwise
// the digits "0".."9".
std::vector<std::string> default_idx_class_names(const std::string& labels_path);

// Reads both files, checks that they agree, and writes `out_path` (temp name, then rename).
DatasetInfo import_idx(const IdxImportOptions& options);

}  // namespace diffusion
