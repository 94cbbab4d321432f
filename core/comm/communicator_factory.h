// make_communicator: the one place that picks the Communicator backend for a device, NCCL for
// CUDA tensors and MPI for CPU tensors, over any MPI communicator (the world, or the slice of
// ranks a distillation or sampling job runs on: each gets its own NCCL communicator).
#pragma once

#include <c10/core/Device.h>
#include <mpi.h>

#include <memory>

#include "core/comm/communicator.h"

namespace diffusion {

// Collective over `comm` (every rank calls it with its own device of one kind, as
// select_device() returns it). CUDA: NcclCommunicator on device.index(), whose waits abort the
// communicator and throw after `nccl_timeout_s` seconds (0 = wait for ever); an Error in a build
// without NCCL. CPU: MpiCommunicator.
std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, const c10::Device& device,
                                                double nccl_timeout_s = 0);

}  // namespace diffusion
