// The HDF5 dataset format (docs/formats.md): validation on open, batched row reads for arbitrary
// index lists, and the temp-name-then-rename writer.
#include "datasets/dataset_file.h"

#include <fmt/core.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <numeric>
#include <utility>

#include "core/base/error.h"
#include "core/base/h5.h"

namespace diffusion {
namespace {

constexpr const char* kImagesKey = "images";
constexpr const char* kVectorsKey = "x";
constexpr const char* kLabelsKey = "labels";
constexpr const char* kNumClassesAttr = "num_classes";
constexpr const char* kClassNamesAttr = "class_names";

// Raw chunk cache per dataset: big enough to hold many 1 MiB chunks, so that the random
// batches of an epoch mostly hit chunks already decoded. The slot count is a prime well above
// the number of chunks that fit, as the HDF5 guide recommends.
constexpr size_t kChunkCacheBytes = 64u << 20;
constexpr size_t kChunkCacheSlots = 12421;
constexpr int64_t kTargetChunkBytes = 1 << 20;
// Label range checks read the labels in blocks of this many rows to bound memory.
constexpr int64_t kLabelBlockRows = 1 << 20;

const char* kind_key(DataKind kind) { return kind == DataKind::kImages ? kImagesKey : kVectorsKey; }

std::string shape_text(const std::vector<int64_t>& dims) {
  return fmt::format("[{}]", fmt::join(dims, ", "));
}

std::string type_text(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    return fmt::format("{}int{}", is_signed ? "" : "u", size * 8);
  }
  if (cls == H5T_FLOAT) return fmt::format("float{}", size * 8);
  if (cls == H5T_STRING) return "string";
  return "a non-numeric type";
}

bool is_uint8(hid_t type) {
  return H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 1 &&
         H5Tget_sign(type) == H5T_SGN_NONE;
}
bool is_float32(hid_t type) { return H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 4; }
bool is_int64(hid_t type) {
  return H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 8 &&
         H5Tget_sign(type) == H5T_SGN_2;
}

bool link_exists(hid_t file, const char* name) { return H5Lexists(file, name, H5P_DEFAULT) > 0; }

std::vector<int64_t> dataspace_dims(hid_t dataset) {
  H5DataSpace space(H5_CHECK(H5Dget_space(dataset)));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return std::vector<int64_t>(dims.begin(), dims.end());
}

H5DataSet open_dataset(hid_t file, const char* name) {
  // Per-dataset chunk cache (the file default is 1 MiB, about one chunk of ours).
  H5PropList dapl(H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS)));
  H5_CHECK(H5Pset_chunk_cache(dapl.get(), kChunkCacheSlots, kChunkCacheBytes, 1.0));
  return H5DataSet(H5_CHECK(H5Dopen2(file, name, dapl.get())));
}

// Reads the file attribute `num_classes`: any integer scalar (int64 is what we write).
int64_t read_num_classes(hid_t file, const std::string& path) {
  H5Attribute attr(H5Aopen(file, kNumClassesAttr, H5P_DEFAULT));
  if (!attr.valid())
    throw Error(fmt::format("{}: attribute '{}' could not be opened", path, kNumClassesAttr));
  H5DataType type(H5_CHECK(H5Aget_type(attr.get())));
  H5DataSpace space(H5_CHECK(H5Aget_space(attr.get())));
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Sget_simple_extent_npoints(space.get()) != 1)
    throw Error(fmt::format("{}: attribute '{}' must be one integer (int64), found {} with {} values",
                            path, kNumClassesAttr, type_text(type.get()),
                            H5Sget_simple_extent_npoints(space.get())));
  int64_t value = 0;
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value));
  return value;
}

// Reads `class_names`: a 1-D array of variable- or fixed-length strings (we write variable
// length, UTF-8; h5py and other tools may write either).
std::vector<std::string> read_class_names(hid_t file, const std::string& path) {
  H5Attribute attr(H5Aopen(file, kClassNamesAttr, H5P_DEFAULT));
  if (!attr.valid())
    throw Error(fmt::format("{}: attribute '{}' could not be opened", path, kClassNamesAttr));
  H5DataType type(H5_CHECK(H5Aget_type(attr.get())));
  if (H5Tget_class(type.get()) != H5T_STRING)
    throw Error(fmt::format("{}: attribute '{}' must be an array of strings, found {}", path,
                            kClassNamesAttr, type_text(type.get())));
  H5DataSpace space(H5_CHECK(H5Aget_space(attr.get())));
  const auto count = static_cast<size_t>(H5_CHECK(H5Sget_simple_extent_npoints(space.get())));
  std::vector<std::string> names;
  names.reserve(count);
  if (H5Tis_variable_str(type.get()) > 0) {
    H5DataType mem(H5_CHECK(H5Tcopy(H5T_C_S1)));
    H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
    H5_CHECK(H5Tset_cset(mem.get(), H5Tget_cset(type.get())));
    std::vector<char*> raw(count, nullptr);
    H5_CHECK(H5Aread(attr.get(), mem.get(), raw.data()));
    for (char* s : raw) names.emplace_back(s ? s : "");
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, raw.data());
  } else {
    const size_t width = H5Tget_size(type.get());
    std::vector<char> raw(count * width);
    H5_CHECK(H5Aread(attr.get(), type.get(), raw.data()));
    for (size_t i = 0; i < count; ++i) {
      const char* s = raw.data() + i * width;
      names.emplace_back(s, strnlen(s, width));  // null- or space-padded
      while (!names.back().empty() && names.back().back() == ' ') names.back().pop_back();
    }
  }
  return names;
}

struct OpenedFile {
  H5File file;
  H5DataSet data;
  H5DataSet labels;
  DatasetInfo info;
};

// Every check of the format in one place; the reader and probe_dataset share it.
OpenedFile open_and_validate(const std::string& path) {
  h5_silence_errors();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error(fmt::format("dataset file '{}' does not exist", path));
  if (std::filesystem::is_directory(path, ec))
    throw Error(fmt::format("dataset file '{}' is a directory, expected an HDF5 file", path));
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw Error(fmt::format("'{}' is not an HDF5 file (expected a dataset written by "
                            "diffusion-data or the sampler, see docs/formats.md)",
                            path));
  OpenedFile f;
  f.file = H5File(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f.file.valid())
    throw Error(fmt::format("cannot open HDF5 file '{}': {}", path, h5_error_text()));

  const bool has_images = link_exists(f.file.get(), kImagesKey);
  const bool has_vectors = link_exists(f.file.get(), kVectorsKey);
  if (!has_images && !has_vectors)
    throw Error(fmt::format("{}: neither dataset 'images' (uint8 [N, H, W, C]) nor 'x' "
                            "(float32 [N, D]) is present",
                            path));
  if (has_images && has_vectors)
    throw Error(fmt::format("{}: both datasets 'images' and 'x' are present; a file holds "
                            "exactly one of them",
                            path));

  DatasetInfo& info = f.info;
  info.path = path;
  info.kind = has_images ? DataKind::kImages : DataKind::kVectors;
  const char* key = kind_key(info.kind);
  f.data = open_dataset(f.file.get(), key);
  {
    H5DataType type(H5_CHECK(H5Dget_type(f.data.get())));
    const auto dims = dataspace_dims(f.data.get());
    if (info.kind == DataKind::kImages) {
      if (dims.size() != 4)
        throw Error(fmt::format("{}: dataset 'images' has rank {} (shape {}), expected rank 4 "
                                "[N, H, W, C]",
                                path, dims.size(), shape_text(dims)));
      if (!is_uint8(type.get()))
        throw Error(fmt::format("{}: dataset 'images' has dtype {}, expected uint8", path,
                                type_text(type.get())));
    } else {
      if (dims.size() != 2)
        throw Error(fmt::format("{}: dataset 'x' has rank {} (shape {}), expected rank 2 [N, D]",
                                path, dims.size(), shape_text(dims)));
      if (!is_float32(type.get()))
        throw Error(fmt::format("{}: dataset 'x' has dtype {}, expected float32", path,
                                type_text(type.get())));
    }
    if (dims[0] == 0)
      throw Error(fmt::format("{}: dataset '{}' has N = 0 rows (shape {}); a dataset needs at "
                              "least one sample",
                              path, key, shape_text(dims)));
    for (size_t d = 1; d < dims.size(); ++d)
      if (dims[d] == 0)
        throw Error(fmt::format("{}: dataset '{}' has an empty sample dimension (shape {})", path,
                                key, shape_text(dims)));
    info.num_samples = dims[0];
    info.sample_shape.assign(dims.begin() + 1, dims.end());
  }

  info.has_labels = link_exists(f.file.get(), kLabelsKey);
  if (info.has_labels) {
    f.labels = open_dataset(f.file.get(), kLabelsKey);
    H5DataType type(H5_CHECK(H5Dget_type(f.labels.get())));
    const auto dims = dataspace_dims(f.labels.get());
    if (dims.size() != 1)
      throw Error(fmt::format("{}: dataset 'labels' has rank {} (shape {}), expected rank 1 [N]",
                              path, dims.size(), shape_text(dims)));
    if (!is_int64(type.get()))
      throw Error(fmt::format("{}: dataset 'labels' has dtype {}, expected int64", path,
                              type_text(type.get())));
    if (dims[0] != info.num_samples)
      throw Error(fmt::format("{}: dataset 'labels' has {} entries, expected {} (one per row of "
                              "'{}')",
                              path, dims[0], info.num_samples, key));
    if (H5Aexists(f.file.get(), kNumClassesAttr) <= 0)
      throw Error(fmt::format("{}: the file has 'labels' but no attribute 'num_classes' "
                              "(expected an int64 > 0)",
                              path));
    info.num_classes = read_num_classes(f.file.get(), path);
    if (info.num_classes <= 0)
      throw Error(fmt::format("{}: attribute 'num_classes' is {}, expected > 0", path,
                              info.num_classes));
    if (H5Aexists(f.file.get(), kClassNamesAttr) > 0) {
      info.class_names = read_class_names(f.file.get(), path);
      if (static_cast<int64_t>(info.class_names.size()) != info.num_classes)
        throw Error(fmt::format("{}: attribute 'class_names' has {} names, expected num_classes "
                                "= {}",
                                path, info.class_names.size(), info.num_classes));
    }
    // Every label in [0, num_classes): a bad label would index past the class embedding.
    std::vector<int64_t> block;
    for (int64_t begin = 0; begin < info.num_samples; begin += kLabelBlockRows) {
      const int64_t end = std::min(info.num_samples, begin + kLabelBlockRows);
      block.resize(static_cast<size_t>(end - begin));
      const hsize_t start = static_cast<hsize_t>(begin);
      const hsize_t count = static_cast<hsize_t>(end - begin);
      H5DataSpace file_space(H5_CHECK(H5Dget_space(f.labels.get())));
      H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count,
                                   nullptr));
      H5DataSpace mem_space(H5_CHECK(H5Screate_simple(1, &count, nullptr)));
      H5_CHECK(H5Dread(f.labels.get(), H5T_NATIVE_INT64, mem_space.get(), file_space.get(),
                       H5P_DEFAULT, block.data()));
      for (size_t i = 0; i < block.size(); ++i)
        if (block[i] < 0 || block[i] >= info.num_classes)
          throw Error(fmt::format("{}: dataset 'labels' row {} is {}, expected a value in [0, {}) "
                                  "(num_classes = {})",
                                  path, begin + static_cast<int64_t>(i), block[i],
                                  info.num_classes, info.num_classes));
    }
  }
  return f;
}

// Sorted, de-duplicated rows cut into maximal runs of consecutive indices.
struct Run {
  int64_t begin;
  int64_t count;
};

std::vector<Run> make_runs(const std::vector<int64_t>& unique_sorted) {
  std::vector<Run> runs;
  for (int64_t row : unique_sorted) {
    if (!runs.empty() && runs.back().begin + runs.back().count == row)
      ++runs.back().count;
    else
      runs.push_back({row, 1});
  }
  return runs;
}

void check_finite(const float* values, int64_t rows, int64_t row_elements,
                  const std::function<int64_t(int64_t)>& file_row, const std::string& path) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = values + r * row_elements;
    for (int64_t e = 0; e < row_elements; ++e)
      if (!std::isfinite(row[e]))
        throw Error(fmt::format("{}: dataset 'x' row {} column {} is {}, expected a finite "
                                "float32",
                                path, file_row(r), e, row[e]));
  }
}

}  // namespace

// --- DatasetInfo -----------------------------------------------------------------------------

int64_t DatasetInfo::sample_elements() const {
  return std::accumulate(sample_shape.begin(), sample_shape.end(), int64_t{1},
                         std::multiplies<int64_t>());
}

std::string DatasetInfo::describe() const {
  std::vector<int64_t> dims{num_samples};
  dims.insert(dims.end(), sample_shape.begin(), sample_shape.end());
  std::string text = fmt::format("{} {} {}", kind_key(kind),
                                 kind == DataKind::kImages ? "uint8" : "float32", shape_text(dims));
  if (has_labels)
    text += fmt::format(", {} classes", num_classes);
  else
    text += ", unlabelled";
  return text;
}

DatasetInfo probe_dataset(const std::string& path) { return open_and_validate(path).info; }

// --- DatasetReader ---------------------------------------------------------------------------

struct DatasetReader::Impl {
  OpenedFile f;
  std::vector<uint8_t> gather;  // rows in sorted unique order, before scattering

  void require_kind(DataKind kind, const char* what) const {
    if (f.info.kind != kind)
      throw Error(fmt::format("{}: {} called, but the file holds '{}', not '{}'", f.info.path,
                              what, kind_key(f.info.kind), kind_key(kind)));
  }
  void require_labels(const char* what) const {
    if (!f.info.has_labels)
      throw Error(fmt::format("{}: {} called, but the file has no dataset 'labels'", f.info.path,
                              what));
  }
  void check_range(int64_t begin, int64_t end) const {
    if (begin < 0 || end < begin || end > f.info.num_samples)
      throw Error(fmt::format("{}: row range [{}, {}) is outside [0, {})", f.info.path, begin, end,
                              f.info.num_samples));
  }

  // Reads rows [begin, end) of `dataset` into `out`.
  void read_range(hid_t dataset, hid_t mem_type, int64_t begin, int64_t end, void* out) const {
    check_range(begin, end);
    if (begin == end) return;
    H5DataSpace file_space(H5_CHECK(H5Dget_space(dataset)));
    const int rank = H5_CHECK(H5Sget_simple_extent_ndims(file_space.get()));
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5_CHECK(H5Sget_simple_extent_dims(file_space.get(), dims.data(), nullptr));
    std::vector<hsize_t> start(dims.size(), 0), count = dims;
    start[0] = static_cast<hsize_t>(begin);
    count[0] = static_cast<hsize_t>(end - begin);
    H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                 count.data(), nullptr));
    // A memory space of the selection's own shape keeps HDF5 on its fast copy path.
    H5DataSpace mem_space(H5_CHECK(H5Screate_simple(rank, count.data(), nullptr)));
    H5_CHECK(H5Dread(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out));
  }

  // Reads `rows` (any order, repeats allowed) of `dataset` into `out` in the order of `rows`.
  // Sorted unique rows are grouped into runs of consecutive rows, read in file order (so each
  // chunk is visited once while it is hot in the cache) into `gather`, then copied to the
  // requested positions.
  void read_rows(hid_t dataset, hid_t mem_type, size_t value_bytes, int64_t row_elements,
                 const std::vector<int64_t>& rows, void* out) {
    if (rows.empty()) return;
    for (int64_t row : rows)
      if (row < 0 || row >= f.info.num_samples)
        throw Error(fmt::format("{}: row {} is outside [0, {})", f.info.path, row,
                                f.info.num_samples));
    std::vector<int64_t> unique(rows);
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    const size_t row_bytes = static_cast<size_t>(row_elements) * value_bytes;
    gather.resize(unique.size() * row_bytes);

    const std::vector<Run> runs = make_runs(unique);
    H5DataSpace file_space(H5_CHECK(H5Dget_space(dataset)));
    const int rank = H5_CHECK(H5Sget_simple_extent_ndims(file_space.get()));
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5_CHECK(H5Sget_simple_extent_dims(file_space.get(), dims.data(), nullptr));

    // One H5Dread per run, with a memory space of the run's own shape: HDF5 then copies
    // straight from its chunk cache. (Measured with HDF5 1.10 on Fashion-MNIST: one union
    // of all runs against a flat memory space was 25x slower than this.)
    std::vector<hsize_t> start(dims.size(), 0), count = dims;
    size_t gathered_rows = 0;
    for (const Run& run : runs) {
      start[0] = static_cast<hsize_t>(run.begin);
      count[0] = static_cast<hsize_t>(run.count);
      H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                   count.data(), nullptr));
      H5DataSpace mem_space(H5_CHECK(H5Screate_simple(rank, count.data(), nullptr)));
      H5_CHECK(H5Dread(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT,
                       gather.data() + gathered_rows * row_bytes));
      gathered_rows += static_cast<size_t>(run.count);
    }

    auto* dst = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto pos = static_cast<size_t>(
          std::lower_bound(unique.begin(), unique.end(), rows[i]) - unique.begin());
      std::copy_n(gather.data() + pos * row_bytes, row_bytes, dst + i * row_bytes);
    }
  }
};

DatasetReader::DatasetReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->f = open_and_validate(path);
}

DatasetReader::~DatasetReader() = default;

const DatasetInfo& DatasetReader::info() const { return impl_->f.info; }

void DatasetReader::read_images(const std::vector<int64_t>& rows, uint8_t* out) {
  h5_silence_errors();
  impl_->require_kind(DataKind::kImages, "read_images");
  impl_->read_rows(impl_->f.data.get(), H5T_NATIVE_UINT8, 1, info().sample_elements(), rows, out);
}

void DatasetReader::read_vectors(const std::vector<int64_t>& rows, float* out) {
  h5_silence_errors();
  impl_->require_kind(DataKind::kVectors, "read_vectors");
  const int64_t d = info().sample_elements();
  impl_->read_rows(impl_->f.data.get(), H5T_NATIVE_FLOAT, sizeof(float), d, rows, out);
  check_finite(out, static_cast<int64_t>(rows.size()), d,
               [&](int64_t r) { return rows[static_cast<size_t>(r)]; }, info().path);
}

void DatasetReader::read_labels(const std::vector<int64_t>& rows, int64_t* out) {
  h5_silence_errors();
  impl_->require_labels("read_labels");
  impl_->read_rows(impl_->f.labels.get(), H5T_NATIVE_INT64, sizeof(int64_t), 1, rows, out);
}

void DatasetReader::read_images_range(int64_t begin, int64_t end, uint8_t* out) {
  h5_silence_errors();
  impl_->require_kind(DataKind::kImages, "read_images_range");
  impl_->read_range(impl_->f.data.get(), H5T_NATIVE_UINT8, begin, end, out);
}

void DatasetReader::read_vectors_range(int64_t begin, int64_t end, float* out) {
  h5_silence_errors();
  impl_->require_kind(DataKind::kVectors, "read_vectors_range");
  const int64_t d = info().sample_elements();
  impl_->read_range(impl_->f.data.get(), H5T_NATIVE_FLOAT, begin, end, out);
  check_finite(out, end - begin, d, [&](int64_t r) { return begin + r; }, info().path);
}

void DatasetReader::read_labels_range(int64_t begin, int64_t end, int64_t* out) {
  h5_silence_errors();
  impl_->require_labels("read_labels_range");
  impl_->read_range(impl_->f.labels.get(), H5T_NATIVE_INT64, begin, end, out);
}

// --- DatasetWriter ---------------------------------------------------------------------------

struct DatasetWriter::Impl {
  std::string path;
  std::string temp_path;
  DatasetSpec spec;
  H5File file;
  H5DataSet data;
  H5DataSet labels;
  int64_t rows = 0;
  bool committed = false;

  void close_handles() {
    labels.reset();
    data.reset();
    file.reset();
  }

  // Grows `dataset` by `count` rows at `rows` and writes `values` there.
  void append(hid_t dataset, hid_t mem_type, const void* values, int64_t count) {
    H5DataSpace space(H5_CHECK(H5Dget_space(dataset)));
    const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
    std::vector<hsize_t> start(dims.size(), 0), block = dims;
    dims[0] = static_cast<hsize_t>(rows + count);
    H5_CHECK(H5Dset_extent(dataset, dims.data()));
    H5DataSpace file_space(H5_CHECK(H5Dget_space(dataset)));
    start[0] = static_cast<hsize_t>(rows);
    block[0] = static_cast<hsize_t>(count);
    H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                 block.data(), nullptr));
    H5DataSpace mem_space(H5_CHECK(H5Screate_simple(rank, block.data(), nullptr)));
    H5_CHECK(H5Dwrite(dataset, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, values));
  }

  void check_open(const char* what) const {
    if (committed)
      throw Error(fmt::format("{}: {} after commit(); the file is already complete", path, what));
  }

  void check_labels(const int64_t* values, int64_t count) const {
    if (spec.has_labels && values == nullptr)
      throw Error(fmt::format("{}: the spec has labels, but no labels were given for rows "
                              "{}..{}",
                              path, rows, rows + count - 1));
    if (!spec.has_labels && values != nullptr)
      throw Error(fmt::format("{}: labels given, but the spec says the dataset has no labels",
                              path));
    if (!values) return;
    for (int64_t i = 0; i < count; ++i)
      if (values[i] < 0 || values[i] >= spec.num_classes)
        throw Error(fmt::format("{}: label of row {} is {}, expected a value in [0, {})", path,
                                rows + i, values[i], spec.num_classes));
  }
};

DatasetWriter::DatasetWriter(const std::string& path, const DatasetSpec& spec)
    : impl_(std::make_unique<Impl>()) {
  h5_silence_errors();
  Impl& w = *impl_;
  w.path = path;
  w.spec = spec;
  w.temp_path = fmt::format("{}.tmp-{}", path, ::getpid());

  std::error_code ec;
  if (std::filesystem::exists(path, ec) || std::filesystem::is_symlink(path, ec))
    throw Error(fmt::format("output '{}' already exists; refusing to overwrite it (remove it or "
                            "choose another --out)",
                            path));
  const size_t expected_rank = spec.kind == DataKind::kImages ? 3 : 1;
  if (spec.sample_shape.size() != expected_rank)
    throw Error(fmt::format("{}: sample shape {} has rank {}, expected {} for '{}'", path,
                            shape_text(spec.sample_shape), spec.sample_shape.size(), expected_rank,
                            kind_key(spec.kind)));
  for (int64_t d : spec.sample_shape)
    if (d <= 0)
      throw Error(fmt::format("{}: sample shape {} has a non-positive dimension", path,
                              shape_text(spec.sample_shape)));
  if (spec.has_labels && spec.num_classes <= 0)
    throw Error(fmt::format("{}: labels need num_classes > 0, got {}", path, spec.num_classes));
  if (!spec.class_names.empty() &&
      static_cast<int64_t>(spec.class_names.size()) != spec.num_classes)
    throw Error(fmt::format("{}: {} class names given for num_classes = {}", path,
                            spec.class_names.size(), spec.num_classes));
  if (!spec.has_labels && !spec.class_names.empty())
    throw Error(fmt::format("{}: class names given, but the spec has no labels", path));

  // Parent folder must exist; HDF5's own error would only say "unable to open file".
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    throw Error(fmt::format("output '{}': folder '{}' does not exist", path, parent.string()));

  w.file = H5File(H5Fcreate(w.temp_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!w.file.valid())
    throw Error(fmt::format("cannot create temporary file '{}' for output '{}': {}", w.temp_path,
                            path, h5_error_text()));

  try {
    const int64_t elements = std::accumulate(spec.sample_shape.begin(), spec.sample_shape.end(),
                                             int64_t{1}, std::multiplies<int64_t>());
    const int64_t row_bytes =
        elements * (spec.kind == DataKind::kImages ? 1 : static_cast<int64_t>(sizeof(float)));
    const int64_t chunk_rows =
        spec.chunk_rows > 0 ? spec.chunk_rows : std::max<int64_t>(1, kTargetChunkBytes / row_bytes);

    // Rows are appended, so N starts at 0 and is unlimited; the chunk is chunk_rows whole rows.
    auto create = [&](const char* name, hid_t file_type, const std::vector<int64_t>& shape,
                      int64_t rows_per_chunk) {
      std::vector<hsize_t> dims{0}, max_dims{H5S_UNLIMITED}, chunk{static_cast<hsize_t>(rows_per_chunk)};
      for (int64_t d : shape) {
        dims.push_back(static_cast<hsize_t>(d));
        max_dims.push_back(static_cast<hsize_t>(d));
        chunk.push_back(static_cast<hsize_t>(d));
      }
      H5DataSpace space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(),
                                                  max_dims.data())));
      H5PropList dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
      H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()));
      // No modification times in object headers: the same rows give a byte-identical file.
      H5_CHECK(H5Pset_obj_track_times(dcpl.get(), false));
      return H5DataSet(H5_CHECK(H5Dcreate2(w.file.get(), name, file_type, space.get(), H5P_DEFAULT,
                                           dcpl.get(), H5P_DEFAULT)));
    };
    w.data = create(kind_key(spec.kind),
                    spec.kind == DataKind::kImages ? H5T_STD_U8LE : H5T_IEEE_F32LE,
                    spec.sample_shape, chunk_rows);
    if (spec.has_labels) {
      // Labels are tiny; larger chunks keep their chunk count (and index) small.
      w.labels = create(kLabelsKey, H5T_STD_I64LE, {}, std::max<int64_t>(chunk_rows, 16384));

      H5DataSpace scalar(H5_CHECK(H5Screate(H5S_SCALAR)));
      H5Attribute num_classes(H5_CHECK(H5Acreate2(w.file.get(), kNumClassesAttr, H5T_STD_I64LE,
                                                  scalar.get(), H5P_DEFAULT, H5P_DEFAULT)));
      H5_CHECK(H5Awrite(num_classes.get(), H5T_NATIVE_INT64, &spec.num_classes));

      if (!spec.class_names.empty()) {
        // Variable-length UTF-8 strings: h5py reads them as str, and names need no fixed width.
        H5DataType type(H5_CHECK(H5Tcopy(H5T_C_S1)));
        H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
        H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
        const hsize_t count = spec.class_names.size();
        H5DataSpace space(H5_CHECK(H5Screate_simple(1, &count, nullptr)));
        H5Attribute names(H5_CHECK(H5Acreate2(w.file.get(), kClassNamesAttr, type.get(),
                                              space.get(), H5P_DEFAULT, H5P_DEFAULT)));
        std::vector<const char*> raw;
        for (const auto& name : spec.class_names) raw.push_back(name.c_str());
        H5_CHECK(H5Awrite(names.get(), type.get(), raw.data()));
      }
    }
  } catch (...) {
    w.close_handles();
    std::filesystem::remove(w.temp_path, ec);
    throw;
  }
}

DatasetWriter::~DatasetWriter() {
  if (!impl_ || impl_->committed) return;
  impl_->close_handles();
  std::error_code ignored;
  std::filesystem::remove(impl_->temp_path, ignored);
}

void DatasetWriter::append_images(const uint8_t* data, const int64_t* labels, int64_t rows) {
  h5_silence_errors();
  Impl& w = *impl_;
  w.check_open("append_images");
  if (w.spec.kind != DataKind::kImages)
    throw Error(fmt::format("{}: append_images on a writer of '{}'", w.path, kind_key(w.spec.kind)));
  if (rows <= 0) return;
  w.check_labels(labels, rows);
  w.append(w.data.get(), H5T_NATIVE_UINT8, data, rows);
  if (labels) w.append(w.labels.get(), H5T_NATIVE_INT64, labels, rows);
  w.rows += rows;
}

void DatasetWriter::append_vectors(const float* data, const int64_t* labels, int64_t rows) {
  h5_silence_errors();
  Impl& w = *impl_;
  w.check_open("append_vectors");
  if (w.spec.kind != DataKind::kVectors)
    throw Error(fmt::format("{}: append_vectors on a writer of '{}'", w.path, kind_key(w.spec.kind)));
  if (rows <= 0) return;
  w.check_labels(labels, rows);
  // A non-finite value would be refused by every reader; refuse it here, where the row is known.
  const int64_t d = w.spec.sample_shape[0];
  const int64_t first_row = w.rows;
  check_finite(data, rows, d, [&](int64_t r) { return first_row + r; }, w.path);
  w.append(w.data.get(), H5T_NATIVE_FLOAT, data, rows);
  if (labels) w.append(w.labels.get(), H5T_NATIVE_INT64, labels, rows);
  w.rows += rows;
}

int64_t DatasetWriter::rows_written() const { return impl_->rows; }

void DatasetWriter::commit() {
  h5_silence_errors();
  Impl& w = *impl_;
  w.check_open("commit");
  if (w.rows == 0)
    throw Error(fmt::format("{}: no rows were written; a dataset needs N > 0 samples", w.path));
  H5_CHECK(H5Fflush(w.file.get(), H5F_SCOPE_GLOBAL));
  w.close_handles();
  // link(2) publishes the file under its name only if that name is still free (an atomic
  // no-clobber rename); another import may have created the output while we wrote. File
  // systems without hard links get rename(2) after a last existence check.
  std::error_code ec;
  w.committed = true;  // from here on the temporary file is ours to remove, not the destructor's
  if (::link(w.temp_path.c_str(), w.path.c_str()) == 0) {
    std::filesystem::remove(w.temp_path, ec);
    return;
  }
  const int link_errno = errno;
  if (link_errno == EEXIST) {
    std::filesystem::remove(w.temp_path, ec);
    throw Error(fmt::format("output '{}' appeared while it was being written; refusing to "
                            "overwrite it",
                            w.path));
  }
  if (std::filesystem::exists(w.path, ec)) {
    std::filesystem::remove(w.temp_path, ec);
    throw Error(fmt::format("output '{}' appeared while it was being written; refusing to "
                            "overwrite it",
                            w.path));
  }
  if (std::rename(w.temp_path.c_str(), w.path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::filesystem::remove(w.temp_path, ec);
    throw Error(fmt::format("cannot move '{}' to '{}': {} (link(2) failed: {})", w.temp_path,
                            w.path, reason, std::strerror(link_errno)));
  }
}

}  // namespace diffusion
