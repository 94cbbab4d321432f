// The trainer's promises, on real MPI ranks (run with 4 ranks; each test splits the world into
// the rank counts it needs):
//  - the same config and global batch give the same parameters at W = 1, 2 and 4 (to float32
//    reduction round-off), on sub-communicators, not only MPI_COMM_WORLD;
//  - a run stopped and resumed from its checkpoint is bit-identical to an uninterrupted one;
//  - a checkpoint written at W = 2 resumes at W = 3 and lands where an uninterrupted run goes;
//  - micro-batching changes nothing but round-off;
//  - in bf16 (autocast) the same hold: W-invariance to bf16 round-off (far below what another
//    seed changes), bit-identical resume, 2 → 3 rank resume, and an fp32 checkpoint resumes in
//    bf16. Both the MLP and a small UNet (with attention) are trained.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "core/io/checkpoint.h"
#include "core/models/autocast.h"
#include "core/base/error.h"
#include "core/comm/mpi_communicator.h"
#include "core/base/mpi_session.h"
#include "datasets/dataset_file.h"
#include "datasets/toy_sets.h"
#include "tests/test_utils.h"
#include "core/base/stop_signal.h"
#include "trainer/trainer.h"

namespace diffusion {
namespace {

using testing::world_rank;
using testing::world_size;

using testing::tensor_near;

// One scratch folder for the whole binary, made by rank 0 and shared.
const std::string& shared_dir() {
  static std::string dir = [] {
    const char* root = std::getenv("DIFFUSION_TEST_DATA");
    std::string d = std::string(root ? root : "/tmp") + "/trainer_mpi_test";
    int len = 0;
    std::vector<char> buf(512);
    if (world_rank() == 0) {
      d += "-" + std::to_string(::getpid());
      std::filesystem::remove_all(d);
      std::filesystem::create_directories(d);
      len = static_cast<int>(d.size());
      std::copy(d.begin(), d.end(), buf.begin());
    }
    MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(buf.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
    return std::string(buf.data(), static_cast<size_t>(len));
  }();
  return dir;
}

const std::string& toy_data() {
  static std::string path = [] {
    const std::string p = shared_dir() + "/ring.h5";
    if (world_rank() == 0) {
      ToyOptions o;
      o.num = 500;
      o.seed = 3;
      o.out_path = p;
      write_toy(o);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    return p;
  }();
  return path;
}

TrainConfig toy_config(const std::string& out, int64_t steps) {
  TrainConfig c;
  c.data.path = toy_data();
  c.model.kind = "mlp";
  c.model.mlp.hidden = 32;
  c.model.mlp.num_blocks = 2;
  c.model.mlp.time_embed_dim = 16;
  c.diffusion.schedule.timesteps = 100;
  c.diffusion.class_conditional = true;  // exercises label dropout too
  c.diffusion.p_uncond = 0.2;
  c.optim.steps = steps;
  c.optim.batch_size = 24;
  c.optim.lr = 3e-3;
  c.optim.warmup = 2;
  c.optim.ema_rates = {0.9, 0.5};
  c.optim.seed = 11;
  c.optim.bucket_mb = 1;
  c.optim.threads = 1;
  c.checkpoint.out = out;
  c.checkpoint.checkpoint_every = 3;
  c.checkpoint.keep = 5;
  c.logging.log_every = 3;
  c.resolved_text = "[model]\nmodel = mlp\nmlp-hidden = 32\n[diffusion]\ntimesteps = 100\n";
  return c;
}

// A small image set (8×8, one channel, 4 classes) with structure a UNet can learn.
const std::string& image_data() {
  static std::string path = [] {
    const std::string p = shared_dir() + "/images.h5";
    if (world_rank() == 0) {
      const int64_t n = 96, h = 8, w = 8;
      DatasetSpec spec;
      spec.kind = DataKind::kImages;
      spec.sample_shape = {h, w, 1};
      spec.has_labels = true;
      spec.num_classes = 4;
      std::vector<uint8_t> pixels(static_cast<size_t>(n * h * w));
      std::vector<int64_t> labels(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        labels[i] = i % 4;
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x)  // class k: a bar at row/column 2k, plus a gradient
            pixels[(i * h + y) * w + x] = static_cast<uint8_t>(
                (y == 2 * labels[i] || x == 2 * labels[i] ? 200 : 0) + (x + y + i) % 50);
      }
      DatasetWriter writer(p, spec);
      writer.append_images(pixels.data(), labels.data(), n);
      writer.commit();
    }
    MPI_Barrier(MPI_COMM_WORLD);
    return p;
  }();
  return path;
}

TrainConfig unet_config(const std::string& out, int64_t steps) {
  auto c = toy_config(out, steps);
  c.data.path = image_data();
  c.model.kind = "unet";
  auto& u = c.model.unet;
  u.in_channels = 1;
  u.base_channels = 8;
  u.channel_mult = {1, 2};
  u.num_res_blocks = 1;
  u.attention_resolutions = {4};
  u.image_size = 8;
  u.num_groups = 4;
  u.dropout = 0.0;
  c.optim.lr = 1e-3;
  c.resolved_text = "[model]\nmodel = unet\nbase-channels = 8\n[diffusion]\ntimesteps = 100\n";
  return c;
}

TrainConfig in_bf16(TrainConfig c) {
  c.runtime.precision = Precision::kBf16;
  return c;
}

// Runs `config` on the ranks whose `color` is `active` (others wait), on a communicator made
// of exactly those ranks.
void train_on(int color, int active, const TrainConfig& config) {
  MPI_Comm comm;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, color == active ? 0 : MPI_UNDEFINED, world_rank(), &comm));
  if (comm != MPI_COMM_NULL) {
    {
      MpiCommunicator communicator(comm);
      Trainer(config, comm, communicator).run();
    }
    MPI_Comm_free(&comm);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

std::map<std::string, at::Tensor> final_state(const std::string& run) {
  const auto dir = find_checkpoint(run);
  EXPECT_TRUE(dir.has_value()) << run;
  auto loaded = read_checkpoint(*dir);
  return {loaded.state.tensors.begin(), loaded.state.tensors.end()};
}

// The largest |a - b| over the model and EMA tensors of two runs' final checkpoints.
double max_model_difference(const std::string& a, const std::string& b) {
  const auto sa = final_state(a), sb = final_state(b);
  double diff = 0;
  for (const auto& [name, t] : sa)
    if (name.rfind("model/", 0) == 0 || name.rfind("ema_", 0) == 0)
      diff = std::max(diff, (t - sb.at(name)).abs().max().item<double>());
  return diff;
}

void expect_bit_identical(const std::string& a, const std::string& b) {
  const auto sa = final_state(a), sb = final_state(b);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, t] : sa) {
    ASSERT_TRUE(sb.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, sb.at(name))) << name << " differs: " << a << " vs " << b;
  }
}

void expect_same_model(const std::string& a, const std::string& b, double rtol, double atol) {
  const auto sa = final_state(a), sb = final_state(b);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, t] : sa) {
    if (name.rfind("model/", 0) != 0 && name.rfind("ema_", 0) != 0) continue;
    ASSERT_TRUE(sb.count(name)) << name;
    EXPECT_TRUE(tensor_near(t, sb.at(name), rtol, atol)) << name << ": " << a << " vs " << b;
  }
}

class TrainerMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (world_size() < 4) GTEST_SKIP() << "needs 4 ranks (ctest runs it with mpirun -np 4)";
  }
};

TEST_F(TrainerMpiTest, SameParametersAtOneTwoAndFourRanks) {
  const std::string d = shared_dir() + "/invariance";
  const int r = world_rank();
  train_on(0, 0, toy_config(d + "/w4", 6));                    // all 4 ranks
  train_on(r / 2, 0, toy_config(d + "/w2", 6));                // ranks 0, 1
  train_on(r, 0, toy_config(d + "/w1", 6));                    // rank 0 alone
  auto other_seed = toy_config(d + "/w1-seed", 6);
  other_seed.optim.seed = 12;
  train_on(r, 1, other_seed);                                  // rank 1 alone
  if (r == 0) {
    expect_same_model(d + "/w1", d + "/w2", 1e-4, 1e-6);
    expect_same_model(d + "/w1", d + "/w4", 1e-4, 1e-6);
    // The tolerance is meaningful: another seed lands elsewhere.
    const auto a = final_state(d + "/w1"), b = final_state(d + "/w1-seed");
    double diff = 0;
    for (const auto& [name, t] : a)
      if (name.rfind("model/", 0) == 0) diff = std::max(diff, (t - b.at(name)).abs().max().item<double>());
    EXPECT_GT(diff, 1e-3);
  }
}

TEST_F(TrainerMpiTest, MicroBatchesGiveTheSameStep) {
  const std::string d = shared_dir() + "/micro";
  auto whole = toy_config(d + "/whole", 3);
  auto micro = toy_config(d + "/micro", 3);
  micro.optim.micro_batch = 4;  // 12 per rank at W = 2 → 3 micro-batches
  train_on(world_rank() / 2, 0, whole);
  train_on(world_rank() / 2, 0, micro);
  if (world_rank() == 0) expect_same_model(d + "/whole", d + "/micro", 1e-4, 1e-6);
}

TEST_F(TrainerMpiTest, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  const std::string d = shared_dir() + "/resume";
  const int color = world_rank() / 2;
  // Warmup still running and dropout on at the resume point, so both must carry over.
  const auto config = [&](const std::string& out, int64_t steps) {
    auto c = toy_config(out, steps);
    c.optim.warmup = 5;
    c.model.mlp.dropout = 0.2;
    return c;
  };
  train_on(color, 0, config(d + "/straight", 6));
  train_on(color, 0, config(d + "/stopped", 3));  // stops at 3 with a checkpoint
  train_on(color, 0, config(d + "/stopped", 6));  // same command, longer: resumes from 3
  if (world_rank() == 0) expect_bit_identical(d + "/straight", d + "/stopped");
}

TEST_F(TrainerMpiTest, CheckpointFromTwoRanksResumesOnThree) {
  const std::string d = shared_dir() + "/reshard";
  const int r = world_rank();
  train_on(r < 3 ? 0 : 1, 0, toy_config(d + "/straight", 6));  // W = 3 throughout
  train_on(r / 2, 0, toy_config(d + "/moved", 3));              // W = 2 up to step 3
  train_on(r < 3 ? 0 : 1, 0, toy_config(d + "/moved", 6));      // W = 3 from step 3
  if (r == 0) {
    const auto dir = find_checkpoint(d + "/moved");
    ASSERT_TRUE(dir);
    const auto loaded = read_checkpoint(*dir);
    EXPECT_EQ(loaded.step, 6);
    EXPECT_EQ(loaded.written_by_world_size, 3);
    expect_same_model(d + "/straight", d + "/moved", 1e-4, 1e-6);
  }
}

// bf16 changes the arithmetic of every forward pass, so W-invariance holds to bf16 round-off
// rather than float32's: the bound is relative to how far bf16 moves the model from fp32.
TEST_F(TrainerMpiTest, Bf16SameModelAtOneTwoAndFourRanks) {
  // The tolerance is measured against bf16's own departure from fp32, which needs bf16 to run:
  // without native bf16 the trainer falls back to fp32 (as it says) and there is none.
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "this CPU has no native bf16: --precision bf16 runs in fp32";
  const std::string d = shared_dir() + "/bf16-invariance";
  const int r = world_rank();
  for (const std::string net : {"mlp", "unet"}) {
    const auto config = [&](const std::string& out) {
      return in_bf16(net == "mlp" ? toy_config(d + "/" + net + out, 6) : unet_config(d + "/" + net + out, 6));
    };
    train_on(0, 0, config("/w4"));
    train_on(r / 2, 0, config("/w2"));
    train_on(r, 0, config("/w1"));
    auto other_seed = config("/w1-seed");
    other_seed.optim.seed = 12;
    train_on(r, 1, other_seed);
    auto fp32 = config("/w1-fp32");
    fp32.runtime.precision = Precision::kFp32;
    train_on(r, 2, fp32);
    if (r == 0) {
      const std::string p = d + "/" + net;
      const double seed_diff = max_model_difference(p + "/w1", p + "/w1-seed");
      const double w2 = max_model_difference(p + "/w1", p + "/w2"), w4 = max_model_difference(p + "/w1", p + "/w4");
      const double precision_diff = max_model_difference(p + "/w1", p + "/w1-fp32");
      std::printf("[bf16 %s] max |diff| W1-W2 %.3g, W1-W4 %.3g, bf16-fp32 %.3g, other seed %.3g\n", net.c_str(), w2,
                  w4, precision_diff, seed_diff);
      EXPECT_GT(seed_diff, 1e-3) << net;
      // The stated tolerance: changing W moves the model by no more than twice what bf16 itself
      // moves it from fp32. bf16 really ran (autocast changed the arithmetic) and stays within
      // one learning rate per step of fp32 (AdamW moves a weight by about lr per step at most).
      const double max_move = config("").optim.lr * 6;
      EXPECT_GT(precision_diff, 0.0) << net;
      EXPECT_LT(precision_diff, max_move) << net;
      EXPECT_LE(w2, 2 * precision_diff) << net << ": W = 1 vs 2";
      EXPECT_LE(w4, 2 * precision_diff) << net << ": W = 1 vs 4";
    }
  }
}

TEST_F(TrainerMpiTest, Bf16ResumedRunIsBitIdentical) {
  const std::string d = shared_dir() + "/bf16-resume";
  const int color = world_rank() / 2;
  const auto config = [&](const std::string& out, int64_t steps) {
    auto c = in_bf16(unet_config(out, steps));
    c.optim.warmup = 5;
    c.model.unet.dropout = 0.2;
    return c;
  };
  train_on(color, 0, config(d + "/straight", 6));
  train_on(color, 0, config(d + "/stopped", 3));
  train_on(color, 0, config(d + "/stopped", 6));
  if (world_rank() == 0) expect_bit_identical(d + "/straight", d + "/stopped");
}

TEST_F(TrainerMpiTest, Bf16CheckpointFromTwoRanksResumesOnThree) {
  const std::string d = shared_dir() + "/bf16-reshard";
  const int r = world_rank();
  train_on(r < 3 ? 0 : 1, 0, in_bf16(unet_config(d + "/straight", 6)));
  train_on(r / 2, 0, in_bf16(unet_config(d + "/moved", 3)));
  train_on(r < 3 ? 0 : 1, 0, in_bf16(unet_config(d + "/moved", 6)));
  if (r == 0) {
    const auto loaded = read_checkpoint(*find_checkpoint(d + "/moved"));
    EXPECT_EQ(loaded.step, 6);
    EXPECT_EQ(loaded.written_by_world_size, 3);
    auto other = unet_config(d + "/other-seed", 6);
    other.optim.seed = 12;
    other.runtime.precision = Precision::kBf16;
    MpiCommunicator self(MPI_COMM_SELF);
    Trainer(other, MPI_COMM_SELF, self).run();
    // W = 2 → 3 lands where W = 3 throughout goes, to bf16 round-off (well within the lr·steps
    // that AdamW could move a weight; another seed is orders of magnitude away).
    const double moved = max_model_difference(d + "/straight", d + "/moved");
    std::printf("[bf16 reshard] max |diff| %.3g, other seed %.3g\n", moved,
                max_model_difference(d + "/straight", d + "/other-seed"));
    EXPECT_LT(moved, 0.5 * other.optim.lr * 6);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(TrainerMpiTest, Fp32CheckpointResumesInBf16) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "this CPU has no native bf16: --precision bf16 runs in fp32";
  // Precision is a run setting: the fp32 run's checkpoint continues in bf16 (and lands near
  // a run that was bf16 from the start, far nearer than another seed).
  const std::string d = shared_dir() + "/fp32-to-bf16";
  const int r = world_rank();
  auto first = unet_config(d + "/switched", 3);
  first.resolved_text += "[runtime]\nprecision = fp32\n";
  train_on(r / 2, 0, first);
  auto second = in_bf16(unet_config(d + "/switched", 6));
  second.resolved_text += "[runtime]\nprecision = bf16\n";
  train_on(r / 2, 0, second);
  train_on(r / 2, 0, in_bf16(unet_config(d + "/bf16", 6)));
  if (r == 0) {
    const auto loaded = read_checkpoint(*find_checkpoint(d + "/switched"));
    EXPECT_EQ(loaded.step, 6);
    EXPECT_NE(loaded.config_text.find("precision = bf16"), std::string::npos);
    auto other = in_bf16(unet_config(d + "/other-seed", 6));
    other.optim.seed = 12;
    MpiCommunicator self(MPI_COMM_SELF);
    Trainer(other, MPI_COMM_SELF, self).run();
    const double switched = max_model_difference(d + "/switched", d + "/bf16");
    EXPECT_GT(switched, 0.0);  // the first three steps really were fp32
    EXPECT_LT(switched, other.optim.lr * 3);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(TrainerMpiTest, AStopRequestOnOneRankStopsEveryRankWithACheckpoint) {
  const std::string d = shared_dir() + "/stop";
  MPI_Comm comm;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, world_rank() / 2, world_rank(), &comm));
  {
    MpiCommunicator communicator(comm);
    if (world_rank() % 2 == 1) request_stop();  // as SIGUSR1 on one rank would
    const auto result = Trainer(toy_config(d + std::to_string(world_rank() / 2), 6), comm, communicator).run();
    EXPECT_TRUE(result.stopped_by_signal);
    EXPECT_EQ(result.final_step, 1);
    EXPECT_FALSE(result.last_checkpoint.empty());
    // The request was handled: the same command runs on to the end.
    const auto again = Trainer(toy_config(d + std::to_string(world_rank() / 2), 6), comm, communicator).run();
    EXPECT_FALSE(again.stopped_by_signal);
    EXPECT_EQ(again.final_step, 6);
  }
  MPI_Comm_free(&comm);
}

TEST_F(TrainerMpiTest, NonFiniteGradientsSkipUpdatesThenStop) {
  const std::string d = shared_dir() + "/nonfinite";
  const std::string data = d + "-huge.h5";
  if (world_rank() == 0) {
    // Finite data whose squares overflow float32: every loss and gradient is non-finite.
    DatasetSpec spec;
    spec.kind = DataKind::kVectors;
    spec.sample_shape = {2};
    DatasetWriter writer(data, spec);
    std::vector<float> x(2 * 64, 3e38f);
    writer.append_vectors(x.data(), nullptr, 64);
    writer.commit();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  auto c = toy_config(d, 20);
  c.data.path = data;
  c.diffusion.class_conditional = false;
  c.optim.max_nonfinite = 3;
  c.checkpoint.checkpoint_every = 100;
  MPI_Comm comm;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, world_rank() / 2, world_rank(), &comm));
  if (world_rank() / 2 == 0) {
    MpiCommunicator communicator(comm);
    try {
      Trainer(c, comm, communicator).run();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("3 non-finite gradient norms in a row"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("step 2"), std::string::npos) << e.what();  // steps 0, 1, 2
    }
    EXPECT_FALSE(find_checkpoint(d).has_value());  // nothing was saved from a broken run
  }
  MPI_Comm_free(&comm);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(TrainerMpiTest, RefusesARunFolderOfAnotherModel) {
  const std::string d = shared_dir() + "/other-model";
  const int r = world_rank();
  train_on(r, 0, toy_config(d, 3));
  if (r == 0) {
    auto c = toy_config(d, 6);
    c.model.mlp.hidden = 64;
    c.resolved_text = "[model]\nmodel = mlp\nmlp-hidden = 64\n[diffusion]\ntimesteps = 100\n";
    MpiCommunicator communicator(MPI_COMM_SELF);
    try {
      Trainer(c, MPI_COMM_SELF, communicator).run();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("mlp-hidden"), std::string::npos) << e.what();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace diffusion
