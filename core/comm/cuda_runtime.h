// What the CUDA side of this build links against, queried at run time: versions of the CUDA
// runtime and NCCL and the number of visible devices (0 on a machine without a GPU). Free of
// CUDA headers so that any file may ask.
#pragma once

#include <string>

namespace diffusion {

struct CudaRuntimeInfo {
  int runtime_version = 0;   // e.g. 13000 for CUDA 13.0
  int compiled_version = 0;  // CUDART_VERSION the build saw
  int nccl_version = 0;      // ncclGetVersion, 0 when built without NCCL
  int nccl_compiled_version = 0;  // NCCL_VERSION_CODE the build saw
  int device_count = 0;
  std::string describe() const;
};

CudaRuntimeInfo query_cuda_runtime();

}  // namespace diffusion
