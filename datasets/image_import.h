// Import of a folder of PNG/JPEG files into the dataset format: each image is centre-cropped to
// a square, resized to S×S and stored as RGB, uint8 [N, S, S, 3]; sub-folder names (sorted)
// become the classes. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset_file.h"

namespace diffusion {

struct ImageImportOptions {
  std::string dir;
  std::string out_path;
  int64_t size = 64;
};

// What import_images will read: files in sorted order with their label (-1 when unlabelled).
struct ImageListing {
  std::vector<std::string> files;
  std::vector<int64_t> labels;           // empty when unlabelled
  std::vector<std::string> class_names;  // sorted sub-folder names
};

// Labelled layout: `dir/<class>/**/*.png|jpg|jpeg`, classes sorted by name, sub-folders without
// images skipped. Unlabelled layout: images directly in `dir`. Mixing both is an error, as is a
// folder without images.
ImageListing list_images(const std::string& dir);

// Centre crop of an RGB image `width`×`height` to a square of side min(width, height), then a
// resize to `size`×`size` (copied exactly when no resize is needed). Returns HWC RGB bytes.
std::vector<uint8_t> center_crop_resize(const uint8_t* rgb, int width, int height, int size);

// Decodes one file to RGB (any channel count converted) and crops/resizes it; an unreadable
// file is an error naming it and stb_image's reason.
std::vector<uint8_t> load_image_square(const std::string& path, int size);

DatasetInfo import_images(const ImageImportOptions& options);

}  // namespace diffusion
