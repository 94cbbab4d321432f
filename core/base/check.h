// Shared failure path of the per-library check macros (MPI_CHECK, H5_CHECK, CUDA_CHECK,
// NCCL_CHECK): one message format with the library, the expression, file:line, the host and
// the library's own error text (the rank is added once by whoever prints it).
#pragma once

#include <string>

namespace diffusion {

std::string host_name();  // this machine's name, for messages that must say where

[[noreturn]] void raise_check_failure(const char* library, const char* expression, const char* file,
                                      int line, const std::string& library_message);

}  // namespace diffusion
