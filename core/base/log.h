// Rank-aware logging: log0 prints on rank 0 only, log_rank on every rank with a
// "[rank r/W]" prefix. Callers tag their subsystem in the message: "[data] ...", "[comm] ...".
#pragma once

#include <fmt/core.h>

#include <string>

namespace diffusion {

// Set once by whoever owns the MPI session (or never, for a single process).
void set_log_rank(int rank, int world);
int log_rank_id();
int log_world_size();

// Makes the ranks of a sub-communicator log as ranks 0 … n-1 of n for its lifetime (a job that
// runs on a slice of the world logs through its own rank 0); restores the previous values.
class ScopedLogRank {
 public:
  ScopedLogRank(int rank, int world) : saved_rank_(log_rank_id()), saved_world_(log_world_size()) {
    set_log_rank(rank, world);
  }
  ~ScopedLogRank() { set_log_rank(saved_rank_, saved_world_); }
  ScopedLogRank(const ScopedLogRank&) = delete;
  ScopedLogRank& operator=(const ScopedLogRank&) = delete;

 private:
  int saved_rank_, saved_world_;
};

// "[rank r/W] " or "" when the world has one rank.
std::string rank_prefix();

void log_line(const std::string& line);

template <typename... Args>
void log0(fmt::format_string<Args...> format, Args&&... args) {
  if (log_rank_id() == 0) log_line(fmt::format(format, std::forward<Args>(args)...));
}

template <typename... Args>
void log_rank(fmt::format_string<Args...> format, Args&&... args) {
  log_line(rank_prefix() + fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace diffusion
