// ShardReader: the training data stream of one rank. A global, W-independent sequence of sample
// positions is cut into global batches and each rank reads its contiguous slice of every batch,
// with a prefetch thread so that training does not wait on I/O. See docs/data_loading.md.
//
// The stream (identical at every rank count W):
//   - Global positions p = 0, 1, 2, ... run forever. Position p is in epoch e = p / N and reads
//     dataset row perm_e[p % N], where perm_e = keyed_permutation(N, stream_key(seed,
//     RngPurpose::kEpochPermutation, {e})).
//   - A global batch of B positions is split into W equal contiguous slices (W must divide B):
//     window k of a reader started at position s covers [s + k·B, s + (k+1)·B), and rank r
//     takes [s + k·B + r·B/W, s + k·B + (r+1)·B/W). The ranks' slices are disjoint, their
//     union is the whole window, and concatenated in rank order they are the same global
//     sequence at every W.
//   - Uneven N / W, or N not a multiple of B: nothing is dropped or padded. The stream runs on
//     into the next epoch's permutation, so an epoch boundary may fall inside a batch (and
//     inside one rank's slice). Within each epoch every row is read exactly once over all ranks.
//   - Resume: start_position (normally step·B) starts the reader anywhere in the stream; what
//     follows is exactly what an uninterrupted reader would have produced from there.
//   - Horizontal flip (images only, optional) is decided per global position p by
//     KeyedRng(stream_key(seed, RngPurpose::kFlip, {p})).next_u64() & 1, so it too is the same
//     at every W and after a resume.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "datasets/dataset_file.h"

namespace diffusion {

struct ShardReaderConfig {
  std::string path;            // dataset file in the format of docs/formats.md
  int64_t global_batch = 0;    // B: samples per step over all ranks
  int rank = 0;                // r in [0, W)
  int world_size = 1;          // W; must divide B
  uint64_t seed = 0;           // keys the epoch permutations and the flips
  int64_t start_position = 0;  // first global position of the first window (step·B)
  bool random_flip = false;    // horizontal flip with probability 1/2; images only
  // Whole file loaded at open when its values and labels fit under this; else read per batch.
  int64_t memory_limit_bytes = int64_t{1} << 30;
  int prefetch_depth = 2;  // batches the prefetch thread keeps ready
};

// One rank's slice of one global batch; b = B / W samples.
struct ShardBatch {
  at::Tensor x;                    // float32; images [b, C, H, W] in [-1, 1], vectors [b, D]
  at::Tensor labels;               // int64 [b]; undefined when the file has no labels
  std::vector<int64_t> rows;       // dataset row of each sample
  std::vector<int64_t> positions;  // global stream position of each sample
  std::vector<uint8_t> flipped;    // 1 where the sample was mirrored
  int64_t step = 0;                // floor(first position of the window / B)
};

class ShardReader {
 public:
  // Opens and validates the file, loads it into memory when it fits, and starts prefetching.
  // Throws diffusion::Error naming the file for bad files or a bad configuration.
  explicit ShardReader(const ShardReaderConfig& config);
  // Stops the prefetch thread and joins it; never blocks on a consumer that stopped early.
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  // The next window's slice for this rank. Rethrows, with the file and step, an error that the
  // prefetch thread hit; every later call throws the same error.
  ShardBatch next();

  const DatasetInfo& info() const { return info_; }
  int64_t local_batch() const { return local_batch_; }
  bool in_memory() const { return in_memory_; }
  // First global position of the window that next() returns (checkpoint this to resume).
  int64_t next_position() const { return next_position_; }

 private:
  struct Prefetcher;

  ShardReaderConfig config_;
  DatasetInfo info_;
  int64_t local_batch_ = 0;
  bool in_memory_ = false;
  int64_t next_position_ = 0;
  std::unique_ptr<Prefetcher> prefetcher_;
};

}  // namespace diffusion
