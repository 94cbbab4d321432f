// The checkpoint manifest (see manifest.h).
#include "core/io/manifest.h"

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/base/error.h"

namespace diffusion {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kFormatVersion = 1;
constexpr const char* kFormatName = "diffusion-checkpoint";

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

}  // namespace

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

std::string crc_text(uint32_t crc) { return fmt::format("{:08x}", crc); }

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

}  // namespace diffusion
