// Command line and INI parsing for diffusion-train (the only trainer file that knows Boost).
#pragma once

#include <optional>
#include <string>

#include "core/options/option_values.h"
#include "trainer/train_config.h"

namespace diffusion {

// Parses `--config FILE.ini` (sections mirror the option groups) and command-line overrides
// into a TrainConfig. Returns nullopt after printing --help. Throws diffusion::Error for an
// unknown key, a malformed value or a key in the wrong INI section.
std::optional<TrainConfig> parse_train_options(int argc, char** argv);

// The trainer's option table (group, key, default, help), for programs that pass trainer
// options through (the distiller's students).
const std::vector<OptionSpec>& train_option_specs();

// Reads back the resolved config a run saved (RUN/config.ini, a checkpoint manifest's
// config_text), including its [derived] data shape, so the model can be rebuilt exactly.
// `source` names the file in errors.
// The value of an EMA choice option (--ema, --teacher-ema): "" for auto, else the value after
// checking it is a rate in (0, 1), sigma-rel-S with S in (0, 0.28), or none; throws naming `key`.
std::string ema_choice_option(const std::string& key, const std::string& value);

TrainConfig parse_resolved_config(const std::string& text, const std::string& source);

}  // namespace diffusion
