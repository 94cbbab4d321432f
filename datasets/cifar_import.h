// Import of the CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin) into the dataset
// format: images uint8 [N, 32, 32, 3] (HWC) with int64 labels. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset_file.h"

namespace diffusion {

// Which batches to import: the 50 000 training images, the 10 000 test images, or both.
enum class CifarSplit { kTrain, kTest, kAll };

struct CifarImportOptions {
  std::string dir;
  std::string out_path;
  CifarSplit split = CifarSplit::kTrain;
};

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarImageBytes = 3 * kCifarSide * kCifarSide;  // 3072
constexpr int64_t kCifarRecordBytes = 1 + kCifarImageBytes;          // label byte + pixels

CifarSplit parse_cifar_split(const std::string& text);  // "train" | "test" | "all"

// One record's pixels, stored as three 32×32 planes (R, G, B: CHW), into HWC order.
void cifar_chw_to_hwc(const uint8_t* chw, uint8_t* hwc);

// The batch file names of a split, in import order.
std::vector<std::string> cifar_batch_names(CifarSplit split);

// Class names from `<dir>/batches.meta.txt` (one per non-empty line) when present, otherwise
// the standard 10 CIFAR-10 names.
std::vector<std::string> cifar_class_names(const std::string& dir);

// Reads the batches of the split and writes `out_path` (temp name, then rename). A missing
// batch, a file whose size is not a whole number of 3073-byte records, or a label outside the
// class names is an error naming the file.
DatasetInfo import_cifar10(const CifarImportOptions& options);

}  // namespace diffusion
