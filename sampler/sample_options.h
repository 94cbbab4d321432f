// Command-line parsing for diffusion-sample (the only sampler file that knows Boost).
#pragma once

#include <optional>

#include "sampler/sample_config.h"

namespace diffusion {

// Returns nullopt after printing --help. Throws diffusion::Error naming the option for a
// missing, malformed or out-of-range value (checks that need the model are in generation.cpp).
std::optional<SampleConfig> parse_sample_options(int argc, char** argv);

}  // namespace diffusion
