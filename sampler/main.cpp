// diffusion-sample: parse options, run the sampling job, or with --jobs FILE.ini the jobs of a
// fan-out. Any exception on any rank is logged with the rank and takes the whole job down
// (MPI_Abort).
#include <exception>

#include "core/allocator.h"
#include "core/log.h"
#include "core/mpi_session.h"
#include "sampler/generation.h"
#include "sampler/jobs.h"
#include "sampler/jobs_options.h"
#include "sampler/sample_options.h"
#include "trainer/trainer.h"

int main(int argc, char** argv) {
  diffusion::tune_allocator();
  diffusion::MpiSession mpi(&argc, &argv);
  try {
    int world_size = 0;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
    if (const auto jobs = diffusion::parse_jobs_options(argc, argv, world_size)) {
      // Distillation jobs checkpoint and stop on SIGTERM/SIGUSR1 like diffusion-distill.
      diffusion::install_stop_signal_handlers();
      diffusion::run_jobs(*jobs, MPI_COMM_WORLD);
      return 0;
    }
    const auto config = diffusion::parse_sample_options(argc, argv);
    if (!config) return 0;
    diffusion::run_sampling(*config, MPI_COMM_WORLD);
  } catch (const std::exception& e) {
    diffusion::abort_job(e.what());
  }
  return 0;
}
