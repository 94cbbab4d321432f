// CUDA runtime and NCCL version queries; none of them needs a GPU to answer.
#include "core/comm/cuda_runtime.h"

#include <fmt/core.h>

#include "core/base/cuda_check.h"

namespace diffusion {

std::string CudaRuntimeInfo::describe() const {
  return fmt::format("CUDA runtime {} (built with {}), NCCL {} (built with {}), {} device(s)",
                     runtime_version, compiled_version, nccl_version, nccl_compiled_version,
                     device_count);
}

CudaRuntimeInfo query_cuda_runtime() {
  CudaRuntimeInfo info;
  CUDA_CHECK(cudaRuntimeGetVersion(&info.runtime_version));
  info.compiled_version = CUDART_VERSION;
  // Without a driver or device this reports an error: that only means "no GPU here".
  if (cudaGetDeviceCount(&info.device_count) != cudaSuccess) {
    info.device_count = 0;
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
  }
#ifdef DIFFUSION_WITH_NCCL
  NCCL_CHECK(ncclGetVersion(&info.nccl_version));
  info.nccl_compiled_version = NCCL_VERSION_CODE;
#endif
  return info;
}

}  // namespace diffusion
