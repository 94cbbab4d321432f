// The manifest of a checkpoint folder (manifest.json, written last): the tensor table that cuts
// the concatenated state bytes into named tensors, the shard table with each shard's byte range
// and CRC32, the config and the trainer's counters. Its format is documented for readers in
// other languages in docs/formats.md, "Checkpoints".
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace diffusion {

constexpr const char* kManifestName = "manifest.json";

struct TensorEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
};

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

// NumPy's names ("float32", "int64", …), so a Python reader can np.frombuffer(..., dtype=name)
// (bfloat16 excepted); nullopt for a dtype checkpoints do not store.
std::optional<std::string> dtype_name(at::ScalarType type);
std::optional<at::ScalarType> dtype_from_name(const std::string& name);

std::string crc_text(uint32_t crc);  // 8 lowercase hex digits

std::string manifest_text(const Manifest& m);
// Parses and checks a manifest (the tables must tile the bytes exactly); every error names the
// file and the key at fault.
Manifest parse_manifest(const std::string& path);

}  // namespace diffusion
