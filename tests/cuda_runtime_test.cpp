// The CUDA and NCCL libraries this build links are the ones it was compiled against, and
// they answer on a machine without a GPU (so the GPU path at least links and loads here).
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

}  // namespace
}  // namespace diffusion
