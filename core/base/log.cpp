// Rank-aware logging; output is line-buffered to stderr so that ranks' lines do not interleave
// mid-line and progress is visible under mpirun and Slurm.
#include "core/base/log.h"

#include <cstdio>
#include <mutex>

namespace diffusion {
namespace {
int g_rank = 0;
int g_world = 1;
std::mutex g_log_mutex;
}  // namespace

void set_log_rank(int rank, int world) {
  g_rank = rank;
  g_world = world;
}
int log_rank_id() { return g_rank; }
int log_world_size() { return g_world; }

std::string rank_prefix() {
  return g_world > 1 ? fmt::format("[rank {}/{}] ", g_rank, g_world) : std::string();
}

void log_line(const std::string& line) {
  // One write per line: stderr is unbuffered, and a line written as text then '\n' can reach
  // mpirun's output forwarding in two pieces, with another rank's line in between.
  std::string whole = line + '\n';
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::fwrite(whole.data(), 1, whole.size(), stderr);
  std::fflush(stderr);
}

}  // namespace diffusion
