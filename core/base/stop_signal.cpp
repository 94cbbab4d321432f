// The process-wide stop flag (see stop_signal.h). A lock-free atomic, the only kind of state a
// signal handler may touch.
#include "core/base/stop_signal.h"

#include <atomic>
#include <csignal>

namespace diffusion {
namespace {

std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_stop_signal(int) { g_stop_requested.store(true); }

}  // namespace

void install_stop_signal_handlers() {
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
}

void request_stop() { g_stop_requested.store(true); }
bool stop_requested() { return g_stop_requested.load(); }
void clear_stop_request() { g_stop_requested.store(false); }

}  // namespace diffusion
