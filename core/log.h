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
