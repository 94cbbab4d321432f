// diffusion-train: parse options, start the collective watchdog, pick each rank's device, build
// the communicator for it (NCCL for CUDA, MPI for CPU) and the trainer, run. An error every
// rank found alike (a bad option, config or data file) is printed once and the program exits
// with 1; any other exception on any rank takes the whole job down (MPI_Abort).
#include "core/base/allocator.h"
#include "core/base/mpi_session.h"
#include "core/base/stop_signal.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/communicator_factory.h"
#include "core/comm/device.h"
#include "trainer/train_options.h"
#include "trainer/trainer.h"

int main(int argc, char** argv) {
  diffusion::tune_allocator();
  diffusion::MpiSession mpi(&argc, &argv);
  return diffusion::run_main([&] {
    const auto config = diffusion::agreed(MPI_COMM_WORLD, "", [&] {
      return diffusion::parse_train_options(argc, argv);
    });
    if (!config) return 0;
    const auto& runtime = config->runtime;
    // Before any collective of the work, and destroyed after the communicator (reverse order).
    const diffusion::CollectiveWatchdog watchdog(MPI_COMM_WORLD, runtime.collective_timeout_s);
    diffusion::install_stop_signal_handlers();
    const auto device = diffusion::select_device(
        MPI_COMM_WORLD, {diffusion::parse_device_kind(runtime.device), runtime.share_gpus});
    const auto communicator = diffusion::make_communicator(
        MPI_COMM_WORLD, device.device, diffusion::nccl_backstop_timeout_s(runtime.collective_timeout_s));
    diffusion::Trainer trainer(*config, MPI_COMM_WORLD, *communicator);
    trainer.run();
    return 0;
  });
}
