// Command line and INI parsing for diffusion-train (the only trainer file that knows Boost).
#pragma once

#include <optional>

#include "trainer/train_config.h"

namespace diffusion {

// Parses `--config FILE.ini` (sections mirror the option groups) and command-line overrides
// into a TrainConfig. Returns nullopt after printing --help. Throws diffusion::Error for an
// unknown key, a malformed value or a key in the wrong INI section.
std::optional<TrainConfig> parse_train_options(int argc, char** argv);

}  // namespace diffusion
