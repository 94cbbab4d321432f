// The process-wide stop flag (see stop_signal.h). A lock-free atomic, the only kind of state a
// signal handler may touch.
#include "core/base/stop_signal.h"

#include <atomic>
#include <csignal>

namespace diffusion {
namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<int> g_stop_signal{0};  // the last signal that asked to stop, for the log
static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int signal) {
  g_stop_signal.store(signal);
  g_stop_requested.store(true);
}

}  // namespace

void install_stop_signal_handlers() {
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
}

void request_stop() { g_stop_requested.store(true); }
bool stop_requested() { return g_stop_requested.load(); }
void clear_stop_request() {
  g_stop_requested.store(false);
  g_stop_signal.store(0);
}
const char* stop_signal_name() {
  switch (g_stop_signal.load()) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return nullptr;
  }
}

}  // namespace diffusion
