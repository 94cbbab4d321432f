// Sharded checkpoints: the byte layout and the folder protocol of core/io/checkpoint.h
// (documented for users in docs/formats.md, "Checkpoints"). The manifest and the shard files
// have their own files (manifest.h, checkpoint_shard.h).
//
// The protocol, in order; a crash at any point leaves the previous checkpoint loadable:
//   1. every rank checks its inputs; rank 0 creates checkpoints/.tmp-step-X   (agree)
//   2. every rank writes and fsyncs its shard slice into it                    (agree)
//   3. rank 0 gathers the CRC32s, writes manifest.json last and fsyncs it and the folder
//   4. rank 0 renames .tmp-step-X to step-X (swapping with an existing step-X) and fsyncs
//   5. rank 0 replaces `latest` atomically, then prunes beyond keep_last      (agree)
// A folder without a valid manifest, or whose checksums fail, is never loaded.
#include "core/io/checkpoint.h"

#include <fcntl.h>

#include <ATen/ATen.h>
#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/base/durable_file.h"
#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"
#include "core/io/checkpoint_shard.h"
#include "core/io/manifest.h"

namespace diffusion {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLatestName = "latest";
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

void rename_or_throw(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    throw Error(fmt::format("cannot rename '{}' to '{}': {}", from, to, errno_text()));
}

// Removes a file or a folder tree without following symbolic links. Written out instead of

// left for the next write, but does not turn a successful checkpoint into a failed one.
void remove_tree_logged(const fs::path& path, const char* what) {
  log0("[ckpt] removing {} {}", what, path.string());
  try {
    remove_tree(path.string());
  } catch (const std::exception& e) {
    log_rank("[ckpt] warning: could not remove {}: {}", path.string(), e.what());
  }
}

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
  remove_tree(aside.string());
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
  write_file_atomic((tmp_dir / kManifestName).string(), manifest_text(manifest));
  fsync_path(tmp_dir.string(), /*directory=*/true);
  publish_folder(tmp_dir, final_dir, checkpoints_dir);
  fsync_path(checkpoints_dir.string(), /*directory=*/true);

  // `latest` is replaced by rename, so a reader sees the old name or the new one, never half.
  write_file_atomic((checkpoints_dir / kLatestName).string(), final_dir.filename().string() + "\n");
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

std::vector<CheckpointFolder> complete_checkpoints(const std::string& folder) {
  std::vector<CheckpointFolder> out;
  for (const auto& f : complete_step_folders(folder)) out.push_back({f.step, f.path.string()});
  return out;
}

std::string write_checkpoint(MPI_Comm comm, const std::string& run_dir,
                             const CheckpointState& state, const CheckpointWriteOptions& options) {
  int rank = 0, world = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &world));
  const fs::path checkpoints_dir = fs::path(run_dir) / options.folder;
  const fs::path final_dir = checkpoints_dir / step_name(state.step);
  const fs::path tmp_dir = checkpoints_dir / (std::string(kTmpPrefix) + step_name(state.step));
  const std::string what = fmt::format("[ckpt] writing checkpoint {}", final_dir.string());

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
      remove_tree(tmp_dir.string());
      if (!fs::create_directory(tmp_dir))
        throw Error(fmt::format("cannot create '{}'", tmp_dir.string()));
    }
  });
  agree_or_throw(comm, error, what);
  // Every rank must cut the same byte stream, or the slices would not fit together.
  uint64_t totals[2] = {total, ~total};
  {
    CollectiveScope scope("checkpoint size all-reduce", comm);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, totals, 2, MPI_UINT64_T, MPI_MAX, comm));
  }
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
    if (rank == 0) capture_error([&] { remove_tree(tmp_dir.string()); });  // best effort
    throw;
  }

  // Phase 3: rank 0 collects the checksums and commits; the others wait for its verdict.
  std::vector<uint32_t> crcs(static_cast<size_t>(world));
  {
    CollectiveScope scope("checkpoint CRC gather", comm);
    MPI_CHECK(MPI_Gather(&crc, 1, MPI_UINT32_T, crcs.data(), 1, MPI_UINT32_T, 0, comm));
  }
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