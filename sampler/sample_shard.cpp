// Shard files, their progress records and the virtual samples.h5 (see sample_shard.h).
#include "core/base/durable_file.h"
#include "sampler/sample_shard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "core/base/h5.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace diffusion {
namespace fs = std::filesystem;
namespace {

constexpr const char* kLabelsKey = "labels";
constexpr const char* kIndicesKey = "indices";

const char* data_key(const ShardLayout& l) { return l.images ? "images" : "x"; }
hid_t data_type(const ShardLayout& l) { return l.images ? H5T_STD_U8LE : H5T_IEEE_F32LE; }
hid_t data_mem_type(const ShardLayout& l) { return l.images ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT; }

std::vector<hsize_t> dims_of(int64_t rows, const std::vector<int64_t>& row_shape) {
  std::vector<hsize_t> d{static_cast<hsize_t>(rows)};
  for (auto s : row_shape) d.push_back(static_cast<hsize_t>(s));
  return d;
}

std::string progress_path(const std::string& shard) { return shard + ".progress"; }


// A contiguous dataset allocated at creation and never filled: rows are written once, in
// place, so writing a batch never touches the file's metadata.
void create_fixed_dataset(hid_t file, const char* name, hid_t type, const std::vector<hsize_t>& dims) {
  H5DataSpace space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  H5PropList dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
  H5_CHECK(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS));
  H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY));
  H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
  H5_CHECK(H5Pset_obj_track_times(dcpl.get(), false));
  H5DataSet d(H5_CHECK(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)));
}

void write_int64_attribute(hid_t object, const char* name, int64_t value) {
  H5DataSpace scalar(H5_CHECK(H5Screate(H5S_SCALAR)));
  H5Attribute a(H5_CHECK(H5Acreate2(object, name, H5T_STD_I64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT)));
  H5_CHECK(H5Awrite(a.get(), H5T_NATIVE_INT64, &value));
}

std::vector<hsize_t> dataset_dims(hid_t dataset) {
  H5DataSpace space(H5_CHECK(H5Dget_space(dataset)));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return dims;
}

// Writes rows [row, row + count) of dataset `name`.
void write_rows(hid_t file, const char* name, hid_t mem_type, int64_t row, int64_t count, const void* data) {
  H5DataSet d(H5_CHECK(H5Dopen2(file, name, H5P_DEFAULT)));
  auto dims = dataset_dims(d.get());
  H5DataSpace file_space(H5_CHECK(H5Dget_space(d.get())));
  std::vector<hsize_t> start(dims.size(), 0), counts = dims;
  start[0] = static_cast<hsize_t>(row);
  counts[0] = static_cast<hsize_t>(count);
  H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, counts.data(), nullptr));
  H5DataSpace mem_space(H5_CHECK(H5Screate_simple(static_cast<int>(counts.size()), counts.data(), nullptr)));
  H5_CHECK(H5Dwrite(d.get(), mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data));
}

}  // namespace

std::string shard_relative_path(int rank, int world_size, int task, int tasks) {
  if (tasks > 1) return fmt::format("shards/task-{:05d}-of-{:05d}/rank-{:05d}-of-{:05d}.h5", task, tasks, rank, world_size);
  return fmt::format("shards/rank-{:05d}-of-{:05d}.h5", rank, world_size);
}

int64_t shard_rows_complete(const std::string& path) {
  std::ifstream in(progress_path(path));
  if (!in) return 0;
  int64_t rows = 0;
  if (!(in >> rows) || rows < 0) throw Error(fmt::format("{}: unreadable progress record", progress_path(path)));
  return rows;
}

struct SampleShard::Impl {
  std::string path;
  ShardLayout layout;
  H5File file;
};

SampleShard::SampleShard(const std::string& path, const ShardLayout& layout) : impl_(std::make_unique<Impl>()) {
  h5_silence_errors();
  impl_->path = path;
  impl_->layout = layout;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    // A progress record without its shard is stale (the shard was removed by hand).
    fs::remove(progress_path(path), ec);
    const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
    {
      H5File f(H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)));
      create_fixed_dataset(f.get(), data_key(layout), data_type(layout), dims_of(layout.rows, layout.row_shape));
      if (layout.has_labels) create_fixed_dataset(f.get(), kLabelsKey, H5T_STD_I64LE, dims_of(layout.rows, {}));
      create_fixed_dataset(f.get(), kIndicesKey, H5T_STD_I64LE, dims_of(layout.rows, {}));
      write_int64_attribute(f.get(), "first_index", layout.first_index);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      throw Error(fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
    }
  }
  impl_->file = H5File(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  if (!impl_->file.valid())
    throw Error(fmt::format("{}: cannot open the shard of an earlier run: {}", path, h5_error_text()));
  // An existing shard must be the one this command would write.
  const auto expect = [&](const char* name, const std::vector<hsize_t>& dims) {
    if (H5Lexists(impl_->file.get(), name, H5P_DEFAULT) <= 0)
      throw Error(fmt::format("{}: no dataset '{}'; this shard belongs to another command", path, name));
    H5DataSet d(H5_CHECK(H5Dopen2(impl_->file.get(), name, H5P_DEFAULT)));
    const auto have = dataset_dims(d.get());
    if (have != dims)
      throw Error(fmt::format("{}: dataset '{}' has shape [{}], expected [{}]", path, name, fmt::join(have, ", "),
                              fmt::join(dims, ", ")));
  };
  expect(data_key(layout), dims_of(layout.rows, layout.row_shape));
  if (layout.has_labels) expect(kLabelsKey, dims_of(layout.rows, {}));
  expect(kIndicesKey, dims_of(layout.rows, {}));
  complete_ = shard_rows_complete(path);
  if (complete_ > layout.rows)
    throw Error(fmt::format("{}: records {} rows complete of {}", progress_path(path), complete_, layout.rows));
}

SampleShard::~SampleShard() = default;

void SampleShard::append(const void* data, const int64_t* labels, const int64_t* indices, int64_t count) {
  const auto& l = impl_->layout;
  if (count <= 0 || complete_ + count > l.rows)
    throw Error(fmt::format("{}: cannot append {} rows after {} of {}", impl_->path, count, complete_, l.rows));
  const hid_t f = impl_->file.get();
  write_rows(f, data_key(l), data_mem_type(l), complete_, count, data);
  if (l.has_labels) write_rows(f, kLabelsKey, H5T_NATIVE_INT64, complete_, count, labels);
  write_rows(f, kIndicesKey, H5T_NATIVE_INT64, complete_, count, indices);
  // Rows reach the file before the record that says they are final.
  H5_CHECK(H5Fflush(f, H5F_SCOPE_LOCAL));
  complete_ += count;
  write_file_atomic(progress_path(impl_->path), fmt::format("{}\n", complete_));
}

void write_virtual_samples(const std::string& out_path, const std::vector<ShardRef>& shards,
                           int64_t num_classes, const std::vector<std::string>& class_names) {
  h5_silence_errors();
  if (shards.empty()) throw Error(fmt::format("{}: no shards to join", out_path));
  const ShardLayout& first = shards.front().layout;
  int64_t total = 0;
  for (const auto& s : shards) {
    if (s.layout.first_index != total)
      throw Error(fmt::format("{}: shard {} starts at {}, expected {}", out_path, s.relative_path,
                              s.layout.first_index, total));
    total += s.layout.rows;
  }
  const std::string tmp = fmt::format("{}.tmp-{}", out_path, ::getpid());
  {
    H5File f(H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)));
    const auto add = [&](const char* name, hid_t type, const std::vector<int64_t>& row_shape) {
      const auto full = dims_of(total, row_shape);
      H5DataSpace space(H5_CHECK(H5Screate_simple(static_cast<int>(full.size()), full.data(), nullptr)));
      H5PropList dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
      for (const auto& s : shards) {
        const auto src_dims = dims_of(s.layout.rows, row_shape);
        H5DataSpace src(H5_CHECK(H5Screate_simple(static_cast<int>(src_dims.size()), src_dims.data(), nullptr)));
        H5DataSpace dst(H5_CHECK(H5Screate_simple(static_cast<int>(full.size()), full.data(), nullptr)));
        std::vector<hsize_t> start(full.size(), 0);
        start[0] = static_cast<hsize_t>(s.layout.first_index);
        H5_CHECK(H5Sselect_hyperslab(dst.get(), H5S_SELECT_SET, start.data(), nullptr, src_dims.data(), nullptr));
        // Stored relative: HDF5 resolves it against the folder of the virtual file.
        H5_CHECK(H5Pset_virtual(dcpl.get(), dst.get(), s.relative_path.c_str(), name, src.get()));
      }
      H5DataSet d(H5_CHECK(H5Dcreate2(f.get(), name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)));
    };
    add(data_key(first), data_type(first), first.row_shape);
    if (first.has_labels) add(kLabelsKey, H5T_STD_I64LE, {});
    add(kIndicesKey, H5T_STD_I64LE, {});
    if (num_classes > 0) write_int64_attribute(f.get(), "num_classes", num_classes);
    if (num_classes > 0 && static_cast<int64_t>(class_names.size()) == num_classes) {
      // As the dataset format stores them: a 1-D array of variable-length strings.
      H5DataType type(H5_CHECK(H5Tcopy(H5T_C_S1)));
      H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
      H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
      const hsize_t count = class_names.size();
      H5DataSpace space(H5_CHECK(H5Screate_simple(1, &count, nullptr)));
      H5Attribute a(H5_CHECK(H5Acreate2(f.get(), "class_names", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)));
      std::vector<const char*> raw;
      for (const auto& name : class_names) raw.push_back(name.c_str());
      H5_CHECK(H5Awrite(a.get(), type.get(), raw.data()));
    }
  }
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(fmt::format("{}: cannot write: {}", out_path, std::strerror(errno)));
  }
}

std::vector<uint8_t> read_first_images(const std::string& path, int64_t count) {
  h5_silence_errors();
  H5File f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f.valid()) throw Error(fmt::format("{}: cannot open: {}", path, h5_error_text()));
  H5DataSet d(H5_CHECK(H5Dopen2(f.get(), "images", H5P_DEFAULT)));
  auto dims = dataset_dims(d.get());
  std::vector<hsize_t> start(dims.size(), 0), counts = dims;
  counts[0] = static_cast<hsize_t>(count);
  size_t elements = 1;
  for (auto c : counts) elements *= c;
  std::vector<uint8_t> out(elements);
  H5DataSpace file_space(H5_CHECK(H5Dget_space(d.get())));
  H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, counts.data(), nullptr));
  H5DataSpace mem_space(H5_CHECK(H5Screate_simple(static_cast<int>(counts.size()), counts.data(), nullptr)));
  H5_CHECK(H5Dread(d.get(), H5T_NATIVE_UINT8, mem_space.get(), file_space.get(), H5P_DEFAULT, out.data()));
  return out;
}

void write_grid_png(const std::string& path, const uint8_t* images, int64_t count, int64_t height,
                    int64_t width, int64_t channels, int64_t columns) {
  const auto cols = columns > 0 ? columns : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(count))));
  const int64_t rows = (count + cols - 1) / cols;
  const int64_t gw = cols * (width + 1) - 1, gh = rows * (height + 1) - 1;
  std::vector<uint8_t> grid(static_cast<size_t>(gw * gh * channels), 0);
  const int64_t image_bytes = height * width * channels;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t x0 = (k % cols) * (width + 1), y0 = (k / cols) * (height + 1);
    for (int64_t y = 0; y < height; ++y)
      std::copy_n(images + k * image_bytes + y * width * channels, width * channels,
                  grid.data() + ((y0 + y) * gw + x0) * channels);
  }
  if (!stbi_write_png(path.c_str(), static_cast<int>(gw), static_cast<int>(gh), static_cast<int>(channels),
                      grid.data(), static_cast<int>(gw * channels)))
    throw Error(fmt::format("{}: cannot write the PNG grid", path));
}

}  // namespace diffusion
