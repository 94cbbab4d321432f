// CUDA_CHECK and NCCL_CHECK: a failed call throws with the expression, file:line, rank and the
// library's error text (for NCCL also ncclGetLastError), as nccl-tests' NCCLCHECK does.
// Include only from files compiled with DIFFUSION_WITH_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "core/base/check.h"

#define CUDA_CHECK(expr)                                                                      \
  do {                                                                                        \
    cudaError_t cuda_check_rc_ = (expr);                                                      \
    if (cuda_check_rc_ != cudaSuccess)                                                        \
      ::diffusion::raise_check_failure("CUDA", #expr, __FILE__, __LINE__,                     \
                                       cudaGetErrorString(cuda_check_rc_));                   \
  } while (0)

#ifdef DIFFUSION_WITH_NCCL
#include <nccl.h>
#define NCCL_CHECK(expr)                                                                      \
  do {                                                                                        \
    ncclResult_t nccl_check_rc_ = (expr);                                                     \
    if (nccl_check_rc_ != ncclSuccess)                                                        \
      ::diffusion::raise_check_failure(                                                       \
          "NCCL", #expr, __FILE__, __LINE__,                                                  \
          std::string(ncclGetErrorString(nccl_check_rc_)) + " (" +                            \
              ncclGetLastError(nullptr) + ")");                                               \
  } while (0)
#endif
