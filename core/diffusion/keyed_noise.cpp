// Keyed batched noise: the CPU loop, and the dispatch to the CUDA kernel (keyed_noise_cuda.cu).
// Compiled with -ffp-contract=off (core/diffusion/CMakeLists.txt), so that the portable math of
// keyed_normal.h rounds exactly as on the device.
#include "core/diffusion/keyed_noise.h"

#include <ATen/Parallel.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>

#include "core/base/error.h"
#include "core/base/keyed_normal.h"

namespace diffusion {
namespace {

// Pairs per parallel chunk: a pair costs ~50 ns, so a chunk is ~50 µs of work.
constexpr int64_t kPairsPerTask = 1024;

// Rows [pair_begin / pairs_per_row ...] of out[rows, n]: flat pair index i = row·pairs_per_row + p.
void fill_pairs(const uint64_t* keys, int64_t n, int64_t pairs_per_row, int64_t pair_begin,
                int64_t pair_end, float* out) {
  const int64_t full_pairs = n / 2;  // pairs whose z1 is kept
  for (int64_t i = pair_begin; i < pair_end;) {
    const int64_t row = i / pairs_per_row;
    const int64_t p_begin = i - row * pairs_per_row;
    const int64_t p_end = std::min(pairs_per_row, p_begin + (pair_end - i));
    const uint64_t key = keys[row];
    float* row_out = out + row * n;
    // The body has no branch, so the compiler may vectorise it.
    const int64_t p_full_end = std::min(p_end, full_pairs);
    for (int64_t p = p_begin; p < p_full_end; ++p)
      keyed_normal_pair(key, static_cast<uint64_t>(p), row_out + 2 * p, row_out + 2 * p + 1);
    if (p_end > full_pairs && full_pairs < pairs_per_row) {  // odd n: the last pair keeps only z0
      float z1;
      keyed_normal_pair(key, static_cast<uint64_t>(full_pairs), row_out + 2 * full_pairs, &z1);
    }
    i += p_end - p_begin;
  }
}

}  // namespace

at::Tensor keyed_normal(const std::vector<uint64_t>& row_keys, const std::vector<int64_t>& row_shape,
                        const at::Device& device) {
  const auto rows = static_cast<int64_t>(row_keys.size());
  std::vector<int64_t> shape{rows};
  int64_t n = 1;
  for (int64_t d : row_shape) {
    if (d < 0)
      throw Error(fmt::format("keyed_normal: row shape [{}] has a negative size, expected sizes >= 0",
                              fmt::join(row_shape, ", ")));
    shape.push_back(d);
    n *= d;
  }
  const int64_t pairs_per_row = (n + 1) / 2;
  const int64_t total_pairs = rows * pairs_per_row;

  if (device.is_cpu()) {
    auto out = torch::empty(shape, torch::kFloat32);  // [rows, ...row_shape]
    if (total_pairs == 0) return out;
    float* data = out.data_ptr<float>();
    const uint64_t* keys = row_keys.data();
    at::parallel_for(0, total_pairs, kPairsPerTask, [&](int64_t begin, int64_t end) {
      fill_pairs(keys, n, pairs_per_row, begin, end, data);
    });
    return out;
  }
  if (device.is_cuda()) {
#ifdef DIFFUSION_WITH_CUDA
    auto out = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat32).device(device));
    if (total_pairs == 0) return out;
    // The keys go up once, as one int64 tensor (same bits as uint64), then one kernel.
    auto host_keys = torch::empty({rows}, torch::kLong);
    std::copy(row_keys.begin(), row_keys.end(), reinterpret_cast<uint64_t*>(host_keys.data_ptr<int64_t>()));
    const auto device_keys = host_keys.to(device);
    keyed_normal_cuda(reinterpret_cast<const uint64_t*>(device_keys.data_ptr<int64_t>()), rows, n,
                      out.data_ptr<float>(), out.device().index());
    return out;
#else
    throw Error(fmt::format("keyed_normal: device {} requested, but this build has no CUDA "
                            "(the torch wheel or the CUDA toolkit was CPU-only at configure time)",
                            device.str()));
#endif
  }
  throw Error(fmt::format("keyed_normal: unsupported device {}, expected cpu or cuda", device.str()));
}

}  // namespace diffusion
