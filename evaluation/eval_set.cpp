// Loading dataset files into tensors for evaluation (see eval_set.h).
#include "evaluation/eval_set.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/base/error.h"
#include "core/base/h5.h"
#include "datasets/dataset_file.h"

namespace diffusion {
namespace {

// The sampler's --save-float images: `x` float32 of rank 4. DatasetReader only knows rank-2
// `x`, so these are read here. Returns false when the file is not of that kind.
bool load_float_images(const std::string& path, int64_t max_rows, EvalSet* set) {
  h5_silence_errors();
  if (H5Fis_hdf5(path.c_str()) <= 0) return false;
  H5File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid() || H5Lexists(file.get(), "x", H5P_DEFAULT) <= 0) return false;
  H5DataSet data(H5Dopen2(file.get(), "x", H5P_DEFAULT));
  if (!data.valid()) return false;
  H5DataSpace space(H5_CHECK(H5Dget_space(data.get())));
  if (H5Sget_simple_extent_ndims(space.get()) != 4) return false;
  hsize_t dims[4];
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr));
  H5DataType type(H5_CHECK(H5Dget_type(data.get())));
  if (H5Tget_class(type.get()) != H5T_FLOAT)
    throw Error(fmt::format("{}: dataset 'x' of rank 4 must be float32 images [N, H, W, C]", path));
  if (dims[0] == 0) throw Error(fmt::format("{}: dataset 'x' has N = 0 rows", path));
  const auto n = static_cast<int64_t>(max_rows > 0 ? std::min<hsize_t>(dims[0], max_rows) : dims[0]);
  const auto h = static_cast<int64_t>(dims[1]), w = static_cast<int64_t>(dims[2]),
             c = static_cast<int64_t>(dims[3]);
  auto nhwc = torch::empty({n, h, w, c}, torch::kFloat32);  // [N, H, W, C]
  hsize_t start[4] = {0, 0, 0, 0}, count[4] = {static_cast<hsize_t>(n), dims[1], dims[2], dims[3]};
  H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr));
  H5DataSpace mem(H5_CHECK(H5Screate_simple(4, count, nullptr)));
  H5_CHECK(H5Dread(data.get(), H5T_NATIVE_FLOAT, mem.get(), space.get(), H5P_DEFAULT,
                   nhwc.data_ptr<float>()));
  if (!torch::isfinite(nhwc).all().item<bool>())
    throw Error(fmt::format("{}: dataset 'x' holds a NaN or inf value", path));
  set->path = path;
  set->images = true;
  set->sample_shape = {h, w, c};
  set->num_rows = static_cast<int64_t>(dims[0]);
  set->x = nhwc.permute({0, 3, 1, 2}).contiguous();  // [N, C, H, W]
  if (H5Lexists(file.get(), "labels", H5P_DEFAULT) > 0) {
    H5DataSet labels(H5_CHECK(H5Dopen2(file.get(), "labels", H5P_DEFAULT)));
    H5DataSpace lspace(H5_CHECK(H5Dget_space(labels.get())));
    hsize_t ldim = 0;
    if (H5Sget_simple_extent_ndims(lspace.get()) != 1 ||
        (H5Sget_simple_extent_dims(lspace.get(), &ldim, nullptr), ldim != dims[0]))
      throw Error(fmt::format("{}: dataset 'labels' must be int64 [N] with N = {}", path, dims[0]));
    if (H5Aexists(file.get(), "num_classes") <= 0)
      throw Error(fmt::format("{}: the file has 'labels' but no attribute 'num_classes'", path));
    H5Attribute attr(H5_CHECK(H5Aopen(file.get(), "num_classes", H5P_DEFAULT)));
    H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &set->num_classes));
    auto labels_all = torch::empty({static_cast<int64_t>(ldim)}, torch::kInt64);
    H5_CHECK(H5Dread(labels.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                     labels_all.data_ptr<int64_t>()));
    set->labels = labels_all.slice(0, 0, n).clone();
    if (set->num_classes <= 0 || set->labels.min().item<int64_t>() < 0 ||
        set->labels.max().item<int64_t>() >= set->num_classes)
      throw Error(fmt::format("{}: 'labels' outside [0, num_classes = {})", path, set->num_classes));
  }
  return true;
}

}  // namespace

std::string EvalSet::shape_text() const {
  if (images) return fmt::format("images {}x{}x{}", sample_shape[0], sample_shape[1], sample_shape[2]);
  return fmt::format("vectors of {}", sample_shape[0]);
}

EvalSet load_eval_set(const std::string& path, int64_t max_rows) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error(fmt::format("dataset file '{}' does not exist", path));
  EvalSet set;
  if (load_float_images(path, max_rows, &set)) return set;

  DatasetReader reader(path);  // validates the format; errors name the file and key
  const DatasetInfo& info = reader.info();
  set.path = path;
  set.images = info.kind == DataKind::kImages;
  set.sample_shape = info.sample_shape;
  set.num_rows = info.num_samples;
  set.num_classes = info.num_classes;
  set.class_names = info.class_names;
  const int64_t n = max_rows > 0 ? std::min(max_rows, info.num_samples) : info.num_samples;
  if (set.images) {
    const int64_t h = info.sample_shape[0], w = info.sample_shape[1], c = info.sample_shape[2];
    auto raw = torch::empty({n, h, w, c}, torch::kUInt8);  // [N, H, W, C]
    reader.read_images_range(0, n, raw.data_ptr<uint8_t>());
    // [0, 255] -> [-1, 1], as the trainer feeds the networks.
    set.x = (raw.permute({0, 3, 1, 2}).to(torch::kFloat32) / 127.5 - 1.0).contiguous();
  } else {
    set.x = torch::empty({n, info.sample_shape[0]}, torch::kFloat32);  // [N, D]
    reader.read_vectors_range(0, n, set.x.data_ptr<float>());
  }
  if (info.has_labels) {
    set.labels = torch::empty({n}, torch::kInt64);
    reader.read_labels_range(0, n, set.labels.data_ptr<int64_t>());
  }
  return set;
}

EvalSet select_rows(const EvalSet& set, const at::Tensor& rows) {
  EvalSet out = set;
  out.x = set.x.index_select(0, rows);
  if (set.has_labels()) out.labels = set.labels.index_select(0, rows);
  return out;
}

}  // namespace diffusion
