// MpiSession owns MPI_Init/MPI_Finalize for a program (constructed first in main, destroyed
// last), and MPI_CHECK reports a failed MPI call with its error string and rank.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

#include "core/base/check.h"

namespace diffusion {

std::string mpi_error_text(int code);

#define MPI_CHECK(expr)                                                                       \
  do {                                                                                        \
    int mpi_check_rc_ = (expr);                                                               \
    if (mpi_check_rc_ != MPI_SUCCESS)                                                         \
      ::diffusion::raise_check_failure("MPI", #expr, __FILE__, __LINE__,                      \
                                       ::diffusion::mpi_error_text(mpi_check_rc_));           \
  } while (0)

// One double reduced over `comm` with `op` (host-side control values: losses, flags).
double mpi_all_reduce_scalar(double value, MPI_Op op, MPI_Comm comm);

class MpiSession {
 public:
  // Errors on MPI_COMM_WORLD are returned (not fatal) so MPI_CHECK can report them.
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int thread_level() const { return thread_level_; }

 private:
  int rank_ = 0;
  int world_size_ = 1;
  int thread_level_ = MPI_THREAD_SINGLE;
};

// Logs `what` with the rank and takes every rank of the job down (MPI_Abort): a failing rank
// must never leave the others waiting in a collective.
[[noreturn]] void abort_job(const std::string& what, int exit_code = 1);

// The error policy of every MPI program, around its body (which returns the exit code): an
// AgreedError is printed once, by rank 0, and the program returns 1 (main then leaves through
// MpiSession's MPI_Finalize); any other exception takes the job down with abort_job.
int run_main(const std::function<int()>& body);

}  // namespace diffusion
