// diffusion-distill: parse options, start the collective watchdog, build the communicator, run
// the distillation rounds. An error every rank found alike is printed once and the program exits
// with 1; any other exception on any rank takes the whole job down (MPI_Abort).
#include "core/base/allocator.h"
#include "core/base/mpi_session.h"
#include "core/base/stop_signal.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/communicator_factory.h"
#include "core/comm/device.h"
#include "distiller/distill_options.h"
#include "distiller/distiller.h"

int main(int argc, char** argv) {
  diffusion::tune_allocator();
  diffusion::MpiSession mpi(&argc, &argv);
  return diffusion::run_main([&] {
    const auto config = diffusion::agreed(MPI_COMM_WORLD, "", [&] { return diffusion::parse_distill_options(argc, argv); });
    if (!config) return 0;
    // Before any collective of the work, and destroyed after the communicator (reverse order).
    const diffusion::CollectiveWatchdog watchdog(MPI_COMM_WORLD, config->collective_timeout_s);
    diffusion::install_stop_signal_handlers();
    const auto device = diffusion::select_device(
        MPI_COMM_WORLD, {diffusion::parse_device_kind(config->device), config->share_gpus});
    const auto communicator = diffusion::make_communicator(
        MPI_COMM_WORLD, device.device, diffusion::nccl_backstop_timeout_s(config->collective_timeout_s));
    diffusion::run_distillation(*config, MPI_COMM_WORLD, *communicator);
    return 0;
  });
}
