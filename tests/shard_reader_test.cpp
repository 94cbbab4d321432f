// ShardReader in one process: ranks are simulated by building one reader per (rank, W). Checks
// the stream rules of datasets/shard_reader.h against an order rebuilt here from
// keyed_permutation, the pixel mapping and layout, flips, labels, resume, the two storage paths,
// shutdown and the errors.
#include "datasets/shard_reader.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/base/error.h"
#include "core/base/rng.h"
#include "datasets/dataset_file.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::ScratchDir;

constexpr int64_t kN = 37;  // divisible by none of W = 2, 3, 4 nor by B
constexpr int64_t kB = 12;  // divisible by W = 1, 2, 3, 4
constexpr int64_t kH = 4, kW = 5, kC = 3;
constexpr int64_t kD = 3;
constexpr int64_t kClasses = 10;
constexpr uint64_t kSeed = 1234;

// HWC pixels of every row, horizontally asymmetric, and holding both 0 and 255.
std::vector<uint8_t> make_pixels(int64_t n) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n * kH * kW * kC));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t y = 0; y < kH; ++y)
      for (int64_t x = 0; x < kW; ++x)
        for (int64_t c = 0; c < kC; ++c)
          pixels[static_cast<size_t>(((r * kH + y) * kW + x) * kC + c)] =
              static_cast<uint8_t>((r * 53 + y * 17 + x * 7 + c * 101) % 256);
  pixels[static_cast<size_t>(1 * kH * kW * kC)] = 255;
  pixels[static_cast<size_t>(3 * kH * kW * kC - 1)] = 0;
  return pixels;
}

int64_t label_of(int64_t row) { return (row * 7) % kClasses; }

uint8_t pixel(const std::vector<uint8_t>& pixels, int64_t row, int64_t y, int64_t x, int64_t c) {
  return pixels[static_cast<size_t>(((row * kH + y) * kW + x) * kC + c)];
}

float vector_value(int64_t row, int64_t d) { return static_cast<float>(row) * 0.5f - d * 1.25f; }

void write_images(const std::string& path, int64_t n, bool labelled) {
  DatasetSpec spec;
  spec.kind = DataKind::kImages;
  spec.sample_shape = {kH, kW, kC};
  spec.has_labels = labelled;
  spec.num_classes = labelled ? kClasses : 0;
  spec.chunk_rows = 8;  // several chunks, so per-batch reads cross chunk boundaries
  const auto pixels = make_pixels(n);
  std::vector<int64_t> labels;
  for (int64_t r = 0; r < n; ++r) labels.push_back(label_of(r));
  DatasetWriter writer(path, spec);
  writer.append_images(pixels.data(), labelled ? labels.data() : nullptr, n);
  writer.commit();
}

void write_vectors(const std::string& path, int64_t n) {
  DatasetSpec spec;
  spec.kind = DataKind::kVectors;
  spec.sample_shape = {kD};
  spec.has_labels = true;
  spec.num_classes = kClasses;
  std::vector<float> x;
  std::vector<int64_t> labels;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t d = 0; d < kD; ++d) x.push_back(vector_value(r, d));
    labels.push_back(label_of(r));
  }
  DatasetWriter writer(path, spec);
  writer.append_vectors(x.data(), labels.data(), n);
  writer.commit();
}

// The stream of datasets/shard_reader.h rebuilt from its definition: row of global position p.
std::vector<int64_t> expected_rows(int64_t n, uint64_t seed, int64_t begin, int64_t end) {
  std::vector<int64_t> rows;
  for (int64_t p = begin; p < end; ++p) {
    const auto perm = keyed_permutation(
        n, stream_key(seed, RngPurpose::kEpochPermutation, {static_cast<uint64_t>(p / n)}));
    rows.push_back(perm[static_cast<size_t>(p % n)]);
  }
  return rows;
}

bool expected_flip(uint64_t seed, int64_t p) {
  return (KeyedRng(stream_key(seed, RngPurpose::kFlip, {static_cast<uint64_t>(p)})).next_u64() &
          1) != 0;
}

ShardReaderConfig config_for(const std::string& path, int rank, int world) {
  ShardReaderConfig config;
  config.path = path;
  config.global_batch = kB;
  config.rank = rank;
  config.world_size = world;
  config.seed = kSeed;
  return config;
}

std::vector<ShardBatch> read_steps(const ShardReaderConfig& config, int64_t steps) {
  ShardReader reader(config);
  std::vector<ShardBatch> batches;
  for (int64_t s = 0; s < steps; ++s) batches.push_back(reader.next());
  return batches;
}

// What all W ranks produce over `steps` windows, concatenated per window in rank order.
struct GlobalStream {
  std::vector<int64_t> rows, positions, steps;
  std::vector<uint8_t> flipped;
  std::vector<torch::Tensor> x, labels;  // per sample
};

GlobalStream global_stream(ShardReaderConfig config, int world, int64_t steps) {
  config.world_size = world;
  std::vector<std::vector<ShardBatch>> per_rank;
  for (int r = 0; r < world; ++r) {
    config.rank = r;
    per_rank.push_back(read_steps(config, steps));
  }
  GlobalStream g;
  for (int64_t s = 0; s < steps; ++s) {
    for (int r = 0; r < world; ++r) {
      const ShardBatch& b = per_rank[static_cast<size_t>(r)][static_cast<size_t>(s)];
      EXPECT_EQ(b.x.size(0), kB / world);
      EXPECT_EQ(static_cast<int64_t>(b.rows.size()), kB / world);
      for (size_t i = 0; i < b.rows.size(); ++i) {
        g.rows.push_back(b.rows[i]);
        g.positions.push_back(b.positions[i]);
        g.flipped.push_back(b.flipped[i]);
        g.steps.push_back(b.step);
        g.x.push_back(b.x[static_cast<int64_t>(i)]);
        if (b.labels.defined()) g.labels.push_back(b.labels[static_cast<int64_t>(i)]);
      }
    }
  }
  return g;
}

void expect_same_stream(const GlobalStream& a, const GlobalStream& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.positions, b.positions);
  EXPECT_EQ(a.flipped, b.flipped);
  EXPECT_EQ(a.steps, b.steps);
  ASSERT_EQ(a.x.size(), b.x.size());
  for (size_t i = 0; i < a.x.size(); ++i) ASSERT_TRUE(testing::tensor_near(a.x[i], b.x[i], 0, 0));
  ASSERT_EQ(a.labels.size(), b.labels.size());
  for (size_t i = 0; i < a.labels.size(); ++i)
    ASSERT_EQ(a.labels[i].item<int64_t>(), b.labels[i].item<int64_t>());
}

class ShardReaderTest : public ::testing::Test {
 protected:
  ShardReaderTest() : dir_("shard_reader_test") {
    images_ = dir_.file("images.h5");
    vectors_ = dir_.file("vectors.h5");
    write_images(images_, kN, /*labelled=*/true);
    write_vectors(vectors_, kN);
  }
  ScratchDir dir_;
  std::string images_, vectors_;
};

// Each rank's slices are disjoint from the others', each window is covered, and each epoch reads
// every row exactly once over all ranks, at W = 1..4 with N = 37 and B = 12 (no divisibility).
TEST_F(ShardReaderTest, DisjointAndCoveringEveryEpoch) {
  const int64_t steps = 10;  // 120 positions: epochs 0, 1, 2 complete, epoch 3 begun
  for (int world = 1; world <= 4; ++world) {
    SCOPED_TRACE("W = " + std::to_string(world));
    auto config = config_for(images_, 0, world);
    std::vector<std::set<int64_t>> rank_positions(static_cast<size_t>(world));
    std::vector<std::vector<int64_t>> epoch_rows(4);
    for (int r = 0; r < world; ++r) {
      config.rank = r;
      const auto batches = read_steps(config, steps);
      for (int64_t s = 0; s < steps; ++s) {
        const auto& b = batches[static_cast<size_t>(s)];
        EXPECT_EQ(b.step, s);
        for (size_t i = 0; i < b.positions.size(); ++i) {
          // The contiguous slice of rank r in window s.
          EXPECT_EQ(b.positions[i], s * kB + r * (kB / world) + static_cast<int64_t>(i));
          EXPECT_TRUE(rank_positions[static_cast<size_t>(r)].insert(b.positions[i]).second);
          epoch_rows[static_cast<size_t>(b.positions[i] / kN)].push_back(b.rows[i]);
        }
      }
    }
    // Disjoint over ranks, and together every position 0..steps·B-1.
    std::set<int64_t> all;
    for (const auto& mine : rank_positions)
      for (int64_t p : mine) EXPECT_TRUE(all.insert(p).second) << "position " << p << " twice";
    EXPECT_EQ(static_cast<int64_t>(all.size()), steps * kB);
    EXPECT_EQ(*all.begin(), 0);
    EXPECT_EQ(*all.rbegin(), steps * kB - 1);
    for (int64_t e = 0; e < 3; ++e) {
      auto rows = epoch_rows[static_cast<size_t>(e)];
      std::sort(rows.begin(), rows.end());
      std::vector<int64_t> every(kN);
      std::iota(every.begin(), every.end(), int64_t{0});
      EXPECT_EQ(rows, every) << "epoch " << e << " does not read every row exactly once";
    }
    // The begun epoch 3 holds no repeated row either.
    const auto& tail = epoch_rows[3];
    EXPECT_EQ(static_cast<int64_t>(tail.size()), steps * kB - 3 * kN);
    EXPECT_EQ(std::set<int64_t>(tail.begin(), tail.end()).size(), tail.size());
  }
}

// The ranks' slices, concatenated per step, are one global order for every W, and it is the order
// defined by the epoch permutations.
TEST_F(ShardReaderTest, GlobalOrderIsTheSameAtEveryW) {
  const int64_t steps = 10;
  auto config = config_for(images_, 0, 1);
  config.random_flip = true;
  const GlobalStream one = global_stream(config, 1, steps);
  EXPECT_EQ(one.rows, expected_rows(kN, kSeed, 0, steps * kB));
  for (int world = 2; world <= 4; ++world) {
    SCOPED_TRACE("W = " + std::to_string(world));
    expect_same_stream(global_stream(config, world, steps), one);
  }
  // A different seed gives a different order (the seed is used at all).
  config.seed = kSeed + 1;
  EXPECT_NE(global_stream(config, 1, steps).rows, one.rows);
}

// A reader started at position p continues what an uninterrupted reader produces from p on:
// mid-epoch, at a window that straddles an epoch boundary, and in a later epoch.
TEST_F(ShardReaderTest, ResumeContinuesTheSameStream) {
  const int64_t steps = 12;
  for (int world : {1, 2, 3, 4}) {
    for (int rank = 0; rank < world; ++rank) {
      auto config = config_for(images_, rank, world);
      config.random_flip = true;
      const auto full = read_steps(config, steps);
      for (int64_t resume_step : {int64_t{2}, int64_t{3}, int64_t{7}}) {
        SCOPED_TRACE("W = " + std::to_string(world) + ", rank " + std::to_string(rank) +
                     ", resume at step " + std::to_string(resume_step));
        // Step 2: positions 24..35, mid-epoch 0. Step 3: 36..47, epoch boundary at 37 inside.
        // Step 7: 84..95, mid-epoch 2.
        auto resumed_config = config;
        resumed_config.start_position = resume_step * kB;
        ShardReader resumed(resumed_config);
        EXPECT_EQ(resumed.next_position(), resume_step * kB);
        for (int64_t s = resume_step; s < steps; ++s) {
          const ShardBatch b = resumed.next();
          const ShardBatch& want = full[static_cast<size_t>(s)];
          EXPECT_EQ(b.step, want.step);
          EXPECT_EQ(b.rows, want.rows);
          EXPECT_EQ(b.positions, want.positions);
          EXPECT_EQ(b.flipped, want.flipped);
          EXPECT_TRUE(testing::tensor_near(b.x, want.x, 0, 0));
          EXPECT_TRUE(torch::equal(b.labels, want.labels));
        }
        EXPECT_EQ(resumed.next_position(), steps * kB);
      }
    }
  }
}

// A start that is not a multiple of B (one rank) still continues the per-sample stream.
TEST_F(ShardReaderTest, ResumeAtAnyPositionContinuesThePerSampleStream) {
  auto config = config_for(images_, 0, 1);
  config.random_flip = true;
  const GlobalStream full = global_stream(config, 1, 10);
  config.start_position = 31;  // mid-window, mid-epoch 0; the next epoch begins at 37
  const GlobalStream resumed = global_stream(config, 1, 5);
  for (size_t i = 0; i < resumed.rows.size(); ++i) {
    const size_t j = i + 31;
    ASSERT_EQ(resumed.positions[i], full.positions[j]);
    EXPECT_EQ(resumed.rows[i], full.rows[j]);
    EXPECT_EQ(resumed.flipped[i], full.flipped[j]);
    EXPECT_TRUE(testing::tensor_near(resumed.x[i], full.x[j], 0, 0));
  }
}

// The whole-file-in-memory path and the read-per-batch path give identical batches.
TEST_F(ShardReaderTest, InMemoryAndFromFileAreIdentical) {
  for (const auto& path : {images_, vectors_}) {
    SCOPED_TRACE(path);
    for (int world : {1, 3}) {
      auto config = config_for(path, world - 1, world);
      config.random_flip = path == images_;
      ShardReader memory(config);
      EXPECT_TRUE(memory.in_memory());
      config.memory_limit_bytes = 0;
      ShardReader file(config);
      EXPECT_FALSE(file.in_memory());
      for (int s = 0; s < 8; ++s) {
        const ShardBatch a = memory.next(), b = file.next();
        EXPECT_EQ(a.rows, b.rows);
        EXPECT_EQ(a.positions, b.positions);
        EXPECT_EQ(a.flipped, b.flipped);
        EXPECT_TRUE(testing::tensor_near(a.x, b.x, 0, 0));
        EXPECT_TRUE(torch::equal(a.labels, b.labels));
      }
    }
  }
}

// u8 v becomes v / 127.5 - 1 (0 → -1 and 255 → 1 exactly), laid out NCHW from the file's HWC.
TEST_F(ShardReaderTest, PixelsMapToMinusOneOneInNchw) {
  const auto pixels = make_pixels(kN);
  auto config = config_for(images_, 0, 1);
  config.global_batch = kN;  // one window is one whole epoch: every row, rows 1 and 2 included
  ShardReader reader(config);
  const ShardBatch b = reader.next();
  ASSERT_EQ(b.x.sizes(), torch::IntArrayRef({kN, kC, kH, kW}));
  ASSERT_EQ(b.x.scalar_type(), torch::kFloat32);
  ASSERT_TRUE(b.x.is_contiguous());
  const float* x = b.x.data_ptr<float>();  // [N, C, H, W]
  bool saw_zero = false, saw_full = false;
  for (int64_t i = 0; i < kN; ++i) {
    const int64_t row = b.rows[static_cast<size_t>(i)];
    for (int64_t c = 0; c < kC; ++c)
      for (int64_t y = 0; y < kH; ++y)
        for (int64_t xx = 0; xx < kW; ++xx) {
          const uint8_t v = pixel(pixels, row, y, xx, c);
          const float got = x[((i * kC + c) * kH + y) * kW + xx];
          ASSERT_EQ(got, static_cast<float>(v) / 127.5f - 1.0f)
              << "sample " << i << " (row " << row << ") c " << c << " y " << y << " x " << xx;
          if (v == 0) {
            EXPECT_EQ(got, -1.0f);
            saw_zero = true;
          }
          if (v == 255) {
            EXPECT_EQ(got, 1.0f);
            saw_full = true;
          }
        }
  }
  EXPECT_TRUE(saw_zero);
  EXPECT_TRUE(saw_full);
  EXPECT_GE(b.x.min().item<float>(), -1.0f);
  EXPECT_LE(b.x.max().item<float>(), 1.0f);
}

// Flipped samples are the mirrored originals; the decision is the keyed one of the position,
// hence the same at every W; with flipping off nothing is mirrored.
TEST_F(ShardReaderTest, FlipMirrorsHorizontallyAndIsKeyedByPosition) {
  const auto pixels = make_pixels(kN);
  auto config = config_for(images_, 0, 1);
  config.random_flip = true;
  const int64_t steps = 8;
  const GlobalStream one = global_stream(config, 1, steps);
  int64_t flips = 0;
  for (size_t i = 0; i < one.rows.size(); ++i) {
    const bool flipped = one.flipped[i] != 0;
    EXPECT_EQ(flipped, expected_flip(kSeed, one.positions[i])) << "position " << one.positions[i];
    flips += flipped;
    const auto x = one.x[i].contiguous();  // [C, H, W]
    const float* v = x.data_ptr<float>();
    for (int64_t c = 0; c < kC; ++c)
      for (int64_t y = 0; y < kH; ++y)
        for (int64_t xx = 0; xx < kW; ++xx) {
          const int64_t source_x = flipped ? kW - 1 - xx : xx;
          ASSERT_EQ(v[(c * kH + y) * kW + xx],
                    static_cast<float>(pixel(pixels, one.rows[i], y, source_x, c)) / 127.5f - 1.0f)
              << "position " << one.positions[i] << (flipped ? " (flipped)" : "");
        }
  }
  // 96 fair coins: both outcomes occur.
  EXPECT_GT(flips, 0);
  EXPECT_LT(flips, steps * kB);
  for (int world : {2, 4}) EXPECT_EQ(global_stream(config, world, steps).flipped, one.flipped);

  config.random_flip = false;
  for (uint8_t f : global_stream(config, 2, steps).flipped) EXPECT_EQ(f, 0);
}

// Labels are the labels of the rows read; vectors come out as written; no labels, no tensor.
TEST_F(ShardReaderTest, LabelsAndVectorsMatchTheRows) {
  for (const auto& path : {images_, vectors_}) {
    for (int64_t limit : {int64_t{1} << 30, int64_t{0}}) {
      auto config = config_for(path, 1, 2);
      config.memory_limit_bytes = limit;
      for (const auto& b : read_steps(config, 6)) {
        ASSERT_TRUE(b.labels.defined());
        ASSERT_EQ(b.labels.scalar_type(), torch::kInt64);
        ASSERT_EQ(b.labels.sizes(), torch::IntArrayRef({kB / 2}));
        for (size_t i = 0; i < b.rows.size(); ++i)
          EXPECT_EQ(b.labels[static_cast<int64_t>(i)].item<int64_t>(), label_of(b.rows[i]));
        if (path == vectors_) {
          ASSERT_EQ(b.x.sizes(), torch::IntArrayRef({kB / 2, kD}));
          for (size_t i = 0; i < b.rows.size(); ++i)
            for (int64_t d = 0; d < kD; ++d)
              EXPECT_EQ(b.x[static_cast<int64_t>(i)][d].item<float>(), vector_value(b.rows[i], d));
        }
      }
    }
  }
  const auto unlabelled = dir_.file("unlabelled.h5");
  write_images(unlabelled, kN, /*labelled=*/false);
  for (const auto& b : read_steps(config_for(unlabelled, 0, 1), 2))
    EXPECT_FALSE(b.labels.defined());
}

// Destroying a reader whose consumer stopped early (full queue, producer blocked) returns.
TEST_F(ShardReaderTest, EarlyDestructionDoesNotHang) {
  const auto started = std::chrono::steady_clock::now();
  for (int64_t limit : {int64_t{1} << 30, int64_t{0}}) {
    for (int depth : {1, 2, 5}) {
      auto config = config_for(images_, 0, 1);
      config.memory_limit_bytes = limit;
      config.prefetch_depth = depth;
      { ShardReader never_read(config); }
      {
        ShardReader read_once(config);
        read_once.next();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the queue fill up
      }
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));
}

::testing::AssertionResult throws_naming(const std::function<void()>& f,
                                         const std::vector<std::string>& needles) {
  try {
    f();
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const auto& needle : needles)
      if (what.find(needle) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << needle << "': " << what;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "not a diffusion::Error: " << e.what();
  }
  return ::testing::AssertionFailure() << "no exception";
}

TEST_F(ShardReaderTest, BadInputsGiveErrorsNamingTheFile) {
  auto open = [](const ShardReaderConfig& config) { return [config] { ShardReader r(config); }; };

  const auto missing = dir_.file("missing.h5");
  EXPECT_TRUE(throws_naming(open(config_for(missing, 0, 1)), {missing}));

  const auto text = dir_.file("not_hdf5.h5");
  std::ofstream(text) << "this is not an HDF5 file\n";
  EXPECT_TRUE(throws_naming(open(config_for(text, 0, 1)), {text}));

  // A valid HDF5 file that holds neither `images` nor `x`.
  const auto other = dir_.file("other.h5");
  {
    const hid_t file = H5Fcreate(other.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    const hsize_t dims[1] = {4};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t set = H5Dcreate2(file, "something_else", H5T_NATIVE_INT, space, H5P_DEFAULT,
                                 H5P_DEFAULT, H5P_DEFAULT);
    const int values[4] = {1, 2, 3, 4};
    H5Dwrite(set, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
    H5Dclose(set);
    H5Sclose(space);
    H5Fclose(file);
  }
  EXPECT_TRUE(throws_naming(open(config_for(other, 0, 1)), {other}));

  auto flip_vectors = config_for(vectors_, 0, 1);
  flip_vectors.random_flip = true;
  EXPECT_TRUE(throws_naming(open(flip_vectors), {vectors_, "flip"}));

  auto uneven = config_for(images_, 0, 4);
  uneven.global_batch = 10;
  EXPECT_TRUE(throws_naming(open(uneven), {images_, "B=10", "W=4"}));

  auto too_small = config_for(images_, 0, 4);
  too_small.global_batch = 2;  // B/W would be 0
  EXPECT_TRUE(throws_naming(open(too_small), {images_, "B=2", "W=4"}));

  auto zero = config_for(images_, 0, 1);
  zero.global_batch = 0;
  EXPECT_TRUE(throws_naming(open(zero), {images_, "B=0"}));

  EXPECT_TRUE(throws_naming(open(config_for(images_, 4, 4)), {images_, "rank 4"}));
  auto negative = config_for(images_, 0, 1);
  negative.start_position = -1;
  EXPECT_TRUE(throws_naming(open(negative), {images_}));
  auto no_queue = config_for(images_, 0, 1);
  no_queue.prefetch_depth = 0;
  EXPECT_TRUE(throws_naming(open(no_queue), {images_}));
}

// An error on the prefetch thread (here: a NaN row that the per-batch read rejects) comes out of
// next() as an Error naming the file and the step; batches built before it are still served.
TEST_F(ShardReaderTest, PrefetchErrorIsRethrownWithContext) {
  const auto bad = dir_.file("nan_row.h5");
  const int64_t n = 40, bad_row = 17;
  {
    std::vector<float> x(static_cast<size_t>(n * kD), 0.5f);
    x[static_cast<size_t>(bad_row * kD + 1)] = std::nanf("");
    const hid_t file = H5Fcreate(bad.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    const hsize_t dims[2] = {static_cast<hsize_t>(n), static_cast<hsize_t>(kD)};
    const hid_t space = H5Screate_simple(2, dims, nullptr);
    const hid_t set =
        H5Dcreate2(file, "x", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data()), 0);
    H5Dclose(set);
    H5Sclose(space);
    H5Fclose(file);
  }
  // In memory, the whole-file read at open rejects it, naming the file.
  EXPECT_TRUE(throws_naming([&] { ShardReader r(config_for(bad, 0, 1)); }, {bad}));

  auto config = config_for(bad, 0, 1);
  config.memory_limit_bytes = 0;  // rows are read per batch on the prefetch thread
  ShardReader reader(config);
  // Position of the NaN row in the stream decides the step that fails.
  const auto rows = expected_rows(n, kSeed, 0, n);
  const int64_t failing_step = (std::find(rows.begin(), rows.end(), bad_row) - rows.begin()) / kB;
  for (int64_t s = 0; s < failing_step; ++s) EXPECT_EQ(reader.next().step, s);
  for (int attempt = 0; attempt < 2; ++attempt)  // and it stays failed
    EXPECT_TRUE(throws_naming([&] { reader.next(); },
                              {bad, "step " + std::to_string(failing_step), "row 17"}));
}

}  // namespace
}  // namespace diffusion
