// CUDA runtime and NCCL version queries (none of them needs a GPU to answer) and the device
// queries of device selection.
#include "core/comm/cuda_runtime.h"

#include <c10/cuda/CUDACachingAllocator.h>
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
  info.device_count = cuda_device_count();
#ifdef DIFFUSION_WITH_NCCL
  NCCL_CHECK(ncclGetVersion(&info.nccl_version));
  info.nccl_compiled_version = NCCL_VERSION_CODE;
#endif
  return info;
}

int cuda_device_count() {
  int count = 0;
  // Without a driver or device this reports an error (cudaErrorNoDevice,
  // cudaErrorInsufficientDriver): that only means "no GPU here", and it is not a sticky error.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    count = 0;
    cudaGetLastError();  // clear it so that later calls start clean
  }
  return count;
}

CudaDeviceInfo use_cuda_device(int index) {
  CudaDeviceInfo info;
  info.index = index;
  CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp props{};
  CUDA_CHECK(cudaGetDeviceProperties(&props, index));
  info.name = props.name;
  info.uuid.assign(props.uuid.bytes, sizeof(props.uuid.bytes));
  // On the current device, which is now `index` (this creates its context).
  CUDA_CHECK(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
  return info;
}

std::size_t cuda_peak_bytes_of(int index, const std::function<void()>& run) {
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto device = static_cast<c10::DeviceIndex>(index);
  CUDA_CHECK(cudaDeviceSynchronize());
  alloc::resetPeakStats(device);
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const int64_t before = alloc::getDeviceStats(device).allocated_bytes[aggregate].current;
  run();
  CUDA_CHECK(cudaDeviceSynchronize());
  const int64_t peak = alloc::getDeviceStats(device).allocated_bytes[aggregate].peak;
  return static_cast<std::size_t>(std::max<int64_t>(peak - before, 0));
}

}  // namespace diffusion
