// What the CUDA side of this build links against, queried at run time: versions of the CUDA
// runtime and NCCL, the number of visible devices (0 on a machine without a GPU) and what one
// device is. Free of CUDA headers so that any file may ask; defined only in builds with
// DIFFUSION_WITH_CUDA (cuda_runtime.cpp).
#pragma once

#include <cstddef>
#include <functional>
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

// Devices visible to this process (CUDA_VISIBLE_DEVICES applies). 0 when there is no driver or
// no device: that answer leaves no CUDA error behind for later calls.
int cuda_device_count();

struct CudaDeviceInfo {
  int index = -1;
  std::string name;
  std::string uuid;  // 16 bytes, the same for one physical GPU in every process of a node
  std::size_t total_bytes = 0;
  std::size_t free_bytes = 0;
};

// Makes `index` this thread's current device (cudaSetDevice) and describes it.
CudaDeviceInfo use_cuda_device(int index);

// Peak bytes the caching allocator held on device `index` while `run` ran, above what it held
// before (the working memory of a forward pass, for choosing a batch size).
std::size_t cuda_peak_bytes_of(int index, const std::function<void()>& run);

}  // namespace diffusion
