// Checkpoint shard files (see checkpoint_shard.h).
#include "core/io/checkpoint_shard.h"

#include <fmt/core.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>

#include "core/base/durable_file.h"
#include "core/base/error.h"
#include "core/base/h5.h"

namespace diffusion {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBytesDataset = "bytes";

}  // namespace

void write_shard(const std::string& path, const std::vector<uint8_t>& bytes, uint64_t begin,
                 uint64_t end) {
  h5_silence_errors();
  {
    H5File file(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT));
    if (!file.valid())
      throw Error(fmt::format("cannot create shard '{}': {}", path, h5_error_text()));
    const hsize_t dims[1] = {static_cast<hsize_t>(bytes.size())};
    H5DataSpace space(H5_CHECK(H5Screate_simple(1, dims, nullptr)));
    H5PropList dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
    // No timestamps: the same state gives byte-identical shards.
    H5_CHECK(H5Pset_obj_track_times(dcpl.get(), false));
    H5DataSet dataset(H5_CHECK(H5Dcreate2(file.get(), kBytesDataset, H5T_NATIVE_UINT8, space.get(),
                                          H5P_DEFAULT, dcpl.get(), H5P_DEFAULT)));
    if (!bytes.empty())
      H5_CHECK(
          H5Dwrite(dataset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()));
    // begin/end repeat the manifest's range so a shard explains itself when found alone.
    H5DataSpace scalar(H5_CHECK(H5Screate(H5S_SCALAR)));
    for (const auto& [name, value] :
         {std::pair<const char*, uint64_t>{"begin", begin}, {"end", end}}) {
      H5Attribute attr(H5_CHECK(
          H5Acreate2(dataset.get(), name, H5T_STD_U64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT)));
      H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_UINT64, &value));
    }
    // Flush while the handle is open so a write error is reported; the close then has
    // nothing left to write.
    H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL));
  }
  // HDF5 only writes to the page cache; the manifest must never name a shard that is not on disk.
  fsync_path(path, /*directory=*/false);
}

std::vector<uint8_t> read_shard(const std::string& path, uint64_t expected_size) {
  h5_silence_errors();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(fmt::format("checkpoint shard '{}' is missing", path));
  H5File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid())
    throw Error(fmt::format("checkpoint shard '{}' is not a readable HDF5 file: {}", path,
                            h5_error_text()));
  H5DataSet dataset(H5Dopen2(file.get(), kBytesDataset, H5P_DEFAULT));
  if (!dataset.valid())
    throw Error(fmt::format("checkpoint shard '{}' has no dataset '{}'", path, kBytesDataset));
  H5DataSpace space(H5_CHECK(H5Dget_space(dataset.get())));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  hsize_t dims[1] = {0};
  if (rank != 1)
    throw Error(fmt::format("checkpoint shard '{}': dataset '{}' has {} dimensions, expected 1",
                            path, kBytesDataset, rank));
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims, nullptr));
  if (dims[0] != expected_size)
    throw Error(fmt::format("checkpoint shard '{}' holds {} bytes, the manifest says {}", path,
                            static_cast<uint64_t>(dims[0]), expected_size));
  std::vector<uint8_t> bytes(expected_size);
  if (!bytes.empty() &&
      H5Dread(dataset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()) < 0)
    throw Error(fmt::format("checkpoint shard '{}' could not be read: {}", path, h5_error_text()));
  return bytes;
}

uint32_t crc32_of(const uint8_t* data, uint64_t size) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  // zlib's length is a uInt; feed large buffers in pieces.
  constexpr uint64_t kPiece = 1u << 30;
  for (uint64_t done = 0; done < size; done += kPiece)
    crc = ::crc32(crc, data + done, static_cast<uInt>(std::min(kPiece, size - done)));
  return static_cast<uint32_t>(crc);
}

}  // namespace diffusion
