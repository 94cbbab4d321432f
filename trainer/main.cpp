// diffusion-train: parse options, build the communicator and the trainer, run. Any exception on
// any rank is logged with the rank and takes the whole job down (MPI_Abort).
#include <exception>

#include "core/allocator.h"
#include "core/mpi_communicator.h"
#include "core/mpi_session.h"
#include "trainer/train_options.h"
#include "trainer/trainer.h"

int main(int argc, char** argv) {
  diffusion::tune_allocator();
  diffusion::MpiSession mpi(&argc, &argv);
  try {
    const auto config = diffusion::parse_train_options(argc, argv);
    if (!config) return 0;
    diffusion::install_stop_signal_handlers();
    diffusion::MpiCommunicator communicator(MPI_COMM_WORLD);
    diffusion::Trainer trainer(*config, MPI_COMM_WORLD, communicator);
    trainer.run();
  } catch (const std::exception& e) {
    diffusion::abort_job(e.what());
  }
  return 0;
}
