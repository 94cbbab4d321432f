// The CUDA side of keyed_normal (keyed_noise.h): one thread per (row, pair) evaluates the portable
// Box–Muller of core/base/keyed_normal.h. Compiled with -fmad=false (no fused multiply-add), so it
// rounds as the CPU loop does and the values agree bit for bit.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "core/base/cuda_check.h"
#include "core/base/keyed_normal.h"
#include "core/diffusion/keyed_noise.h"

namespace diffusion {
namespace {

constexpr int kThreadsPerBlock = 256;
// Enough blocks to fill an H200 many times over; larger batches loop (grid stride).
constexpr int64_t kMaxBlocks = 65535;

__global__ void keyed_normal_kernel(const uint64_t* __restrict__ keys, int64_t row_len,
                                    int64_t pairs_per_row, int64_t total_pairs, float* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = first; i < total_pairs; i += stride) {
    const int64_t row = i / pairs_per_row;
    const int64_t p = i - row * pairs_per_row;
    float z0, z1;
    keyed_normal_pair(keys[row], static_cast<uint64_t>(p), &z0, &z1);
    float* row_out = out + row * row_len;
    row_out[2 * p] = z0;
    if (2 * p + 1 < row_len) row_out[2 * p + 1] = z1;  // an odd row drops its last z1
  }
}

}  // namespace

void keyed_normal_cuda(const uint64_t* keys, int64_t rows, int64_t row_len, float* out, int device_index) {
  const int64_t pairs_per_row = (row_len + 1) / 2;
  const int64_t total_pairs = rows * pairs_per_row;
  if (total_pairs == 0) return;
  const auto index = static_cast<c10::DeviceIndex>(device_index);
  const c10::cuda::CUDAGuard guard(index);
  // The caller's torch stream, so the kernel is ordered with the work around it.
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(index).stream();
  const int64_t blocks = std::min(kMaxBlocks, (total_pairs + kThreadsPerBlock - 1) / kThreadsPerBlock);
  keyed_normal_kernel<<<static_cast<unsigned>(blocks), kThreadsPerBlock, 0, stream>>>(
      keys, row_len, pairs_per_row, total_pairs, out);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace diffusion
