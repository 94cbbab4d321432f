// The stop request: SIGTERM and SIGUSR1 (Slurm's warning before a time limit, a user's
// request) set one process-wide flag that the training loop and the sampler read at step
// boundaries, where they checkpoint and leave. Marian's signal_handling.h in miniature.
#pragma once

namespace diffusion {

// Routes SIGTERM and SIGUSR1 to request_stop(); main calls it once, after parsing options.
void install_stop_signal_handlers();

void request_stop();      // what the handlers do; exposed for tests
bool stop_requested();
void clear_stop_request();  // handled: a later run in this process starts afresh
// "SIGUSR1" or "SIGTERM" when a signal (not request_stop()) asked to stop, else nullptr.
const char* stop_signal_name();

}  // namespace diffusion
