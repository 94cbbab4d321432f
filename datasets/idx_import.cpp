// IDX reading (http://yann.lecun.com/exdb/mnist/ "FILE FORMATS"): a 4-byte magic 0x00 0x00
// <type> <rank>, `rank` big-endian uint32 dimensions, then the row-major payload.
#include "datasets/idx_import.h"

#include <fmt/core.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/base/error.h"
#include "core/base/log.h"

namespace diffusion {
namespace {

constexpr uint8_t kUnsignedByteType = 0x08;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads up to `size` bytes; returns how many were read (fewer only at the end of the data).
size_t read_fully(gzFile file, uint8_t* out, size_t size, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    // gzread takes an unsigned count; read in 1 GiB pieces.
    const auto piece = static_cast<unsigned>(std::min<size_t>(size - done, size_t{1} << 30));
    const int got = gzread(file, out + done, piece);
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file, &code);
      throw Error(fmt::format("{}: corrupt gzip data after {} bytes: {}", path, done,
                              message ? message : "unknown zlib error"));
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

const std::vector<std::string> kFashionMnistNames = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

}  // namespace

IdxArray read_idx_file(const std::string& path, int expected_rank) {
  GzFile file(gzopen(path.c_str(), "rb"));
  if (!file) throw Error(fmt::format("cannot open IDX file '{}': {}", path, std::strerror(errno)));
  gzbuffer(file.get(), 1 << 20);

  uint8_t magic[4] = {};
  if (read_fully(file.get(), magic, 4, path) != 4)
    throw Error(fmt::format("{}: truncated IDX file: expected a 4-byte magic number", path));
  if (magic[0] != 0 || magic[1] != 0)
    throw Error(fmt::format("{}: not an IDX file: magic starts with 0x{:02x} 0x{:02x}, expected "
                            "0x00 0x00",
                            path, magic[0], magic[1]));
  if (magic[2] != kUnsignedByteType)
    throw Error(fmt::format("{}: IDX element type 0x{:02x}, expected 0x08 (unsigned byte)", path,
                            magic[2]));
  if (magic[3] != expected_rank)
    throw Error(fmt::format("{}: IDX rank {}, expected {} ({})", path, magic[3], expected_rank,
                            expected_rank == 1 ? "labels [N]" : "images [N, rows, cols]"));

  IdxArray array;
  uint64_t payload = 1;
  for (int d = 0; d < expected_rank; ++d) {
    uint8_t be[4] = {};
    if (read_fully(file.get(), be, 4, path) != 4)
      throw Error(fmt::format("{}: truncated IDX header: expected {} bytes, the file ends inside "
                              "dimension {}",
                              path, 4 + 4 * expected_rank, d));
    const uint32_t dim = (uint32_t{be[0]} << 24) | (uint32_t{be[1]} << 16) |
                         (uint32_t{be[2]} << 8) | uint32_t{be[3]};
    if (dim == 0) throw Error(fmt::format("{}: IDX dimension {} is 0", path, d));
    array.dims.push_back(dim);
    payload *= dim;
  }
  // Rows beyond 2^40 bytes are not MNIST-like; refuse rather than attempt a huge allocation.
  if (payload > (uint64_t{1} << 40))
    throw Error(fmt::format("{}: IDX header promises {} bytes, which is not plausible", path,
                            payload));

  array.data.resize(payload);
  const size_t got = read_fully(file.get(), array.data.data(), payload, path);
  if (got != payload)
    throw Error(fmt::format("{}: truncated IDX data: expected {} bytes after the {}-byte header "
                            "(dims {}), got {}",
                            path, payload, 4 + 4 * expected_rank, fmt::join(array.dims, "x"),
                            got));
  uint8_t extra = 0;
  if (read_fully(file.get(), &extra, 1, path) != 0)
    throw Error(fmt::format("{}: corrupt IDX file: more data than the {} bytes the header "
                            "promises",
                            path, payload));
  return array;
}

std::vector<std::string> default_idx_class_names(const std::string& labels_path) {
  std::string lower(labels_path);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower.find("fashion") != std::string::npos) return kFashionMnistNames;
  std::vector<std::string> digits;
  for (int i = 0; i < 10; ++i) digits.push_back(std::to_string(i));
  return digits;
}

DatasetInfo import_idx(const IdxImportOptions& options) {
  // Refuse an existing output before reading tens of MB (the writer checks again).
  if (std::filesystem::exists(options.out_path))
    throw Error(fmt::format("output '{}' already exists; refusing to overwrite it",
                            options.out_path));
  const IdxArray images = read_idx_file(options.images_path, 3);
  const IdxArray labels = read_idx_file(options.labels_path, 1);
  const int64_t n = images.dims[0];
  if (labels.dims[0] != n)
    throw Error(fmt::format("{}: {} labels, expected {} (the number of images in '{}')",
                            options.labels_path, labels.dims[0], n, options.images_path));

  const std::vector<std::string> names = options.class_names.empty()
                                             ? default_idx_class_names(options.labels_path)
                                             : options.class_names;
  const auto num_classes = static_cast<int64_t>(names.size());
  std::vector<int64_t> label_values(labels.data.begin(), labels.data.end());
  for (size_t i = 0; i < label_values.size(); ++i)
    if (label_values[i] >= num_classes)
      throw Error(fmt::format("{}: label {} of row {} is outside [0, {}) ({} class names)",
                              options.labels_path, label_values[i], i, num_classes, num_classes));

  DatasetSpec spec;
  spec.kind = DataKind::kImages;
  spec.sample_shape = {images.dims[1], images.dims[2], 1};
  spec.has_labels = true;
  spec.num_classes = num_classes;
  spec.class_names = names;
  DatasetWriter writer(options.out_path, spec);
  writer.append_images(images.data.data(), label_values.data(), n);
  writer.commit();
  DatasetInfo info = probe_dataset(options.out_path);
  log0("[data] wrote {}: {}", options.out_path, info.describe());
  return info;
}

}  // namespace diffusion
