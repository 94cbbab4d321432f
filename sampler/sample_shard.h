// The sampler's on-disk output: one shard file per rank, written in place as batches finish,
// and the virtual dataset over them. A shard is created whole (datasets allocated at their
// final size, contiguous, no fill) under a temporary name and renamed, so after creation a
// batch only writes raw rows; its progress (rows complete, a prefix) lives in a side file
// replaced by rename after the rows are written. A kill at any moment therefore leaves a
// valid shard whose recorded rows are final; a restart continues after them. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffusion {

struct ShardLayout {
  bool images = false;             // uint8 `images` [n, H, W, C]; else float32 `x` [n, ...]
  std::vector<int64_t> row_shape;  // images: {H, W, C}; x: {D} or {H, W, C} with --save-float
  bool has_labels = false;         // int64 `labels` [n]
  int64_t rows = 0;                // n, this rank's samples
  int64_t first_index = 0;         // global index of row 0 (also stored per row in `indices`)
};

// "shards/rank-00002-of-00004.h5" relative to the output folder; with array tasks (tasks > 1)
// in a folder per task, "shards/task-00001-of-00003/rank-00002-of-00004.h5".
std::string shard_relative_path(int rank, int world_size, int task = 0, int tasks = 1);

class SampleShard {
 public:
  // Opens `path`, creating it when absent; an existing shard must have this layout.
  SampleShard(const std::string& path, const ShardLayout& layout);
  ~SampleShard();
  SampleShard(const SampleShard&) = delete;
  SampleShard& operator=(const SampleShard&) = delete;

  // Rows [0, complete()) are final.
  int64_t complete() const { return complete_; }

  // Writes rows [complete(), complete() + count) and then records them as complete. `data` is
  // uint8 or float32 as the layout says, row-major; `labels` may be null without labels.
  void append(const void* data, const int64_t* labels, const int64_t* indices, int64_t count);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t complete_ = 0;
};

// Rows complete in the shard at `path` according to its progress file (0 when none).
int64_t shard_rows_complete(const std::string& path);

// Writes `out_path` (via a temporary name) holding virtual datasets `images`/`x`, `labels` and
// `indices` of N = Σ rows rows over the shards, whose file names are given relative to the
// folder of `out_path` and stored relative, so the folder can be moved. Shards are in order of
// their first_index, which is contiguous. `num_classes` > 0 is written as an attribute, and
// `class_names` (num_classes strings) when given.
struct ShardRef {
  std::string relative_path;
  ShardLayout layout;
};
void write_virtual_samples(const std::string& out_path, const std::vector<ShardRef>& shards,
                           int64_t num_classes, const std::vector<std::string>& class_names = {});

// Reads rows [0, count) of `images` uint8 from a samples file (through the virtual dataset).
std::vector<uint8_t> read_first_images(const std::string& path, int64_t count);

// A grid of `count` HWC uint8 images (1 px gaps), row-major with `columns` columns (0: a
// square-ish grid), as a PNG. Throws on failure.
void write_grid_png(const std::string& path, const uint8_t* images, int64_t count, int64_t height,
                    int64_t width, int64_t channels, int64_t columns = 0);

}  // namespace diffusion
