// diffusion-sample: parse options, run the sampling job, or with --jobs FILE.ini the jobs of a
// fan-out. An error every rank found alike is printed once and the program exits with 1; any
// other exception on any rank takes the whole job down (MPI_Abort).
#include "core/base/allocator.h"
#include "core/base/mpi_session.h"
#include "core/base/stop_signal.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/device.h"
#include "sampler/generation.h"
#include "sampler/jobs.h"
#include "sampler/jobs_options.h"
#include "sampler/sample_options.h"

int main(int argc, char** argv) {
  diffusion::tune_allocator();
  diffusion::MpiSession mpi(&argc, &argv);
  return diffusion::run_main([&] {
    const auto jobs = diffusion::agreed(MPI_COMM_WORLD, "", [&] {
      return diffusion::parse_jobs_options(argc, argv, mpi.world_size());
    });
    if (jobs) {
      // Each rank watches with its own job's --collective-timeout.
      const diffusion::CollectiveWatchdog watchdog(MPI_COMM_WORLD,
                                                   diffusion::jobs_collective_timeout(*jobs, mpi.rank()));
      // Distillation jobs checkpoint and stop on SIGTERM/SIGUSR1 like diffusion-distill.
      diffusion::install_stop_signal_handlers();
      diffusion::run_jobs(*jobs, MPI_COMM_WORLD);
      return 0;
    }
    const auto config = diffusion::agreed(MPI_COMM_WORLD, "", [&] { return diffusion::parse_sample_options(argc, argv); });
    if (!config) return 0;
    const diffusion::CollectiveWatchdog watchdog(MPI_COMM_WORLD, config->collective_timeout_s);
    const auto device = diffusion::select_device(
        MPI_COMM_WORLD, {diffusion::parse_device_kind(config->device), config->share_gpus});
    diffusion::run_sampling(*config, MPI_COMM_WORLD, device.device);
    return 0;
  });
}
