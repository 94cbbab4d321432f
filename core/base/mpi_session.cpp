// MPI lifetime, error strings and the job-wide abort.
#include "core/base/mpi_session.h"

#include <cstdlib>

#include "core/base/error.h"
#include "core/base/log.h"

namespace diffusion {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "unknown MPI error";
  return std::string(text, static_cast<size_t>(length));
}

double mpi_all_reduce_scalar(double value, MPI_Op op, MPI_Comm comm) {
  double result = 0.0;
  MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, op, comm));
  return result;
}

MpiSession::MpiSession(int* argc, char*** argv) {
  // MULTIPLE lets a communication thread reduce gradient buckets while the main thread runs
  // backward; the provided level is kept so callers can fall back when it is lower.
  MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_));
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  set_log_rank(rank_, world_size_);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int run_main(const std::function<int()>& body) {
  try {
    return body();
  } catch (const AgreedError& e) {
    if (log_rank_id() == 0) log_line(fmt::format("error: {}", e.what()));
    return 1;
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
}

void abort_job(const std::string& what, int exit_code) {
  log_line(fmt::format("{}error: {}", rank_prefix(), what));
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::exit(exit_code);
}

}  // namespace diffusion
