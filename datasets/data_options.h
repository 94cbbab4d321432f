// Command line of diffusion-data: one subcommand and its plain config struct. Only
// data_options.cpp knows Boost.Program_options; the importers never see argv.
#pragma once

#include <string>

#include "datasets/cifar_import.h"
#include "datasets/idx_import.h"
#include "datasets/image_import.h"
#include "datasets/toy_sets.h"

namespace diffusion {

enum class DataCommand { kHelp, kImportIdx, kImportCifar10, kImportImages, kMakeToy, kInspect };

struct DataOptions {
  DataCommand command = DataCommand::kHelp;
  std::string help_text;  // printed for kHelp
  IdxImportOptions idx;
  CifarImportOptions cifar;
  ImageImportOptions images;
  ToyOptions toy;
  std::string inspect_path;
};

// Parses `diffusion-data <subcommand> [options]`. `--help` (alone or after a subcommand) gives
// kHelp with the matching text; a usage error throws diffusion::Error naming the option.
DataOptions parse_data_options(int argc, const char* const* argv);

}  // namespace diffusion
