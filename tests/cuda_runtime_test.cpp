// The CUDA and NCCL libraries this build links are the ones it was compiled against, and
// they answer on a machine without a GPU (so the GPU path at least links and loads here).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "core/comm/cuda_runtime.h"

namespace diffusion {
namespace {

TEST(CudaRuntime, LinkedLibrariesMatchTheHeadersTheBuildSaw) {
  const auto info = query_cuda_runtime();
  std::cout << info.describe() << "\n";
  // Major.minor of the runtime library equals that of the toolkit headers (CUDA 13.x).
  EXPECT_EQ(info.runtime_version / 10, info.compiled_version / 10);
  EXPECT_GE(info.runtime_version, 13000);
  EXPECT_GE(info.device_count, 0);
#ifdef DIFFUSION_WITH_NCCL
  // ncclGetVersion comes from the loaded libnccl: it must be the version of nccl.h.
  EXPECT_EQ(info.nccl_version, info.nccl_compiled_version);
  EXPECT_GT(info.nccl_version, 0);
#endif
}

// Without a GPU the count is 0 and the runtime keeps answering: the count is the same when
// asked again and calls that need no device still succeed. (Without a driver at all every call
// that initialises the runtime, cudaGetLastError included, reports cudaErrorInsufficientDriver
// again: that is the machine's state, not an error the query left behind.)
TEST(CudaRuntime, DeviceCountIsStableAndLeavesTheRuntimeUsable) {
  const int count = cuda_device_count();
  EXPECT_GE(count, 0);
  EXPECT_EQ(cuda_device_count(), count);
  EXPECT_EQ(query_cuda_runtime().device_count, count);
  int version = 0;
  EXPECT_EQ(cudaRuntimeGetVersion(&version), cudaSuccess);
  EXPECT_GE(version, 13000);
  if (count > 0) {
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  }
}

TEST(CudaRuntime, UseCudaDeviceDescribesTheDevice) {
  const int count = cuda_device_count();
  if (count == 0) GTEST_SKIP() << "no GPU visible";
  const CudaDeviceInfo info = use_cuda_device(count - 1);
  EXPECT_EQ(info.index, count - 1);
  EXPECT_FALSE(info.name.empty());
  EXPECT_EQ(info.uuid.size(), 16u);
  EXPECT_GT(info.total_bytes, 0u);
  EXPECT_LE(info.free_bytes, info.total_bytes);
  int current = -1;
  EXPECT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, count - 1);
}

}  // namespace
}  // namespace diffusion
