// Builds the message of a failed library call and throws it as diffusion::Error.
#include "core/check.h"

#include <fmt/core.h>

#include "core/error.h"
#include "core/log.h"

namespace diffusion {

void raise_check_failure(const char* library, const char* expression, const char* file, int line,
                         const std::string& library_message) {
  throw Error(fmt::format("{}{} call failed at {}:{} (rank {}): {}: {}", rank_prefix(), library, file,
                          line, log_rank_id(), expression, library_message));
}

}  // namespace diffusion
