// main() of the MPI test binaries: every rank runs every test; output comes from rank 0 only
// (other ranks report their failures with a rank prefix); the exit code is the worst over all
// ranks, so ctest sees a failure on any rank. An exception escaping a test aborts the whole job
// rather than leaving the other ranks in a collective.
#include <gtest/gtest.h>

#include <exception>

#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "tests/test_utils.h"

namespace diffusion::testing {

int world_rank() {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  return rank;
}

int world_size() {
  int size = 1;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  return size;
}

}  // namespace diffusion::testing

int main(int argc, char** argv) {
  diffusion::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.rank() != 0) {
    // Keep failures visible from every rank, but only rank 0 prints the progress lines.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int result = 1;
  try {
    result = RUN_ALL_TESTS();
  } catch (const std::exception& e) {
    diffusion::abort_job(e.what());
  }
  if (result != 0 && mpi.rank() != 0)
    diffusion::log_rank("MPI test failed on this rank");
  int worst = 0;
  MPI_CHECK(MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  return worst;
}
