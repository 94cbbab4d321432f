// One checkpoint shard: an HDF5 file holding one rank's contiguous slice of the state bytes as
// the uint8 dataset "bytes" (with its begin/end as attributes), fsynced before the manifest may
// name it; and the CRC32 the manifest keeps of each slice.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace diffusion {

// Creates `path` (it must not exist) with bytes [begin, end) of the state, flushed and fsynced.
void write_shard(const std::string& path, const std::vector<uint8_t>& bytes, uint64_t begin, uint64_t end);
// The bytes of a shard, which must hold exactly `expected_size` of them.
std::vector<uint8_t> read_shard(const std::string& path, uint64_t expected_size);

uint32_t crc32_of(const uint8_t* data, uint64_t size);  // zlib's CRC32

}  // namespace diffusion
