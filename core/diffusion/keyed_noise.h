// Keyed Gaussian noise for a whole batch in one pass: row r of the result is the keyed normal
// stream of row_keys[r] (core/base/keyed_normal.h), so a row's values depend only on its key,
// never on the batch it shares, the thread count or the device.
//
// On CPU it is one at::parallel_for over (row, pair); on a CUDA device one kernel with a thread
// per (row, pair) (keyed_noise_cuda.cu), on the current torch stream. Both evaluate the same
// portable ln/sincos code without floating-point contraction and round to float32 at the end, so
// a CUDA result equals the CPU result bit for bit. Against KeyedRng::normal_pair() (std::log,
// std::cos, std::sin) a value differs by at most one float32 ulp.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace diffusion {

// float32 [rows, ...row_shape] on `device` (CPU, or CUDA when built with it); row r holds the
// first prod(row_shape) values of the stream keyed by row_keys[r].
at::Tensor keyed_normal(const std::vector<uint64_t>& row_keys, const std::vector<int64_t>& row_shape,
                        const at::Device& device);

#ifdef DIFFUSION_WITH_CUDA
// The CUDA launcher (keyed_noise_cuda.cu): fills out[rows, row_len] (device memory) from keys
// (device memory, `rows` of them) on the current torch stream of device `device_index`.
void keyed_normal_cuda(const uint64_t* keys, int64_t rows, int64_t row_len, float* out, int device_index);
#endif

}  // namespace diffusion
