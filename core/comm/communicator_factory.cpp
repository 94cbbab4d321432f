// The communicator factory (see communicator_factory.h).
#include "core/comm/communicator_factory.h"

#include <fmt/format.h>

#include "core/base/error.h"
#include "core/comm/mpi_communicator.h"
#ifdef DIFFUSION_WITH_NCCL
#include "core/comm/nccl_communicator.h"
#endif

namespace diffusion {

std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, const c10::Device& device,
                                                double nccl_timeout_s) {
  if (device.is_cpu()) return std::make_unique<MpiCommunicator>(comm);
  if (device.is_cuda()) {
#ifdef DIFFUSION_WITH_NCCL
    return std::make_unique<NcclCommunicator>(comm, device.has_index() ? device.index() : -1,
                                              nccl_timeout_s);
#else
    (void)nccl_timeout_s;
    throw Error(fmt::format("[comm] make_communicator: device {} needs NCCL, and this build has "
                            "none (a CPU-only LibTorch); use --device cpu",
                            device.str()));
#endif
  }
  throw Error(fmt::format("[comm] make_communicator: no communicator for device {} (cpu or cuda)",
                          device.str()));
}

}  // namespace diffusion
