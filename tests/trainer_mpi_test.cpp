// The trainer's promises, on real MPI ranks (run with 4 ranks; each test splits the world into
// the rank counts it needs):
//  - the same config and global batch give the same parameters at W = 1, 2 and 4 (to float32
//    reduction round-off), on sub-communicators, not only MPI_COMM_WORLD;
//  - a run stopped and resumed from its checkpoint is bit-identical to an uninterrupted one;
//  - a checkpoint written at W = 2 resumes at W = 3 and lands where an uninterrupted run goes;
//  - micro-batching changes nothing but round-off.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "core/io/checkpoint.h"
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
  if (world_rank() == 0) {
    const auto a = final_state(d + "/straight"), b = final_state(d + "/stopped");
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, t] : a) {
      ASSERT_TRUE(b.count(name)) << name;
      EXPECT_TRUE(torch::equal(t, b.at(name))) << name << " differs after resume";
    }
  }
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
