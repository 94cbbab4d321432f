// Builds the message of a failed library call and throws it as diffusion::Error. It names the
// host (nccl-tests' NCCLCHECK) so a line from a many-node job says where; the rank comes once,
// from the "[rank r/W]" prefix of the line that reports it (abort_job, log_rank).
#include "core/base/check.h"

#include <fmt/core.h>
#include <unistd.h>

#include "core/base/error.h"

namespace diffusion {

std::string host_name() {
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

void raise_check_failure(const char* library, const char* expression, const char* file, int line,
                         const std::string& library_message) {
  throw Error(fmt::format("{} call failed at {}:{} on host {}: {}: {}", library, file, line, host_name(),
                          expression, library_message));
}

}  // namespace diffusion
