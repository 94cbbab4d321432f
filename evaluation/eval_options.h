// Command-line parsing for diffusion-eval (the only evaluation file that knows Boost).
#pragma once

#include <optional>

#include "evaluation/eval_config.h"

namespace diffusion {

// Returns nullopt after printing --help. Throws diffusion::Error naming the option for a
// missing, malformed or out-of-range value.
std::optional<EvalConfig> parse_eval_options(int argc, char** argv);

}  // namespace diffusion
