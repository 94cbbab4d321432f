// LatentsReader (see latents_file.h) over the HDF5 C API.
#include "sampler/latents_file.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <filesystem>

#include "core/base/error.h"
#include "core/base/h5.h"

namespace diffusion {

struct LatentsReader::Impl {
  std::string path;
  H5File file;
  H5DataSet data;
  int64_t row_elements = 1;
  std::vector<hsize_t> dims;
};

LatentsReader::LatentsReader(const std::string& path, const std::vector<int64_t>& sample_shape,
                             const std::string& what)
    : impl_(std::make_unique<Impl>()) {
  h5_silence_errors();
  auto& m = *impl_;
  m.path = path;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(fmt::format("option --{}: {} is not a file", what, path));
  m.file = H5File(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!m.file.valid()) throw Error(fmt::format("option --{}: {} is not an HDF5 file: {}", what, path, h5_error_text()));
  if (H5Lexists(m.file.get(), "x", H5P_DEFAULT) <= 0)
    throw Error(fmt::format("option --{}: {} has no dataset 'x' (latents [N, {}])", what, path,
                            fmt::join(sample_shape, ", ")));
  m.data = H5DataSet(H5_CHECK(H5Dopen2(m.file.get(), "x", H5P_DEFAULT)));
  H5DataType type(H5_CHECK(H5Dget_type(m.data.get())));
  H5DataSpace space(H5_CHECK(H5Dget_space(m.data.get())));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  m.dims.resize(static_cast<size_t>(rank));
  if (rank > 0) H5_CHECK(H5Sget_simple_extent_dims(space.get(), m.dims.data(), nullptr));
  bool fits = H5Tget_class(type.get()) == H5T_FLOAT && rank == static_cast<int>(sample_shape.size()) + 1 &&
              m.dims[0] > 0;
  for (size_t k = 0; fits && k < sample_shape.size(); ++k) fits = static_cast<int64_t>(m.dims[k + 1]) == sample_shape[k];
  if (!fits)
    throw Error(fmt::format("option --{}: {}: dataset 'x' is {} [{}]; the model needs float [N, {}] (N > 0)", what,
                            path, H5Tget_class(type.get()) == H5T_FLOAT ? "float" : "not float", fmt::join(m.dims, ", "),
                            fmt::join(sample_shape, ", ")));
  for (auto d : sample_shape) m.row_elements *= d;
  rows_ = static_cast<int64_t>(m.dims[0]);
}

LatentsReader::~LatentsReader() = default;

void LatentsReader::read(int64_t begin, int64_t end, float* out) {
  auto& m = *impl_;
  if (begin < 0 || end > rows_ || begin >= end)
    throw Error(fmt::format("{}: rows [{}, {}) out of [0, {})", m.path, begin, end, rows_));
  H5DataSpace file_space(H5_CHECK(H5Dget_space(m.data.get())));
  std::vector<hsize_t> start(m.dims.size(), 0), count = m.dims;
  start[0] = static_cast<hsize_t>(begin);
  count[0] = static_cast<hsize_t>(end - begin);
  H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
  H5DataSpace mem_space(H5_CHECK(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr)));
  H5_CHECK(H5Dread(m.data.get(), H5T_NATIVE_FLOAT, mem_space.get(), file_space.get(), H5P_DEFAULT, out));
  const int64_t n = (end - begin) * m.row_elements;
  for (int64_t k = 0; k < n; ++k)
    if (!std::isfinite(out[k]))
      throw Error(fmt::format("{}: dataset 'x' row {} holds a non-finite value", m.path, begin + k / m.row_elements));
}

}  // namespace diffusion
