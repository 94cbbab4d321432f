// Sharded checkpoints under real MPI (ctest runs it at 1, 2, 3 and 4 ranks): bit-exact round
// trips of odd-sized states, resharding (written by W or by a 2-rank sub-communicator, read by
// one rank or by all), the manifest, `latest`, keep_last, incomplete and corrupt folders, a
// failure on one rank, and writing the same step twice.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/io/checkpoint.h"
#include "core/base/error.h"
#include "core/base/h5.h"
#include "core/base/mpi_session.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

namespace fs = std::filesystem;

int comm_rank(MPI_Comm comm = MPI_COMM_WORLD) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return rank;
}

int comm_size(MPI_Comm comm = MPI_COMM_WORLD) {
  int size = 1;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  return size;
}

void barrier() { MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

// A state whose byte total (157) no W in 2..4 divides, with a 1-byte tensor (smaller than W
// bytes), an empty tensor, and values that only a bit-exact copy reproduces (NaN, -0, inf,
// int64 extremes). `salt` makes the states of different steps differ.
CheckpointState make_state(int64_t step, int salt) {
  CheckpointState s;
  s.step = step;
  auto a = torch::arange(21, torch::kFloat32).reshape({7, 3}) * 0.1f + static_cast<float>(salt);
  a[0][0] = std::nanf("");
  a[0][1] = -0.0f;
  a[0][2] = std::numeric_limits<float>::infinity();
  auto b = torch::linspace(-1.0, 1.0, 5, torch::kFloat64) / 3.0 + salt;
  auto c = torch::tensor({std::numeric_limits<int64_t>::min(), int64_t{salt},
                          std::numeric_limits<int64_t>::max()},
                         torch::kInt64)
               .reshape({3, 1});
  auto tiny = torch::full({1}, 200 + salt, torch::kUInt8);
  auto empty = torch::empty({0, 4}, torch::kFloat32);
  auto half = torch::tensor({1.5, -2.25, 65504.0}, torch::kFloat16);
  auto flags = torch::tensor({true, false}, torch::kBool);
  s.tensors = {{"model.a", a},   {"ema.b", b},   {"opt.step_c", c}, {"tiny", tiny},
               {"empty", empty}, {"half", half}, {"flags", flags}};
  s.meta_json = "{\"images_seen\": " + std::to_string(step * 12) + ", \"seed\": 7}";
  return s;
}
constexpr uint64_t kStateBytes = 84 + 40 + 24 + 1 + 0 + 6 + 2;

// Same names, order, dtypes, shapes and bytes (memcmp, so NaN and -0 count).
::testing::AssertionResult same_state(const CheckpointState& got, const CheckpointState& want) {
  if (got.step != want.step)
    return ::testing::AssertionFailure() << "step " << got.step << " vs " << want.step;
  if (got.meta_json != want.meta_json)
    return ::testing::AssertionFailure()
           << "meta_json '" << got.meta_json << "' vs '" << want.meta_json << "'";
  if (got.tensors.size() != want.tensors.size())
    return ::testing::AssertionFailure()
           << got.tensors.size() << " tensors vs " << want.tensors.size();
  for (size_t i = 0; i < got.tensors.size(); ++i) {
    const auto& [gn, g] = got.tensors[i];
    const auto& [wn, w] = want.tensors[i];
    if (gn != wn)
      return ::testing::AssertionFailure() << "tensor " << i << ": " << gn << " vs " << wn;
    if (g.scalar_type() != w.scalar_type() || g.sizes() != w.sizes() || !g.is_contiguous() ||
        !g.device().is_cpu())
      return ::testing::AssertionFailure() << "tensor " << gn << ": dtype/shape/layout differ";
    if (g.nbytes() && std::memcmp(g.data_ptr(), w.data_ptr(), g.nbytes()) != 0)
      return ::testing::AssertionFailure() << "tensor " << gn << ": bytes differ";
  }
  return ::testing::AssertionSuccess();
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string step_dir(const std::string& run, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return run + "/checkpoints/" + name;
}

// Calls `body` on every rank; expects every rank to throw diffusion::Error containing `needle`.
template <typename Body>
void expect_error_everywhere(Body&& body, const std::string& needle) {
  try {
    body();
    ADD_FAILURE() << "no exception; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected it to contain: " << needle;
  }
}

// Rank 0 owns a scratch folder and every rank learns its path; each test uses its own run
// folder inside it. The barrier in TearDown keeps rank 0 from removing it early.
class CheckpointMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string path;
    if (comm_rank() == 0) {
      scratch_ = std::make_unique<testing::ScratchDir>("checkpoint_mpi_test");
      path = scratch_->path();
    }
    int length = static_cast<int>(path.size());
    MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD));
    path.resize(static_cast<size_t>(length));
    MPI_CHECK(MPI_Bcast(path.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD));
    root_ = path;
    barrier();
  }
  void TearDown() override { barrier(); }

  std::string run(const std::string& name) const { return root_ + "/" + name; }

  CheckpointWriteOptions options(int keep_last = 3) const {
    CheckpointWriteOptions o;
    o.keep_last = keep_last;
    o.config_text = "[model]\nchannels = 64\n";
    return o;
  }

  std::unique_ptr<testing::ScratchDir> scratch_;
  std::string root_;
};

TEST_F(CheckpointMpiTest, RoundTripIsBitExactOnEveryRankAndManifestDescribesShards) {
  const std::string r = run("roundtrip");
  const CheckpointState state = make_state(5, 1);
  const std::string dir = write_checkpoint(MPI_COMM_WORLD, r, state, options());
  EXPECT_EQ(dir, step_dir(r, 5));

  // Every rank reads every shard: a checkpoint written at W loads at W' = 1 on each rank.
  const LoadedCheckpoint loaded = read_checkpoint(dir);
  EXPECT_TRUE(same_state(loaded.state, state));
  EXPECT_EQ(loaded.step, 5);
  EXPECT_EQ(loaded.written_by_world_size, comm_size());
  EXPECT_EQ(loaded.config_text, "[model]\nchannels = 64\n");
  EXPECT_EQ(loaded.dir, dir);

  if (comm_rank() == 0) {
    const int world = comm_size();
    const auto m = read_json(dir + "/manifest.json");
    EXPECT_EQ(m.at("format_version").get<int>(), 1);
    EXPECT_EQ(m.at("step").get<int64_t>(), 5);
    EXPECT_EQ(m.at("world_size").get<int>(), world);
    EXPECT_EQ(m.at("total_bytes").get<uint64_t>(), kStateBytes);
    EXPECT_EQ(m.at("meta_json").get<std::string>(), state.meta_json);
    ASSERT_EQ(m.at("tensors").size(), state.tensors.size());
    EXPECT_EQ(m.at("tensors")[0].at("name"), "model.a");
    EXPECT_EQ(m.at("tensors")[0].at("dtype"), "float32");
    EXPECT_EQ(m.at("tensors")[0].at("shape"), nlohmann::json({7, 3}));
    EXPECT_EQ(m.at("tensors")[2].at("dtype"), "int64");
    EXPECT_EQ(m.at("tensors")[3].at("offset").get<uint64_t>(), 148u);
    EXPECT_EQ(m.at("tensors")[4].at("nbytes").get<uint64_t>(), 0u);
    ASSERT_EQ(m.at("shards").size(), static_cast<size_t>(world));
    for (int k = 0; k < world; ++k) {
      const auto& s = m.at("shards")[static_cast<size_t>(k)];
      char name[64];
      std::snprintf(name, sizeof(name), "shard-%05d-of-%05d.h5", k, world);
      EXPECT_EQ(s.at("file"), name);
      EXPECT_TRUE(fs::is_regular_file(dir + "/" + name));
      // The integer split r·L/W: every shard holds floor or ceil of L/W bytes.
      EXPECT_EQ(s.at("begin").get<uint64_t>(), kStateBytes * k / world);
      EXPECT_EQ(s.at("end").get<uint64_t>(), kStateBytes * (k + 1) / world);
      EXPECT_EQ(s.at("crc32").get<std::string>().size(), 8u);
    }
    EXPECT_EQ(read_text(r + "/checkpoints/latest"), "step-00000005\n");
    EXPECT_EQ(find_checkpoint(r), dir);
    EXPECT_EQ(find_checkpoint(r + "/checkpoints"), dir);
    EXPECT_EQ(find_checkpoint(dir), dir);
  }
}

TEST_F(CheckpointMpiTest, NonContiguousInputIsStoredInLogicalOrder) {
  const std::string r = run("layout");
  CheckpointState state;
  state.step = 2;
  const auto base = torch::arange(12, torch::kInt32).reshape({3, 4});
  state.tensors = {{"transposed", base.t()}, {"strided", base.slice(/*dim=*/1, 0, 4, 2)}};
  const std::string dir = write_checkpoint(MPI_COMM_WORLD, r, state, options());
  CheckpointState want = state;
  for (auto& [name, t] : want.tensors) t = t.contiguous();
  EXPECT_TRUE(same_state(read_checkpoint(dir).state, want));
}

TEST_F(CheckpointMpiTest, SubCommunicatorOfTwoWritesAndEveryRankReads) {
  const std::string r = run("subcomm");
  const CheckpointState state = make_state(3, 2);
  // Ranks 0 and 1 write (a distillation job runs on such a slice); the others only read.
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, comm_rank() < 2 ? 0 : MPI_UNDEFINED, comm_rank(), &sub));
  if (sub != MPI_COMM_NULL) {
    write_checkpoint(sub, r, state, options());
    MPI_CHECK(MPI_Comm_free(&sub));
  }
  barrier();
  const auto found = find_checkpoint(r);
  ASSERT_TRUE(found.has_value());
  const LoadedCheckpoint loaded = read_checkpoint(*found);
  EXPECT_EQ(loaded.written_by_world_size, std::min(2, comm_size()));
  EXPECT_TRUE(same_state(loaded.state, state));
}

TEST_F(CheckpointMpiTest, LatestPointsToNewestAndKeepLastPrunesOldest) {
  const std::string r = run("keep");
  for (int64_t step : {10, 20, 30, 40}) {
    write_checkpoint(MPI_COMM_WORLD, r, make_state(step, static_cast<int>(step)), options(2));
    if (comm_rank() == 0) {
      EXPECT_EQ(read_text(r + "/checkpoints/latest"), "step-000000" + std::to_string(step) + "\n");
    }
  }
  barrier();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(r + "/checkpoints"))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000030", "step-00000040"}));
  EXPECT_EQ(find_checkpoint(r), step_dir(r, 40));
  EXPECT_TRUE(same_state(read_checkpoint(step_dir(r, 30)).state, make_state(30, 30)));
  barrier();
}

TEST_F(CheckpointMpiTest, IncompleteFoldersAreNeverFoundAndReadingThemNamesThem) {
  const std::string r = run("incomplete");
  write_checkpoint(MPI_COMM_WORLD, r, make_state(40, 4), options());
  barrier();
  if (comm_rank() == 0) {
    const std::string ck = r + "/checkpoints";
    // What a crash leaves: a temporary folder with shards, and (only by hand) a newer step
    // folder without a manifest.
    fs::create_directories(ck + "/.tmp-step-00000099");
    std::ofstream(ck + "/.tmp-step-00000099/shard-00000-of-00001.h5") << "partial";
    fs::create_directories(step_dir(r, 50));
    std::ofstream(step_dir(r, 50) + "/shard-00000-of-00001.h5") << "partial";
    EXPECT_EQ(find_checkpoint(r), step_dir(r, 40));
    EXPECT_EQ(find_checkpoint(step_dir(r, 50)), std::nullopt);
    EXPECT_EQ(find_checkpoint(ck + "/.tmp-step-00000099"), std::nullopt);
    expect_error_everywhere([&] { read_checkpoint(step_dir(r, 50)); },
                            step_dir(r, 50) + "' has no manifest.json");

    // `latest` naming the incomplete folder, or missing: fall back to the newest complete one.
    std::ofstream(ck + "/latest") << "step-00000050\n";
    EXPECT_EQ(find_checkpoint(r), step_dir(r, 40));
    fs::remove(ck + "/latest");
    EXPECT_EQ(find_checkpoint(r), step_dir(r, 40));

    // Invalid JSON and a missing key are errors naming the manifest.
    const std::string manifest = step_dir(r, 50) + "/manifest.json";
    std::ofstream(manifest) << "{\"format\": ";
    EXPECT_EQ(find_checkpoint(r), step_dir(r, 40));
    expect_error_everywhere([&] { read_checkpoint(step_dir(r, 50)); },
                            manifest + "' is not valid JSON");
    auto m = read_json(step_dir(r, 40) + "/manifest.json");
    m.erase("shards");
    std::ofstream(manifest) << m.dump();
    expect_error_everywhere([&] { read_checkpoint(step_dir(r, 50)); },
                            manifest + "': missing key 'shards'");
    EXPECT_EQ(find_checkpoint(r), step_dir(r, 40));
    expect_error_everywhere([&] { read_checkpoint(r + "/nowhere"); }, r + "/nowhere");
    EXPECT_EQ(find_checkpoint(r + "/nowhere"), std::nullopt);
    EXPECT_EQ(find_checkpoint(run("never_written")), std::nullopt);
  }
  barrier();
  // The next write clears the temporary leftovers (and leaves the foreign folder alone).
  write_checkpoint(MPI_COMM_WORLD, r, make_state(41, 5), options());
  if (comm_rank() == 0) {
    EXPECT_FALSE(fs::exists(r + "/checkpoints/.tmp-step-00000099"));
    EXPECT_EQ(find_checkpoint(r), step_dir(r, 41));
  }
}

TEST_F(CheckpointMpiTest, FlippedByteInAShardIsReportedWithTheShardFile) {
  const std::string r = run("corrupt");
  const std::string dir = write_checkpoint(MPI_COMM_WORLD, r, make_state(8, 6), options());
  barrier();
  if (comm_rank() == 0) {
    const std::string shard = dir + "/shard-00000-of-" + (comm_size() < 10 ? "0000" : "000") +
                              std::to_string(comm_size()) + ".h5";
    // Find the raw bytes inside the HDF5 file and flip one of them.
    h5_silence_errors();
    haddr_t offset = HADDR_UNDEF;
    {
      H5File file(H5Fopen(shard.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
      ASSERT_TRUE(file.valid());
      H5DataSet data(H5Dopen2(file.get(), "bytes", H5P_DEFAULT));
      ASSERT_TRUE(data.valid());
      offset = H5Dget_offset(data.get());
    }
    ASSERT_NE(offset, HADDR_UNDEF);
    {
      std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(offset) + 3);
      char byte = 0;
      f.read(&byte, 1);
      byte = static_cast<char>(byte ^ 0x10);
      f.seekp(static_cast<std::streamoff>(offset) + 3);
      f.write(&byte, 1);
    }
    expect_error_everywhere([&] { read_checkpoint(dir); }, "shard '" + shard + "' is corrupt");
    try {
      read_checkpoint(dir);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("the manifest says"), std::string::npos) << e.what();
    }
    // A missing shard is named too.
    fs::remove(shard);
    expect_error_everywhere([&] { read_checkpoint(dir); }, "shard '" + shard + "' is missing");
  }
}

TEST_F(CheckpointMpiTest, FailureOnOneRankThrowsEverywhereAndKeepsThePreviousCheckpoint) {
  const std::string r = run("failure");
  write_checkpoint(MPI_COMM_WORLD, r, make_state(1, 7), options());

  const int bad = comm_size() - 1;
  ::setenv("DIFFUSION_CKPT_FAIL_RANK", std::to_string(bad).c_str(), 1);
  expect_error_everywhere([&] { write_checkpoint(MPI_COMM_WORLD, r, make_state(2, 8), options()); },
                          "failed on rank " + std::to_string(bad) + " of " +
                              std::to_string(comm_size()) + ": injected failure");
  ::unsetenv("DIFFUSION_CKPT_FAIL_RANK");
  barrier();
  if (comm_rank() == 0) {
    EXPECT_EQ(read_text(r + "/checkpoints/latest"), "step-00000001\n");
    EXPECT_FALSE(fs::exists(step_dir(r, 2)));
    EXPECT_FALSE(fs::exists(r + "/checkpoints/.tmp-step-00000002"));
    EXPECT_EQ(find_checkpoint(r), step_dir(r, 1));
  }
  EXPECT_TRUE(same_state(read_checkpoint(step_dir(r, 1)).state, make_state(1, 7)));

  // A real failure on rank 0 alone (the checkpoints folder cannot be created) reaches all.
  const std::string blocked = run("blocked");
  if (comm_rank() == 0) {
    fs::create_directories(blocked);
    std::ofstream(blocked + "/checkpoints") << "not a folder";
  }
  barrier();
  expect_error_everywhere(
      [&] { write_checkpoint(MPI_COMM_WORLD, blocked, make_state(1, 7), options()); },
      "failed on rank 0");
  barrier();
}

TEST_F(CheckpointMpiTest, WritingTheSameStepAgainReplacesItSafely) {
  const std::string r = run("rewrite");
  write_checkpoint(MPI_COMM_WORLD, r, make_state(7, 1), options(2));
  write_checkpoint(MPI_COMM_WORLD, r, make_state(8, 2), options(2));
  // A resumed run writes step 7 again: the new content replaces the old, step 8 (newer) stays.
  write_checkpoint(MPI_COMM_WORLD, r, make_state(7, 3), options(2));
  barrier();
  EXPECT_TRUE(same_state(read_checkpoint(step_dir(r, 7)).state, make_state(7, 3)));
  if (comm_rank() == 0) {
    EXPECT_EQ(read_text(r + "/checkpoints/latest"), "step-00000007\n");
    EXPECT_TRUE(fs::exists(step_dir(r, 8)));
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(r + "/checkpoints"))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000007", "step-00000008"}));
  }
  // And once more, right after itself, with keep_last = 1: the step just written is kept, and
  // so is step 8, the newest.
  write_checkpoint(MPI_COMM_WORLD, r, make_state(7, 4), options(1));
  EXPECT_TRUE(same_state(read_checkpoint(step_dir(r, 7)).state, make_state(7, 4)));
  barrier();
}

}  // namespace
}  // namespace diffusion
