// Command line and INI parsing for diffusion-distill (the only distiller file that knows Boost).
#pragma once

#include <optional>

#include "distiller/distill_config.h"

namespace diffusion {

// `--config FILE.ini` ([distill] plus the trainer's [data], [optimiser], [checkpoint],
// [logging] sections) and command-line overrides. Returns nullopt after printing --help.
// Throws diffusion::Error naming the key for an unknown key or a malformed value.
std::optional<DistillConfig> parse_distill_options(int argc, char** argv);

}  // namespace diffusion
