// Collective agreement (see agreement.h).
#include "core/comm/agreement.h"

#include <fmt/format.h>

#include "core/base/mpi_session.h"
#include "core/comm/collective_watchdog.h"

namespace diffusion {

void agree_or_throw(MPI_Comm comm, const std::string& local_error, const std::string& what) {
  CollectiveScope scope("agreement", comm);
  int rank = 0, world = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &world));
  const int mine = local_error.empty() ? world : rank;
  int first = world;
  MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == world) return;
  int failed_here = local_error.empty() ? 0 : 1, failed = 0;
  MPI_CHECK(MPI_Allreduce(&failed_here, &failed, 1, MPI_INT, MPI_SUM, comm));
  const std::string message = broadcast_string(comm, rank == first ? local_error : std::string(), first);
  const std::string others = failed > 1 ? fmt::format(" (and {} other ranks)", failed - 1) : "";
  const std::string text = failed == world && what.empty()
                               ? message
                               : fmt::format("{} failed on rank {}{} of {}: {}", what, first, others, world, message);
  // Agreed on the whole job, main may leave through MPI_Finalize. On a slice of the ranks (a job
  // of a jobs file) the others know nothing of it: a plain Error, so the job is taken down.
  int compare = MPI_UNEQUAL;
  MPI_CHECK(MPI_Comm_compare(comm, MPI_COMM_WORLD, &compare));
  if (compare == MPI_IDENT || compare == MPI_CONGRUENT) throw AgreedError(text);
  throw Error(text);
}

std::string broadcast_string(MPI_Comm comm, std::string text, int root) {
  CollectiveScope scope("string broadcast", comm);
  int length = static_cast<int>(text.size());
  MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, root, comm));
  text.resize(static_cast<size_t>(length));
  MPI_CHECK(MPI_Bcast(text.data(), length, MPI_CHAR, root, comm));
  return text;
}

}  // namespace diffusion
