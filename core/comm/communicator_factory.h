// TEMPORARY stand-in until the comm branch lands (same API).
#pragma once
#include <mpi.h>
#include <c10/core/Device.h>
#include <memory>
#include "core/comm/communicator.h"
namespace diffusion {
std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, const c10::Device& device);
}
