// NcclCommunicator against MpiCommunicator on the same data (ctest: 1 and 2 ranks, labels mpi
// and gpu): sum all-reduce (blocking and async) and broadcast of float32/float64 CUDA tensors
// must give what the MPI backend gives on CPU copies of the same values, bit for bit where the
// sums are exact or need at most one rounding, within float rounding otherwise. Every rank skips
// together when any rank has no CUDA device of its own (NCCL refuses two ranks on one device).
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/base/mpi_session.h"
#include "core/comm/cuda_runtime.h"
#include "core/comm/mpi_communicator.h"
#include "core/comm/nccl_communicator.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::world_rank;
using testing::world_size;

const std::vector<torch::ScalarType> kFloatTypes = {torch::kFloat32, torch::kFloat64};
// Small, a non-multiple of any NCCL chunk, and large enough (4 MiB of float32) that NCCL
// splits it into many chunks and pipeline steps.
const std::vector<int64_t> kSizes = {1, 1001, (1 << 20) + 3};

// Which CUDA device this rank uses, or why the whole job skips. Decided collectively so that
// every rank skips or runs every test together (a rank alone in a collective would hang).
struct GpuPlan {
  bool run = false;
  int device = -1;
  std::string why_not;
};

GpuPlan plan_gpus() {
  GpuPlan plan;
  const int devices = query_cuda_runtime().device_count;
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank(), MPI_INFO_NULL,
                                &node));
  int local_rank = 0, local_size = 1;
  MPI_CHECK(MPI_Comm_rank(node, &local_rank));
  MPI_CHECK(MPI_Comm_size(node, &local_size));
  MPI_CHECK(MPI_Comm_free(&node));
  // NCCL needs one device per rank: the ranks of a node take devices 0, 1, ... in local order.
  const int mine = devices >= local_size ? 1 : 0;
  int all = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  if (all) {
    plan.run = true;
    plan.device = local_rank;
  } else if (!mine) {
    plan.why_not = "rank " + std::to_string(world_rank()) + " sees " + std::to_string(devices) +
                   " CUDA device(s) for " + std::to_string(local_size) +
                   " rank(s) on its node; NCCL needs one device per rank";
  } else {
    plan.why_not = "another rank has fewer CUDA devices than ranks on its node";
  }
  return plan;
}

const GpuPlan& gpu_plan() {
  static const GpuPlan plan = plan_gpus();  // first use is inside the first test, on every rank
  return plan;
}

// value[i] = (rank + 1) · (i mod 17 + 1): small integers, so every partial sum is exact.
torch::Tensor rank_values(int rank, int64_t n, torch::ScalarType dtype) {
  auto pattern = torch::arange(n, torch::kInt64).remainder(17) + 1;
  return (pattern * (rank + 1)).to(dtype);
}

// Normal values keyed by (seed, rank): their sums round, and differently in another order.
torch::Tensor rank_noise(int rank, int64_t n, torch::ScalarType dtype, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed * 1000 + static_cast<uint64_t>(rank));
  return torch::randn({n}, gen, torch::TensorOptions().dtype(dtype));
}

// Float sums over ranks, accurate to the last few bits whatever order NCCL adds in: with W
// values of size ~1, any order's error is below (W - 1) ulps of the largest partial sum.
::testing::AssertionResult sums_agree(const torch::Tensor& nccl, const torch::Tensor& mpi, int world) {
  if (world <= 2) {
    // One addition per element (a + b == b + a in IEEE arithmetic): bit for bit.
    if (torch::equal(nccl, mpi)) return ::testing::AssertionSuccess();
    return testing::tensor_near(nccl, mpi, 0, 0);
  }
  const double eps = nccl.scalar_type() == torch::kFloat32 ? 1.2e-7 : 2.3e-16;
  return testing::tensor_near(nccl, mpi, 4 * world * eps, 4 * world * eps * std::sqrt(world));
}

class NcclVersusMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    const GpuPlan& plan = gpu_plan();
    if (!plan.run) GTEST_SKIP() << "no GPU per rank: " << plan.why_not;
    mpi_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
    nccl_ = std::make_unique<NcclCommunicator>(MPI_COMM_WORLD, plan.device);
    cuda_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(plan.device));
  }
  void TearDown() override {
    nccl_.reset();  // collective: every rank destroys together
    mpi_.reset();
  }

  torch::Tensor on_gpu(const torch::Tensor& cpu) const { return cpu.to(cuda_).contiguous(); }

  std::unique_ptr<MpiCommunicator> mpi_;
  std::unique_ptr<NcclCommunicator> nccl_;
  torch::Device cuda_{torch::kCPU};
};

TEST_F(NcclVersusMpi, KnowsRankSizeAndDevice) {
  EXPECT_EQ(nccl_->rank(), world_rank());
  EXPECT_EQ(nccl_->size(), world_size());
  EXPECT_EQ(nccl_->backend(), "nccl");
  EXPECT_EQ(nccl_->device(), c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(gpu_plan().device)));
}

TEST_F(NcclVersusMpi, AllReduceOfExactValuesEqualsMpiBitForBit) {
  const int w = world_size();
  for (torch::ScalarType dtype : kFloatTypes) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " n=" + std::to_string(n));
      auto cpu = rank_values(world_rank(), n, dtype);
      auto gpu = on_gpu(cpu);
      mpi_->all_reduce_sum(cpu);
      nccl_->all_reduce_sum(gpu);
      EXPECT_TRUE(torch::equal(gpu.cpu(), cpu)) << "NCCL and MPI sums differ";
      // Σ_r (r + 1) · p_i = W(W + 1)/2 · p_i, the independent check of both.
      auto want = (torch::arange(n, torch::kInt64).remainder(17) + 1) * (int64_t{w} * (w + 1) / 2);
      EXPECT_TRUE(torch::equal(cpu, want.to(dtype)));
    }
  }
}

TEST_F(NcclVersusMpi, AllReduceOfRoundedValuesEqualsMpiWithinRounding) {
  const int w = world_size();
  for (torch::ScalarType dtype : kFloatTypes) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " n=" + std::to_string(n));
      auto cpu = rank_noise(world_rank(), n, dtype, /*seed=*/7);
      auto gpu = on_gpu(cpu);
      mpi_->all_reduce_sum(cpu);
      nccl_->all_reduce_sum(gpu);
      EXPECT_TRUE(sums_agree(gpu.cpu(), cpu, w));
      // And both against the sum computed here from every rank's values, in float64.
      auto reference = torch::zeros({n}, torch::kFloat64);
      for (int r = 0; r < w; ++r) reference += rank_noise(r, n, dtype, 7).to(torch::kFloat64);
      const double tol = dtype == torch::kFloat32 ? 1e-6 : 1e-14;
      EXPECT_TRUE(testing::tensor_near(gpu.cpu().to(torch::kFloat64), reference, tol, tol * w));
    }
  }
}

TEST_F(NcclVersusMpi, AsyncReductionsInFlightEqualMpi) {
  const int w = world_size();
  constexpr int kCount = 12;
  std::vector<torch::Tensor> cpu, gpu;
  std::vector<std::unique_ptr<PendingCollective>> pending;
  for (int k = 0; k < kCount; ++k) {
    const torch::ScalarType dtype = kFloatTypes[k % 2];
    const int64_t n = 1 + (k * 7919) % 300007;
    cpu.push_back(rank_noise(world_rank(), n, dtype, /*seed=*/100 + k));
    gpu.push_back(on_gpu(cpu.back()));
    // Work on the current stream between launches: NCCL's stream must not overtake it.
    gpu.back().mul_(k + 1);
    cpu.back().mul_(k + 1);
    pending.push_back(nccl_->all_reduce_sum_async(gpu.back()));
  }
  for (auto& t : cpu) mpi_->all_reduce_sum(t);
  for (int k = kCount - 1; k >= 0; --k) {
    pending[k]->wait();
    EXPECT_TRUE(sums_agree(gpu[k].cpu(), cpu[k], w)) << "reduction " << k;
  }
}

TEST_F(NcclVersusMpi, BroadcastEqualsMpiBroadcast) {
  const int root = world_size() - 1;
  for (torch::ScalarType dtype : kFloatTypes) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " n=" + std::to_string(n));
      // Each rank starts from its own values; afterwards all must hold the root's.
      auto cpu = rank_noise(world_rank(), n, dtype, /*seed=*/3);
      auto gpu = on_gpu(cpu);
      mpi_->broadcast(cpu, root);
      nccl_->broadcast(gpu, root);
      EXPECT_TRUE(torch::equal(gpu.cpu(), cpu));
      EXPECT_TRUE(torch::equal(cpu, rank_noise(root, n, dtype, 3)));
    }
  }
}

TEST_F(NcclVersusMpi, HostValuesEqualMpi) {
  const double mine = 0.1 * (world_rank() + 1);
  EXPECT_EQ(nccl_->all_reduce_sum(mine), mpi_->all_reduce_sum(mine));
  EXPECT_EQ(nccl_->all_reduce_max(mine), mpi_->all_reduce_max(mine));
  EXPECT_DOUBLE_EQ(nccl_->all_reduce_max(mine), 0.1 * world_size());
}

TEST_F(NcclVersusMpi, RejectsCpuTensorsWithAClearError) {
  auto cpu = torch::ones({4});
  testing::expect_error([&] { nccl_->all_reduce_sum(cpu); }, {"all_reduce_sum", "cpu", "cuda:"});
  // Nothing collective happened, so the ranks are still in step.
  auto gpu = on_gpu(torch::ones({4}));
  nccl_->all_reduce_sum(gpu);
  EXPECT_TRUE(torch::equal(gpu.cpu(), torch::full({4}, static_cast<float>(world_size()))));
}

}  // namespace
}  // namespace diffusion
