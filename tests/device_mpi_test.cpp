// Device selection and the communicator factory under real MPI (ctest runs it at 1 and 2 ranks):
// local ranks against an MPI_Comm_split_type of our own and a per-host property, CPU for `cpu`
// and for `auto` without a GPU, an agreed error naming host and rank for `cuda` without one,
// parse errors naming --device; on a machine with GPUs (skipped here) each rank's GPU and an
// NCCL all-reduce (sum and average) against the MPI result, or, with more ranks than GPUs, NCCL
// refused on every rank.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "core/base/error.h"
#include "core/base/mpi_session.h"
#include "core/comm/communicator_factory.h"
#include "core/comm/device.h"
#include "tests/test_utils.h"
#ifdef DIFFUSION_WITH_CUDA
#include "core/comm/cuda_runtime.h"
#endif

namespace diffusion {
namespace {

using testing::world_rank;
using testing::world_size;

// Fewest GPUs any rank sees (0 in a build without CUDA).
int fewest_gpus_anywhere() {
  int mine = 0;
#ifdef DIFFUSION_WITH_CUDA
  mine = cuda_device_count();
#endif
  int fewest = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &fewest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  return fewest;
}

TEST(ParseDeviceKind, AcceptsAutoCpuCudaAndNamesTheOptionOtherwise) {
  EXPECT_EQ(parse_device_kind("auto"), DeviceKind::kAuto);
  EXPECT_EQ(parse_device_kind("cpu"), DeviceKind::kCpu);
  EXPECT_EQ(parse_device_kind("cuda"), DeviceKind::kCuda);
  for (DeviceKind kind : {DeviceKind::kAuto, DeviceKind::kCpu, DeviceKind::kCuda})
    EXPECT_EQ(parse_device_kind(device_kind_name(kind)), kind);
  testing::expect_error([] { parse_device_kind("gpu"); }, {"--device", "'gpu'", "auto", "cpu", "cuda"});
  testing::expect_error([] { parse_device_kind("CUDA"); }, {"--device"});
  testing::expect_error([] { parse_device_kind(""); }, {"--device"});
}

// Local rank and size as our own split computes them, on `comm`.
void expect_local_ranks_match_a_shared_memory_split(MPI_Comm comm, const RankDevice& chosen) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int node_rank = -1, node_size = 0;
  MPI_CHECK(MPI_Comm_rank(node, &node_rank));
  MPI_CHECK(MPI_Comm_size(node, &node_size));
  MPI_CHECK(MPI_Comm_free(&node));
  EXPECT_EQ(chosen.local_rank, node_rank);
  EXPECT_EQ(chosen.local_size, node_size);

  // Property, by host name: the local ranks of one host are 0..n-1, once each, n = its rank count.
  int size = 1;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  char host[256] = {};
  const std::string mine = host_name();
  mine.copy(host, sizeof(host) - 1);
  std::vector<char> hosts(256 * static_cast<size_t>(size));
  MPI_CHECK(MPI_Allgather(host, 256, MPI_CHAR, hosts.data(), 256, MPI_CHAR, comm));
  std::vector<int> pairs(2 * static_cast<size_t>(size));
  const int local[2] = {chosen.local_rank, chosen.local_size};
  MPI_CHECK(MPI_Allgather(local, 2, MPI_INT, pairs.data(), 2, MPI_INT, comm));
  std::map<std::string, std::vector<int>> per_host;
  std::map<std::string, std::set<int>> sizes;
  for (int r = 0; r < size; ++r) {
    const std::string name(hosts.data() + 256 * r);
    per_host[name].push_back(pairs[2 * r]);
    sizes[name].insert(pairs[2 * r + 1]);
  }
  for (const auto& [name, ranks] : per_host) {
    EXPECT_EQ(sizes[name], std::set<int>{static_cast<int>(ranks.size())}) << name;
    EXPECT_EQ(std::set<int>(ranks.begin(), ranks.end()).size(), ranks.size()) << name;
    for (int r : ranks) EXPECT_LT(r, static_cast<int>(ranks.size())) << name;
  }
}

TEST(SelectDevice, CpuGivesTheCpuAndTheLocalRankOfTheSharedMemorySplit) {
  const RankDevice chosen = select_device(MPI_COMM_WORLD, DeviceRequest{DeviceKind::kCpu});
  EXPECT_TRUE(chosen.device.is_cpu());
  expect_local_ranks_match_a_shared_memory_split(MPI_COMM_WORLD, chosen);
  EXPECT_NE(chosen.description.find(host_name()), std::string::npos) << chosen.description;
  EXPECT_NE(chosen.description.find("cpu"), std::string::npos) << chosen.description;
}

// A job on a slice of the ranks counts its local ranks within the slice only.
TEST(SelectDevice, LocalRanksAreThoseOfTheGivenCommunicator) {
  const int rank = world_rank();
  MPI_Comm half = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, /*color=*/rank % 2, /*key=*/rank, &half));
  const RankDevice chosen = select_device(half, DeviceRequest{DeviceKind::kCpu});
  expect_local_ranks_match_a_shared_memory_split(half, chosen);
  int half_size = 0;
  MPI_CHECK(MPI_Comm_size(half, &half_size));
  EXPECT_LE(chosen.local_size, half_size);
  MPI_CHECK(MPI_Comm_free(&half));
}

TEST(SelectDevice, AutoIsTheCpuWhenSomeRankHasNoGpu) {
  if (fewest_gpus_anywhere() > 0) GTEST_SKIP() << "every rank sees a GPU";
  const RankDevice chosen = select_device(MPI_COMM_WORLD, DeviceRequest{DeviceKind::kAuto});
  EXPECT_TRUE(chosen.device.is_cpu());
  expect_local_ranks_match_a_shared_memory_split(MPI_COMM_WORLD, chosen);
}

// Every rank throws (none is left in a collective), with the host and a rank in the text.
TEST(SelectDevice, CudaWithoutAGpuIsAnAgreedErrorNamingHostAndRank) {
  if (fewest_gpus_anywhere() > 0) GTEST_SKIP() << "every rank sees a GPU";
  testing::expect_error([] { select_device(MPI_COMM_WORLD, DeviceRequest{DeviceKind::kCuda}); },
                        {"[device]", host_name(), "rank 0", "--device cuda", "CUDA_VISIBLE_DEVICES",
                         "0 CUDA device"});
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));  // still in step
}

TEST(MakeCommunicator, CpuGivesMpiOverTheGivenCommunicator) {
  auto comm = make_communicator(MPI_COMM_WORLD, c10::Device(c10::kCPU));
  EXPECT_EQ(comm->backend(), "mpi");
  EXPECT_EQ(comm->rank(), world_rank());
  EXPECT_EQ(comm->size(), world_size());
  auto ones = torch::ones({5});
  comm->all_reduce_async(ones, ReduceOp::kSum)->wait();
  EXPECT_TRUE(torch::equal(ones, torch::full({5}, static_cast<float>(world_size()))));

  const int rank = world_rank();
  MPI_Comm half = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, /*color=*/rank % 2, /*key=*/rank, &half));
  {
    auto sub = make_communicator(half, c10::Device(c10::kCPU));
    EXPECT_EQ(sub->rank(), rank / 2);
    EXPECT_EQ(sub->size(), (world_size() - rank % 2 + 1) / 2);
  }
  MPI_CHECK(MPI_Comm_free(&half));
}

#ifdef DIFFUSION_WITH_NCCL
TEST(MakeCommunicator, CudaWithoutAGpuRefusesOnEveryRank) {
  if (fewest_gpus_anywhere() > 0) GTEST_SKIP() << "every rank sees a GPU";
  testing::expect_error([] { make_communicator(MPI_COMM_WORLD, c10::Device(c10::kCUDA, 0)); },
                        {"CUDA device", "rank"});
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
}

#ifdef DIFFUSION_WITH_CUDA
// Whether ranks share a GPU anywhere (by UUID, as select_device found), on every rank.
bool ranks_share_a_gpu_somewhere(const RankDevice& chosen) {
  const int mine = chosen.gpu_shared_by > 1 ? 1 : 0;
  int any = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  return any == 1;
}
#endif

// GPU machines only: each rank's own GPU, NCCL from the factory, and NCCL's sum and average
// against MPI's on the same values.
TEST(SelectDevice, CudaGivesTheLocalRanksGpuAndNcclReducesLikeMpi) {
  const int fewest = fewest_gpus_anywhere();
  if (fewest == 0) GTEST_SKIP() << "no GPU on some rank (this machine has none)";
  const RankDevice chosen = select_device(MPI_COMM_WORLD, DeviceRequest{DeviceKind::kCuda, /*share_gpus=*/true});
  if (ranks_share_a_gpu_somewhere(chosen))
    GTEST_SKIP() << "ranks share a GPU here: NCCL needs a GPU per rank "
                    "(MakeCommunicator.NcclRefusesRanksThatShareAGpu runs instead)";
  ASSERT_TRUE(chosen.device.is_cuda());
  if (chosen.local_size <= cuda_device_count()) {
    EXPECT_EQ(chosen.device.index(), chosen.local_rank);
  }
  EXPECT_NE(chosen.description.find("cuda:"), std::string::npos) << chosen.description;
  const RankDevice automatic = select_device(MPI_COMM_WORLD, DeviceRequest{DeviceKind::kAuto, true});
  EXPECT_EQ(automatic.device, chosen.device);

  auto nccl = make_communicator(MPI_COMM_WORLD, chosen.device, /*nccl_timeout_s=*/120);
  auto mpi = make_communicator(MPI_COMM_WORLD, c10::Device(c10::kCPU));
  EXPECT_EQ(nccl->backend(), "nccl");
  EXPECT_EQ(nccl->rank(), world_rank());
  EXPECT_EQ(nccl->size(), world_size());
  // Integers in float32: sums are exact on both paths.
  const auto local = (torch::arange(4099, torch::kInt64).remainder(29) * (world_rank() + 1)).to(torch::kFloat32);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    auto on_cpu = local.clone();
    mpi->all_reduce_async(on_cpu, op)->wait();
    auto on_gpu = local.to(chosen.device);
    nccl->all_reduce_async(on_gpu, op)->wait();
    const auto back = on_gpu.cpu();
    if (op == ReduceOp::kSum) {
      EXPECT_TRUE(torch::equal(back, on_cpu));
    } else {
      EXPECT_TRUE(testing::tensor_near(back, on_cpu, 1e-6, 1e-6));
    }
  }
  nccl->barrier();
}

// GPU machines with more ranks than GPUs (the one-GPU check machine at 2 ranks): NCCL would fail
// its init with "Duplicate GPU detected"; every rank is refused first, with the ranks named.
TEST(MakeCommunicator, NcclRefusesRanksThatShareAGpu) {
  if (fewest_gpus_anywhere() == 0) GTEST_SKIP() << "no GPU on some rank (this machine has none)";
  const RankDevice chosen = select_device(MPI_COMM_WORLD, DeviceRequest{DeviceKind::kCuda, /*share_gpus=*/true});
  if (!ranks_share_a_gpu_somewhere(chosen)) GTEST_SKIP() << "a GPU per rank: no rank shares one";
  testing::expect_error([&] { make_communicator(MPI_COMM_WORLD, chosen.device, /*nccl_timeout_s=*/60); },
                        {"[comm] NcclCommunicator", "rank 0", "ranks 0, 1", "on one GPU", host_name(),
                         "--share-gpus", "--device cpu"});
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));  // still in step
}
#endif

}  // namespace
}  // namespace diffusion
