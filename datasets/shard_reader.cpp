// ShardReader: the W-invariant global sample stream, this rank's slice of each global batch,
// and the prefetch thread that builds batches ahead of training (stream rules in the header).
#include "datasets/shard_reader.h"

#include <torch/torch.h>

#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "core/base/error.h"
#include "core/base/h5.h"
#include "core/base/log.h"
#include "core/base/rng.h"

namespace diffusion {
namespace {

// Row of each global position. Holds one epoch's permutation and recomputes it when the stream
// crosses into another epoch; positions only grow, so that happens once per epoch.
class EpochOrder {
 public:
  EpochOrder(int64_t num_samples, uint64_t seed) : num_samples_(num_samples), seed_(seed) {}

  int64_t row(int64_t position) {
    const int64_t epoch = position / num_samples_;
    if (epoch != epoch_) {
      perm_ = keyed_permutation(num_samples_, stream_key(seed_, RngPurpose::kEpochPermutation,
                                                         {static_cast<uint64_t>(epoch)}));
      epoch_ = epoch;
    }
    return perm_[static_cast<size_t>(position % num_samples_)];
  }

 private:
  int64_t num_samples_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_;
};

bool flip_at(uint64_t seed, int64_t position) {
  KeyedRng rng(stream_key(seed, RngPurpose::kFlip, {static_cast<uint64_t>(position)}));
  return (rng.next_u64() & 1) != 0;
}

// u8 → [-1, 1] as v / 127.5 - 1 in float32: 0 → -1 and 255 → 1 exactly.
std::array<float, 256> pixel_table() {
  std::array<float, 256> table{};
  for (int v = 0; v < 256; ++v)
    table[static_cast<size_t>(v)] = static_cast<float>(v) / 127.5f - 1.0f;
  return table;
}

}  // namespace

// Owns everything the prefetch thread touches: the file reader (or the in-memory copy), the
// epoch order and the queue. The thread is the only user of `file_` once it starts.
struct ShardReader::Prefetcher {
  ShardReaderConfig config;
  DatasetInfo info;
  int64_t local_batch = 0;

  // Exactly one source: the whole file in memory, or the file itself.
  std::vector<uint8_t> images;  // [N, H, W, C] when in memory
  std::vector<float> vectors;   // [N, D] when in memory
  std::vector<int64_t> labels;  // [N] when in memory and labelled
  std::unique_ptr<DatasetReader> file;

  EpochOrder order;
  std::array<float, 256> pixels = pixel_table();
  std::vector<uint8_t> raw_images;  // [b, H, W, C] scratch for one batch

  // Queue state, guarded by `mutex`. `space` wakes the producer, `ready` the consumer.
  std::mutex mutex;
  std::condition_variable space;
  std::condition_variable ready;
  std::deque<ShardBatch> queue;
  std::exception_ptr error;
  bool stop = false;
  std::thread thread;

  Prefetcher(const ShardReaderConfig& cfg, DatasetInfo inf, int64_t b)
      : config(cfg), info(std::move(inf)), local_batch(b), order(info.num_samples, cfg.seed) {}

  // Stops the thread on every path out, including a constructor that failed after start().
  ~Prefetcher() { shutdown(); }

  void start() {
    thread = std::thread([this] { run(); });
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    space.notify_all();
    if (thread.joinable()) thread.join();
  }

  void run() {
    h5_silence_errors();  // per thread: HDF5's stack goes into our exceptions, not stderr
    int64_t window = config.start_position;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        space.wait(lock,
                   [&] { return stop || static_cast<int>(queue.size()) < config.prefetch_depth; });
        if (stop) return;
      }
      ShardBatch batch;
      try {
        batch = build(window);
      } catch (const std::exception& e) {
        fail(window, e.what());
        return;
      } catch (...) {
        fail(window, "unknown exception");
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mutex);
        queue.push_back(std::move(batch));
      }
      ready.notify_one();
      window += config.global_batch;
    }
  }

  void fail(int64_t window, const std::string& what) {
    const int64_t first = window + config.rank * local_batch;
    auto message = fmt::format(
        "[data] shard reader for {} (rank {}/{}): prefetching step {} (global positions {}..{}) "
        "failed: {}",
        config.path, config.rank, config.world_size, window / config.global_batch, first,
        first + local_batch - 1, what);
    {
      std::lock_guard<std::mutex> lock(mutex);
      error = std::make_exception_ptr(Error(message));
    }
    ready.notify_all();
  }

  // This rank's slice of the window that starts at global position `window`.
  ShardBatch build(int64_t window) {
    const int64_t b = local_batch;
    ShardBatch batch;
    batch.step = window / config.global_batch;
    batch.positions.resize(static_cast<size_t>(b));
    batch.rows.resize(static_cast<size_t>(b));
    batch.flipped.assign(static_cast<size_t>(b), 0);
    const int64_t first = window + config.rank * b;
    for (int64_t i = 0; i < b; ++i) {
      const auto k = static_cast<size_t>(i);
      batch.positions[k] = first + i;
      batch.rows[k] = order.row(first + i);
      if (config.random_flip) batch.flipped[k] = flip_at(config.seed, first + i) ? 1 : 0;
    }

    const int64_t elements = info.sample_elements();
    if (info.kind == DataKind::kImages) {
      const int64_t h = info.sample_shape[0], w = info.sample_shape[1], c = info.sample_shape[2];
      raw_images.resize(static_cast<size_t>(b * elements));  // [b, H, W, C]
      if (file) {
        file->read_images(batch.rows, raw_images.data());
      } else {
        for (int64_t i = 0; i < b; ++i)
          std::memcpy(raw_images.data() + i * elements,
                      images.data() + batch.rows[static_cast<size_t>(i)] * elements,
                      static_cast<size_t>(elements));
      }
      batch.x = torch::empty({b, c, h, w}, torch::kFloat32);  // [b, C, H, W]
      float* out = batch.x.data_ptr<float>();
      for (int64_t i = 0; i < b; ++i) {
        const uint8_t* src = raw_images.data() + i * elements;  // [H, W, C]
        const bool flip = batch.flipped[static_cast<size_t>(i)] != 0;
        for (int64_t ch = 0; ch < c; ++ch) {
          for (int64_t y = 0; y < h; ++y) {
            float* dst = out + ((i * c + ch) * h + y) * w;
            const uint8_t* line = src + y * w * c + ch;
            for (int64_t col = 0; col < w; ++col) {
              const int64_t from = flip ? w - 1 - col : col;
              dst[col] = pixels[line[from * c]];
            }
          }
        }
      }
    } else {
      batch.x = torch::empty({b, elements}, torch::kFloat32);  // [b, D]
      float* out = batch.x.data_ptr<float>();
      if (file) {
        file->read_vectors(batch.rows, out);
      } else {
        for (int64_t i = 0; i < b; ++i)
          std::memcpy(out + i * elements,
                      vectors.data() + batch.rows[static_cast<size_t>(i)] * elements,
                      static_cast<size_t>(elements) * sizeof(float));
      }
    }

    if (info.has_labels) {
      batch.labels = torch::empty({b}, torch::kInt64);  // [b]
      int64_t* out = batch.labels.data_ptr<int64_t>();
      if (file) {
        file->read_labels(batch.rows, out);
      } else {
        for (int64_t i = 0; i < b; ++i)
          out[i] = labels[static_cast<size_t>(batch.rows[static_cast<size_t>(i)])];
      }
    }
    return batch;
  }
};

ShardReader::ShardReader(const ShardReaderConfig& config) : config_(config) {
  const auto& path = config.path;
  // Configuration first: these need no file, but the messages still name it.
  if (config.world_size < 1 || config.rank < 0 || config.rank >= config.world_size)
    throw Error(fmt::format("[data] shard reader for {}: rank {} is not in [0, world size {})",
                            path, config.rank, config.world_size));
  if (config.global_batch <= 0)
    throw Error(fmt::format("[data] shard reader for {}: global batch B={} must be positive", path,
                            config.global_batch));
  if (config.global_batch % config.world_size != 0)
    throw Error(fmt::format(
        "[data] shard reader for {}: global batch B={} is not divisible by world size W={} "
        "(every rank takes B/W samples per step{})",
        path, config.global_batch, config.world_size,
        config.global_batch < config.world_size ? "; B < W would leave ranks without data" : ""));
  if (config.start_position < 0)
    throw Error(fmt::format("[data] shard reader for {}: start position {} is negative", path,
                            config.start_position));
  if (config.prefetch_depth < 1)
    throw Error(fmt::format("[data] shard reader for {}: prefetch depth {} must be at least 1",
                            path, config.prefetch_depth));
  if (config.memory_limit_bytes < 0)
    throw Error(fmt::format("[data] shard reader for {}: memory limit {} bytes is negative", path,
                            config.memory_limit_bytes));
  local_batch_ = config.global_batch / config.world_size;
  next_position_ = config.start_position;

  std::unique_ptr<DatasetReader> file;
  try {
    file = std::make_unique<DatasetReader>(path);
  } catch (const std::exception& e) {
    // The reader's own message names the file and key; say who wanted it.
    throw Error(fmt::format("[data] shard reader cannot open {}: {}", path, e.what()));
  }
  info_ = file->info();
  if (config.random_flip && info_.kind != DataKind::kImages)
    throw Error(fmt::format(
        "[data] shard reader for {}: horizontal flip was asked for, but the file holds vectors "
        "(x {}), not images",
        path, info_.describe()));

  const int64_t n = info_.num_samples;
  const int64_t elements = info_.sample_elements();
  const int64_t value_bytes = info_.kind == DataKind::kImages ? 1 : 4;
  const int64_t bytes = n * elements * value_bytes + (info_.has_labels ? n * 8 : 0);
  in_memory_ = bytes <= config.memory_limit_bytes;

  prefetcher_ = std::make_unique<Prefetcher>(config, info_, local_batch_);
  auto& p = *prefetcher_;
  if (in_memory_) {
    // One sequential read now beats N random reads per epoch; the reader is closed after it.
    if (info_.kind == DataKind::kImages) {
      p.images.resize(static_cast<size_t>(n * elements));
      file->read_images_range(0, n, p.images.data());
    } else {
      p.vectors.resize(static_cast<size_t>(n * elements));
      file->read_vectors_range(0, n, p.vectors.data());
    }
    if (info_.has_labels) {
      p.labels.resize(static_cast<size_t>(n));
      file->read_labels_range(0, n, p.labels.data());
    }
  } else {
    // Handed over before the thread starts: from here on only the thread uses the reader.
    p.file = std::move(file);
  }
  log0("[data] shard reader: {} ({} MiB) {}; global batch {}, {} per rank, start position {}",
       info_.describe(), bytes >> 20,
       in_memory_ ? "served from memory" : "read per batch from file", config.global_batch,
       local_batch_, config.start_position);
  p.start();
}

ShardReader::~ShardReader() {
  if (prefetcher_) prefetcher_->shutdown();
}

ShardBatch ShardReader::next() {
  auto& p = *prefetcher_;
  ShardBatch batch;
  {
    std::unique_lock<std::mutex> lock(p.mutex);
    p.ready.wait(lock, [&] { return !p.queue.empty() || p.error; });
    // Batches built before a failure are still good; the error surfaces when they run out.
    if (p.queue.empty()) std::rethrow_exception(p.error);
    batch = std::move(p.queue.front());
    p.queue.pop_front();
  }
  p.space.notify_one();
  next_position_ += config_.global_batch;
  return batch;
}

}  // namespace diffusion
