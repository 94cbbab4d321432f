// diffusion-sample: parse options, run the sampling job. Any exception on any rank is logged
// with the rank and takes the whole job down (MPI_Abort).
#include <exception>

#include "core/log.h"
#include "core/mpi_session.h"
#include "sampler/generation.h"
#include "sampler/sample_options.h"

int main(int argc, char** argv) {
  diffusion::MpiSession mpi(&argc, &argv);
  try {
    const auto config = diffusion::parse_sample_options(argc, argv);
    if (!config) return 0;
    diffusion::run_sampling(*config, MPI_COMM_WORLD);
  } catch (const std::exception& e) {
    diffusion::abort_job(e.what());
  }
  return 0;
}
