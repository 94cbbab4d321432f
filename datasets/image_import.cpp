// Folder-of-images import on stb_image (decoding) and stb_image_resize (resampling); the stb
// implementations are compiled here and only here.
#include "datasets/image_import.h"

#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>

#include "core/base/error.h"
#include "core/base/log.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#include <stb_image.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>

namespace diffusion {
namespace {

namespace fs = std::filesystem;

// Decoded images are appended in groups of this many to bound memory on large folders.
constexpr int64_t kImagesPerAppend = 256;

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Image files under `dir` (recursively when `recursive`), sorted by path so that the order,
// and thus the file, does not depend on the file system's directory order.
std::vector<std::string> image_files(const fs::path& dir, bool recursive) {
  std::vector<std::string> files;
  auto consider = [&](const fs::directory_entry& entry) {
    if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path().string());
  };
  if (recursive) {
    for (const auto& entry : fs::recursive_directory_iterator(dir)) consider(entry);
  } else {
    for (const auto& entry : fs::directory_iterator(dir)) consider(entry);
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

ImageListing list_images(const std::string& dir) {
  if (!fs::is_directory(dir))
    throw Error(fmt::format("image folder '{}' does not exist or is not a folder", dir));
  ImageListing listing;
  const std::vector<std::string> root_files = image_files(dir, /*recursive=*/false);

  std::vector<std::string> class_dirs;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory()) class_dirs.push_back(entry.path().filename().string());
  std::sort(class_dirs.begin(), class_dirs.end());

  for (const auto& name : class_dirs) {
    const std::vector<std::string> files = image_files(fs::path(dir) / name, /*recursive=*/true);
    if (files.empty()) {
      log0("[data] skipping sub-folder '{}/{}': no PNG or JPEG files", dir, name);
      continue;
    }
    const auto label = static_cast<int64_t>(listing.class_names.size());
    listing.class_names.push_back(name);
    for (const auto& file : files) {
      listing.files.push_back(file);
      listing.labels.push_back(label);
    }
  }
  if (!root_files.empty() && !listing.class_names.empty())
    throw Error(fmt::format("image folder '{}' has images both directly inside ({} files, e.g. "
                            "'{}') and in class sub-folders; expected one layout: all images in "
                            "sub-folders (labelled) or all directly inside (unlabelled)",
                            dir, root_files.size(), root_files.front()));
  if (listing.class_names.empty()) listing.files = root_files;
  if (listing.files.empty())
    throw Error(fmt::format("image folder '{}' has no PNG or JPEG files (expected *.png, *.jpg "
                            "or *.jpeg directly inside or in class sub-folders)",
                            dir));
  return listing;
}

std::vector<uint8_t> center_crop_resize(const uint8_t* rgb, int width, int height, int size) {
  const int side = std::min(width, height);
  const int x0 = (width - side) / 2;
  const int y0 = (height - side) / 2;
  const uint8_t* crop = rgb + (static_cast<size_t>(y0) * width + x0) * 3;
  const int stride = width * 3;
  std::vector<uint8_t> out(static_cast<size_t>(size) * size * 3);
  if (side == size) {
    for (int y = 0; y < size; ++y)
      std::copy_n(crop + static_cast<size_t>(y) * stride, static_cast<size_t>(size) * 3,
                  out.data() + static_cast<size_t>(y) * size * 3);
    return out;
  }
  // sRGB-aware resampling: averaging in linear light keeps downscaled edges from darkening.
  if (!stbir_resize_uint8_srgb(crop, side, side, stride, out.data(), size, size, 0, 3,
                               STBIR_ALPHA_CHANNEL_NONE, 0))
    throw Error(fmt::format("resizing a {}x{} crop to {}x{} failed", side, side, size, size));
  return out;
}

std::vector<uint8_t> load_image_square(const std::string& path, int size) {
  int width = 0, height = 0, channels = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> pixels(
      stbi_load(path.c_str(), &width, &height, &channels, 3), stbi_image_free);
  if (!pixels)
    throw Error(fmt::format("cannot read image '{}': {} (expected a PNG or JPEG file)", path,
                            stbi_failure_reason() ? stbi_failure_reason() : "unknown error"));
  return center_crop_resize(pixels.get(), width, height, size);
}

DatasetInfo import_images(const ImageImportOptions& options) {
  if (options.size <= 0 || options.size > 4096)
    throw Error(fmt::format("--size {}: expected a side length in [1, 4096]", options.size));
  if (fs::exists(options.out_path))
    throw Error(fmt::format("output '{}' already exists; refusing to overwrite it",
                            options.out_path));
  const ImageListing listing = list_images(options.dir);
  const bool labelled = !listing.class_names.empty();
  const int size = static_cast<int>(options.size);

  DatasetSpec spec;
  spec.kind = DataKind::kImages;
  spec.sample_shape = {options.size, options.size, 3};
  spec.has_labels = labelled;
  spec.num_classes = static_cast<int64_t>(listing.class_names.size());
  spec.class_names = listing.class_names;
  DatasetWriter writer(options.out_path, spec);

  const int64_t image_bytes = options.size * options.size * 3;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  auto flush = [&]() {
    const auto rows = static_cast<int64_t>(pixels.size()) / image_bytes;
    writer.append_images(pixels.data(), labelled ? labels.data() : nullptr, rows);
    pixels.clear();
    labels.clear();
  };
  for (size_t i = 0; i < listing.files.size(); ++i) {
    const std::vector<uint8_t> image = load_image_square(listing.files[i], size);
    pixels.insert(pixels.end(), image.begin(), image.end());
    if (labelled) labels.push_back(listing.labels[i]);
    if (static_cast<int64_t>(pixels.size()) >= kImagesPerAppend * image_bytes) flush();
  }
  if (!pixels.empty()) flush();
  writer.commit();
  DatasetInfo info = probe_dataset(options.out_path);
  log0("[data] wrote {}: {}", options.out_path, info.describe());
  return info;
}

}  // namespace diffusion
