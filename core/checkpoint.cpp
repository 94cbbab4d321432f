// Sharded checkpoints: the byte layout, the per-rank HDF5 shards, the manifest and the folder
// protocol of core/checkpoint.h (documented for users in docs/formats.md, "Checkpoints").
#include "core/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <ATen/ATen.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/h5.h"
#include "core/log.h"
#include "core/mpi_session.h"

namespace diffusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kFormatVersion = 1;
constexpr const char* kFormatName = "diffusion-checkpoint";
constexpr const char* kManifestName = "manifest.json";
constexpr const char* kLatestName = "latest";
constexpr const char* kBytesDataset = "bytes";
constexpr const char* kStepPrefix = "step-";
constexpr const char* kTmpPrefix = ".tmp-";
// A folder moved aside while the same step is written again (see publish_folder).
constexpr const char* kOldPrefix = ".old-";
// Test-only fault injection: when set to a rank of the writing communicator, that rank fails
// its shard write as if the disk had refused it. Used by tests/checkpoint_mpi_test.cpp to check
// that every rank throws and the previous checkpoint survives.
constexpr const char* kFailRankEnv = "DIFFUSION_CKPT_FAIL_RANK";

std::string errno_text() { return std::strerror(errno); }

std::string step_name(int64_t step) { return fmt::format("{}{:08d}", kStepPrefix, step); }

std::string shard_name(int rank, int world) {
  return fmt::format("shard-{:05d}-of-{:05d}.h5", rank, world);
}

// "step-00000012" -> 12; nullopt for anything else (".tmp-step-...", "latest", "step-x").
std::optional<int64_t> parse_step_name(const std::string& name) {
  const std::string prefix = kStepPrefix;
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); }))
    return std::nullopt;
  return std::stoll(digits);
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// --- dtypes ------------------------------------------------------------------------------------
// NumPy's names, so a Python reader can np.frombuffer(..., dtype=name) (bfloat16 excepted).
struct DtypeName {
  at::ScalarType type;
  const char* name;
};
// clang-format off
constexpr DtypeName kDtypes[] = {
    {at::kFloat, "float32"},     {at::kDouble, "float64"}, {at::kHalf, "float16"},
    {at::kBFloat16, "bfloat16"}, {at::kLong, "int64"},     {at::kInt, "int32"},
    {at::kShort, "int16"},       {at::kChar, "int8"},      {at::kByte, "uint8"},
    {at::kBool, "bool"},         {at::kComplexFloat, "complex64"},
    {at::kComplexDouble, "complex128"}};
// clang-format on

std::optional<std::string> dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type) return std::string(d.name);
  return std::nullopt;
}

std::optional<at::ScalarType> dtype_from_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  return std::nullopt;
}

// --- POSIX durability helpers ------------------------------------------------------------------

// fsync of a file or a folder; a folder's fsync makes the names created or renamed in it durable.
void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw Error(fmt::format("cannot open '{}' to fsync it: {}", path, errno_text()));
  const int rc = ::fsync(fd);
  const std::string why = rc != 0 ? errno_text() : "";
  ::close(fd);
  if (rc != 0) throw Error(fmt::format("fsync of '{}' failed: {}", path, why));
}

void write_file_durably(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error(fmt::format("cannot create '{}': {}", path, errno_text()));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = errno_text();
      ::close(fd);
      throw Error(fmt::format("cannot write '{}': {}", path, why));
    }
    done += static_cast<size_t>(n);
  }
  const int rc = ::fsync(fd);
  const std::string why = rc != 0 ? errno_text() : "";
  if (::close(fd) != 0 || rc != 0)
    throw Error(
        fmt::format("cannot flush '{}' to disk: {}", path, why.empty() ? errno_text() : why));
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    throw Error(fmt::format("cannot rename '{}' to '{}': {}", from, to, errno_text()));
}

// Removes a file or a folder tree without following symbolic links. Written out instead of
// std::filesystem::remove_all, whose libtorch-exported copy is broken (see CMakeLists.txt).
void remove_tree(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::symlink_status(path, ec);
  if (ec || status.type() == fs::file_type::not_found) return;
  if (status.type() == fs::file_type::directory) {
    std::vector<fs::path> children;
    for (const auto& entry : fs::directory_iterator(path)) children.push_back(entry.path());
    for (const auto& child : children) remove_tree(child);
  }
  fs::remove(path);
}

// Clean-up after the checkpoint is committed: a folder that cannot be removed is reported and
// left for the next write, but does not turn a successful checkpoint into a failed one.
void remove_tree_logged(const fs::path& path, const char* what) {
  log0("[ckpt] removing {} {}", what, path.string());
  try {
    remove_tree(path);
  } catch (const std::exception& e) {
    log_rank("[ckpt] warning: could not remove {}: {}", path.string(), e.what());
  }
}

// --- collective agreement ----------------------------------------------------------------------

// Every rank calls this at the same point with its own error text ("" for success). If any rank
// failed, every rank throws the same Error naming the lowest failing rank and its reason, so no
// rank goes on to a collective the others never reach. Doubles as a barrier.
void agree_or_throw(MPI_Comm comm, const std::string& local_error, const std::string& what) {
  int rank = 0, world = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &world));
  const int mine = local_error.empty() ? world : rank;
  int first = world;
  MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == world) return;

  const int failed_here = local_error.empty() ? 0 : 1;
  int failed = 0;
  MPI_CHECK(MPI_Allreduce(&failed_here, &failed, 1, MPI_INT, MPI_SUM, comm));
  std::string message = rank == first ? local_error : std::string();
  int length = static_cast<int>(message.size());
  MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, first, comm));
  message.resize(static_cast<size_t>(length));
  MPI_CHECK(MPI_Bcast(message.data(), length, MPI_CHAR, first, comm));
  const std::string others = failed > 1 ? fmt::format(" (and {} other ranks)", failed - 1) : "";
  throw Error(
      fmt::format("[ckpt] {} failed on rank {}{} of {}: {}", what, first, others, world, message));
}

// Runs `body`, turning any exception into error text for agree_or_throw.
template <typename Body>
std::string capture_error(Body&& body) {
  try {
    body();
    return {};
  } catch (const std::exception& e) {
    std::string text = e.what();
    return text.empty() ? std::string("unknown error") : text;
  }
}

// --- byte layout -------------------------------------------------------------------------------

struct TensorEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
};

std::vector<TensorEntry> tensor_table(const CheckpointState& state) {
  std::vector<TensorEntry> table;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : state.tensors) {
    if (!tensor.defined()) throw Error(fmt::format("tensor '{}' is undefined", name));
    if (!names.insert(name).second)
      throw Error(fmt::format("tensor name '{}' appears more than once", name));
    const auto dtype = dtype_name(tensor.scalar_type());
    if (!dtype)
      throw Error(fmt::format("tensor '{}' has dtype {}, which checkpoints do not store", name,
                              c10::toString(tensor.scalar_type())));
    TensorEntry e;
    e.name = name;
    e.dtype = *dtype;
    e.shape = tensor.sizes().vec();
    e.offset = offset;
    e.nbytes = static_cast<uint64_t>(tensor.numel()) * tensor.element_size();
    offset += e.nbytes;
    table.push_back(std::move(e));
  }
  return table;
}

// Rank r of W holds bytes [r·L/W, (r+1)·L/W): equal slices, the last one ends exactly at L.
std::pair<uint64_t, uint64_t> shard_range(uint64_t total, int rank, int world) {
  const uint64_t w = static_cast<uint64_t>(world);
  return {total * static_cast<uint64_t>(rank) / w, total * static_cast<uint64_t>(rank + 1) / w};
}

// Copies global bytes [begin, end) of the concatenated tensors into `out`.
std::vector<uint8_t> gather_slice(const CheckpointState& state,
                                  const std::vector<TensorEntry>& table, uint64_t begin,
                                  uint64_t end) {
  std::vector<uint8_t> out(end - begin);
  for (size_t i = 0; i < table.size(); ++i) {
    const auto& e = table[i];
    const uint64_t lo = std::max(begin, e.offset), hi = std::min(end, e.offset + e.nbytes);
    if (lo >= hi) continue;
    // Only tensors that overlap this slice are brought to contiguous CPU memory.
    const at::Tensor& t = state.tensors[i].second;
    const at::Tensor host = t.device().is_cpu() && t.is_contiguous() ? t : t.cpu().contiguous();
    const auto* bytes = static_cast<const uint8_t*>(host.data_ptr());
    std::memcpy(out.data() + (lo - begin), bytes + (lo - e.offset), hi - lo);
  }
  return out;
}

uint32_t crc32_of(const uint8_t* data, uint64_t size) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  // zlib's length is a uInt; feed large buffers in pieces.
  constexpr uint64_t kPiece = 1u << 30;
  for (uint64_t done = 0; done < size; done += kPiece)
    crc = ::crc32(crc, data + done, static_cast<uInt>(std::min(kPiece, size - done)));
  return static_cast<uint32_t>(crc);
}

std::string crc_text(uint32_t crc) { return fmt::format("{:08x}", crc); }

// --- shard files -------------------------------------------------------------------------------

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

// --- manifest ----------------------------------------------------------------------------------

struct ShardEntry {
  std::string file;
  uint64_t begin = 0;
  uint64_t end = 0;
  uint32_t crc32 = 0;
};

struct Manifest {
  int64_t step = 0;
  int world_size = 0;
  uint64_t total_bytes = 0;
  std::string config_text;
  std::string meta_json;
  std::vector<TensorEntry> tensors;
  std::vector<ShardEntry> shards;
};

std::string manifest_text(const Manifest& m) {
  // Keys in the order a reader looks for them (plain json would sort them).
  using ordered = nlohmann::ordered_json;
  ordered tensors = ordered::array();
  for (const auto& e : m.tensors)
    tensors.push_back(ordered{{"name", e.name},
                              {"dtype", e.dtype},
                              {"shape", e.shape},
                              {"offset", e.offset},
                              {"nbytes", e.nbytes}});
  ordered shards = ordered::array();
  for (const auto& s : m.shards)
    shards.push_back(ordered{
        {"file", s.file}, {"begin", s.begin}, {"end", s.end}, {"crc32", crc_text(s.crc32)}});
  ordered j = {{"format", kFormatName},
               {"format_version", kFormatVersion},
               {"step", m.step},
               {"world_size", m.world_size},
               {"total_bytes", m.total_bytes},
               {"byte_order", "little"},
               {"config_text", m.config_text},
               {"meta_json", m.meta_json},
               {"tensors", tensors},
               {"shards", shards}};
  return j.dump(2) + "\n";
}

// Parses and checks a manifest; every error names the file and the key at fault.
Manifest parse_manifest(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(
        fmt::format("checkpoint folder '{}' has no {} (an incomplete checkpoint, e.g. "
                    "one interrupted while it was written); it is not loaded",
                    fs::path(path).parent_path().string(), kManifestName));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open checkpoint manifest '{}'", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  json j;
  try {
    j = json::parse(buffer.str());
  } catch (const json::exception& e) {
    throw Error(fmt::format("checkpoint manifest '{}' is not valid JSON: {}", path, e.what()));
  }
  auto field = [&](const json& obj, const char* key, const std::string& where) -> const json& {
    if (!obj.is_object() || !obj.contains(key))
      throw Error(fmt::format("checkpoint manifest '{}': missing key '{}'{}", path, key, where));
    return obj.at(key);
  };
  Manifest m;
  try {
    if (field(j, "format", "").get<std::string>() != kFormatName)
      throw Error(fmt::format("checkpoint manifest '{}': 'format' is not '{}'", path, kFormatName));
    const int version = field(j, "format_version", "").get<int>();
    if (version != kFormatVersion)
      throw Error(
          fmt::format("checkpoint manifest '{}': format_version {} is not supported "
                      "(this build reads version {})",
                      path, version, kFormatVersion));
    m.step = field(j, "step", "").get<int64_t>();
    m.world_size = field(j, "world_size", "").get<int>();
    m.total_bytes = field(j, "total_bytes", "").get<uint64_t>();
    m.config_text = field(j, "config_text", "").get<std::string>();
    m.meta_json = field(j, "meta_json", "").get<std::string>();
    const json& tensors = field(j, "tensors", "");
    const json& shards = field(j, "shards", "");
    if (!tensors.is_array() || !shards.is_array())
      throw Error(
          fmt::format("checkpoint manifest '{}': 'tensors' and 'shards' must be arrays", path));
    for (size_t i = 0; i < tensors.size(); ++i) {
      const std::string where = fmt::format(" in tensors[{}]", i);
      TensorEntry e;
      e.name = field(tensors[i], "name", where).get<std::string>();
      e.dtype = field(tensors[i], "dtype", where).get<std::string>();
      e.shape = field(tensors[i], "shape", where).get<std::vector<int64_t>>();
      e.offset = field(tensors[i], "offset", where).get<uint64_t>();
      e.nbytes = field(tensors[i], "nbytes", where).get<uint64_t>();
      m.tensors.push_back(std::move(e));
    }
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string where = fmt::format(" in shards[{}]", i);
      ShardEntry s;
      s.file = field(shards[i], "file", where).get<std::string>();
      s.begin = field(shards[i], "begin", where).get<uint64_t>();
      s.end = field(shards[i], "end", where).get<uint64_t>();
      const std::string crc = field(shards[i], "crc32", where).get<std::string>();
      size_t used = 0;
      unsigned long value = 0;
      try {
        value = std::stoul(crc, &used, 16);
      } catch (const std::exception&) {
        used = 0;
      }
      if (crc.empty() || used != crc.size() || value > 0xffffffffUL)
        throw Error(fmt::format("checkpoint manifest '{}': crc32 '{}'{} is not 8 hex digits", path,
                                crc, where));
      s.crc32 = static_cast<uint32_t>(value);
      m.shards.push_back(std::move(s));
    }
  } catch (const json::exception& e) {
    throw Error(
        fmt::format("checkpoint manifest '{}' has a field of the wrong type: {}", path, e.what()));
  }

  // The tables must tile [0, total_bytes) exactly, or bytes would land in the wrong tensor.
  uint64_t offset = 0;
  for (const auto& e : m.tensors) {
    const auto type = dtype_from_name(e.dtype);
    if (!type)
      throw Error(fmt::format("checkpoint manifest '{}': tensor '{}' has unknown dtype '{}'", path,
                              e.name, e.dtype));
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0)
        throw Error(fmt::format("checkpoint manifest '{}': tensor '{}' has a negative dimension",
                                path, e.name));
      numel *= static_cast<uint64_t>(d);
    }
    if (e.offset != offset || e.nbytes != numel * c10::elementSize(*type))
      throw Error(
          fmt::format("checkpoint manifest '{}': tensor '{}' has offset {} and {} bytes, "
                      "expected offset {} and {} bytes",
                      path, e.name, e.offset, e.nbytes, offset, numel * c10::elementSize(*type)));
    offset += e.nbytes;
  }
  if (offset != m.total_bytes)
    throw Error(fmt::format("checkpoint manifest '{}': tensors hold {} bytes, total_bytes says {}",
                            path, offset, m.total_bytes));
  if (m.world_size < 1 || m.shards.size() != static_cast<size_t>(m.world_size))
    throw Error(fmt::format("checkpoint manifest '{}': {} shards listed for world_size {}", path,
                            m.shards.size(), m.world_size));
  uint64_t cursor = 0;
  for (const auto& s : m.shards) {
    if (s.begin != cursor || s.end < s.begin)
      throw Error(
          fmt::format("checkpoint manifest '{}': shard '{}' covers [{}, {}), expected it "
                      "to start at {}",
                      path, s.file, s.begin, s.end, cursor));
    if (s.file.empty() || s.file.find('/') != std::string::npos)
      throw Error(fmt::format("checkpoint manifest '{}': shard file name '{}' is not a plain name",
                              path, s.file));
    cursor = s.end;
  }
  if (cursor != m.total_bytes)
    throw Error(fmt::format("checkpoint manifest '{}': shards cover {} bytes, total_bytes says {}",
                            path, cursor, m.total_bytes));
  return m;
}

// A folder counts as a complete checkpoint when its manifest parses and every shard it names
// exists; read_checkpoint verifies the checksums.
bool is_complete(const fs::path& dir, std::string* why = nullptr) {
  try {
    const Manifest m = parse_manifest((dir / kManifestName).string());
    for (const auto& s : m.shards) {
      std::error_code ec;
      if (!fs::is_regular_file(dir / s.file, ec))
        throw Error(fmt::format("shard '{}' is missing", (dir / s.file).string()));
    }
    return true;
  } catch (const Error& e) {
    if (why) *why = e.what();
    return false;
  }
}

struct StepFolder {
  int64_t step = 0;
  fs::path path;
};

// Complete step-* folders of a checkpoints folder, oldest first.
std::vector<StepFolder> complete_step_folders(const fs::path& checkpoints_dir) {
  std::vector<StepFolder> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir, ec)) {
    const auto step = parse_step_name(entry.path().filename().string());
    if (!step || !entry.is_directory(ec)) continue;
    if (is_complete(entry.path())) found.push_back({*step, entry.path()});
  }
  std::sort(found.begin(), found.end(),
            [](const StepFolder& a, const StepFolder& b) { return a.step < b.step; });
  return found;
}

// Moves the finished temporary folder to its final name. When that name exists (the same step
// written again, e.g. after a resume) the two are swapped atomically with renameat2 where the
// file system allows; otherwise the old folder is moved aside to .old-step-X first, so at every
// instant a complete copy exists under one of the names find_checkpoint looks at.
void publish_folder(const fs::path& tmp_dir, const fs::path& final_dir, const fs::path& parent) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(final_dir, ec))) {
    rename_or_throw(tmp_dir.string(), final_dir.string());
    return;
  }
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, tmp_dir.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_path(parent.string(), /*directory=*/true);
    remove_tree_logged(tmp_dir, "the replaced copy");  // the temporary name now holds the old one
    return;
  }
#endif
  const fs::path aside = parent / (std::string(kOldPrefix) + final_dir.filename().string());
  remove_tree(aside);
  rename_or_throw(final_dir.string(), aside.string());
  rename_or_throw(tmp_dir.string(), final_dir.string());
  fsync_path(parent.string(), /*directory=*/true);
  remove_tree_logged(aside, "the replaced copy");
}

// Rank 0's part after every shard is on disk: manifest, rename, `latest`, pruning.
void commit_on_rank0(const fs::path& checkpoints_dir, const fs::path& tmp_dir,
                     const fs::path& final_dir, const Manifest& manifest, int keep_last) {
  // The manifest is written last and made durable before the rename: a step-* folder without
  // one can therefore only come from outside this protocol.
  write_file_durably((tmp_dir / kManifestName).string(), manifest_text(manifest));
  fsync_path(tmp_dir.string(), /*directory=*/true);
  publish_folder(tmp_dir, final_dir, checkpoints_dir);
  fsync_path(checkpoints_dir.string(), /*directory=*/true);

  // `latest` is replaced by rename, so a reader sees the old name or the new one, never half.
  const fs::path latest_tmp = checkpoints_dir / (std::string(kLatestName) + ".tmp");
  write_file_durably(latest_tmp.string(), final_dir.filename().string() + "\n");
  rename_or_throw(latest_tmp.string(), (checkpoints_dir / kLatestName).string());
  fsync_path(checkpoints_dir.string(), /*directory=*/true);

  // Keep the keep_last newest complete checkpoints and, always, the one just written.
  const auto complete = complete_step_folders(checkpoints_dir);
  const size_t keep = static_cast<size_t>(keep_last);
  for (size_t i = 0; i + keep < complete.size(); ++i) {
    if (complete[i].path.filename() == final_dir.filename()) continue;
    remove_tree_logged(complete[i].path, "old checkpoint");
  }
  // Leftovers of interrupted writes (ours is renamed by now).
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (starts_with(name, kTmpPrefix) || starts_with(name, kOldPrefix))
      stale.push_back(entry.path());
  }
  for (const auto& path : stale) remove_tree_logged(path, "stale");
}

}  // namespace

std::string write_checkpoint(MPI_Comm comm, const std::string& run_dir,
                             const CheckpointState& state, const CheckpointWriteOptions& options) {
  int rank = 0, world = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &world));
  const fs::path checkpoints_dir = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = checkpoints_dir / step_name(state.step);
  const fs::path tmp_dir = checkpoints_dir / (std::string(kTmpPrefix) + step_name(state.step));
  const std::string what = fmt::format("writing checkpoint {}", final_dir.string());

  // Phase 1: every rank checks its inputs; rank 0 prepares a fresh temporary folder.
  std::vector<TensorEntry> table;
  uint64_t total = 0;
  std::string error = capture_error([&] {
    if (options.keep_last < 1)
      throw Error(fmt::format("keep_last must be >= 1, got {}", options.keep_last));
    if (state.step < 0) throw Error(fmt::format("step must be >= 0, got {}", state.step));
    table = tensor_table(state);
    total = table.empty() ? 0 : table.back().offset + table.back().nbytes;
    if (rank == 0) {
      fs::create_directories(checkpoints_dir);
      remove_tree(tmp_dir);
      if (!fs::create_directory(tmp_dir))
        throw Error(fmt::format("cannot create '{}'", tmp_dir.string()));
    }
  });
  agree_or_throw(comm, error, what);
  // Every rank must cut the same byte stream, or the slices would not fit together.
  uint64_t totals[2] = {total, ~total};
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, totals, 2, MPI_UINT64_T, MPI_MAX, comm));
  if (totals[0] != total || ~totals[1] != total)
    throw Error(
        fmt::format("[ckpt] {}: ranks disagree on the state size (this rank has {} bytes); "
                    "every rank must pass the same tensor list",
                    what, total));

  // Phase 2: each rank writes and fsyncs its slice.
  const auto [begin, end] = shard_range(total, rank, world);
  uint32_t crc = 0;
  error = capture_error([&] {
    if (const char* fail = std::getenv(kFailRankEnv); fail && std::atoi(fail) == rank)
      throw Error(fmt::format("injected failure ({}={})", kFailRankEnv, fail));
    const std::vector<uint8_t> bytes = gather_slice(state, table, begin, end);
    crc = crc32_of(bytes.data(), bytes.size());
    write_shard((tmp_dir / shard_name(rank, world)).string(), bytes, begin, end);
  });
  try {
    agree_or_throw(comm, error, what);
  } catch (const Error&) {
    if (rank == 0) capture_error([&] { remove_tree(tmp_dir); });  // best effort
    throw;
  }

  // Phase 3: rank 0 collects the checksums and commits; the others wait for its verdict.
  std::vector<uint32_t> crcs(static_cast<size_t>(world));
  MPI_CHECK(MPI_Gather(&crc, 1, MPI_UINT32_T, crcs.data(), 1, MPI_UINT32_T, 0, comm));
  error.clear();
  if (rank == 0) {
    error = capture_error([&] {
      Manifest m;
      m.step = state.step;
      m.world_size = world;
      m.total_bytes = total;
      m.config_text = options.config_text;
      m.meta_json = state.meta_json;
      m.tensors = table;
      for (int r = 0; r < world; ++r) {
        const auto [b, e] = shard_range(total, r, world);
        m.shards.push_back({shard_name(r, world), b, e, crcs[static_cast<size_t>(r)]});
      }
      commit_on_rank0(checkpoints_dir, tmp_dir, final_dir, m, options.keep_last);
    });
  }
  agree_or_throw(comm, error, what);
  log0("[ckpt] wrote {} ({} bytes in {} shards)", final_dir.string(), total, world);
  return final_dir.string();
}

std::optional<std::string> find_checkpoint(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (!fs::is_directory(p, ec)) return std::nullopt;

  // A step folder itself: it is the answer when complete.
  if (fs::exists(p / kManifestName, ec) || parse_step_name(p.filename().string())) {
    std::string why;
    if (is_complete(p, &why)) return p.string();
    log0("[ckpt] {} is not a complete checkpoint: {}", p.string(), why);
    return std::nullopt;
  }

  const fs::path checkpoints_dir = fs::is_directory(p / "checkpoints", ec) ? p / "checkpoints" : p;
  const fs::path latest = checkpoints_dir / kLatestName;
  if (fs::is_regular_file(latest, ec)) {
    std::ifstream in(latest);
    std::string name;
    std::getline(in, name);
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    std::string why = "it names no step folder";
    if (parse_step_name(name) && is_complete(checkpoints_dir / name, &why))
      return (checkpoints_dir / name).string();
    log0(
        "[ckpt] {} points to '{}', which is not a complete checkpoint ({}); looking for the "
        "newest complete one",
        latest.string(), name, why);
  }

  const auto complete = complete_step_folders(checkpoints_dir);
  if (!complete.empty()) {
    log0("[ckpt] using {} (newest complete checkpoint{})", complete.back().path.string(),
         fs::exists(latest, ec) ? "" : "; no 'latest' pointer");
    return complete.back().path.string();
  }
  // A crash between the two renames of a same-step rewrite leaves the old copy under .old-*.
  for (const auto& entry : fs::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (starts_with(name, kOldPrefix) && is_complete(entry.path())) {
      log0("[ckpt] using {} (moved aside by an interrupted rewrite)", entry.path().string());
      return entry.path().string();
    }
  }
  return std::nullopt;
}

LoadedCheckpoint read_checkpoint(const std::string& step_dir) {
  const fs::path dir(step_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(fmt::format("checkpoint folder '{}' does not exist", step_dir));
  const Manifest m = parse_manifest((dir / kManifestName).string());

  LoadedCheckpoint loaded;
  loaded.dir = step_dir;
  loaded.step = m.step;
  loaded.written_by_world_size = m.world_size;
  loaded.config_text = m.config_text;
  loaded.state.step = m.step;
  loaded.state.meta_json = m.meta_json;
  std::vector<uint8_t*> destinations;
  for (const auto& e : m.tensors) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(*dtype_from_name(e.dtype)));
    destinations.push_back(static_cast<uint8_t*>(t.data_ptr()));
    loaded.state.tensors.emplace_back(e.name, std::move(t));
  }

  // One shard in memory at a time; its bytes are verified, then scattered into the tensors.
  for (const auto& s : m.shards) {
    const std::string shard_path = (dir / s.file).string();
    const std::vector<uint8_t> bytes = read_shard(shard_path, s.end - s.begin);
    const uint32_t crc = crc32_of(bytes.data(), bytes.size());
    if (crc != s.crc32)
      throw Error(
          fmt::format("checkpoint shard '{}' is corrupt: its CRC32 is {}, the manifest "
                      "says {}",
                      shard_path, crc_text(crc), crc_text(s.crc32)));
    for (size_t i = 0; i < m.tensors.size(); ++i) {
      const auto& e = m.tensors[i];
      const uint64_t lo = std::max(s.begin, e.offset), hi = std::min(s.end, e.offset + e.nbytes);
      if (lo >= hi) continue;
      std::memcpy(destinations[i] + (lo - e.offset), bytes.data() + (lo - s.begin), hi - lo);
    }
  }
  return loaded;
}

}  // namespace diffusion
