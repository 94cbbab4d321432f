// diffusion-data: imports datasets into the HDF5 format, makes toy sets and inspects files.
// Thin: parse the command line, run one subcommand, report errors in one format.
#include <cstdio>
#include <exception>

#include "core/base/error.h"
#include "core/base/h5.h"
#include "datasets/data_options.h"
#include "datasets/inspect.h"

namespace {

int run(const diffusion::DataOptions& options) {
  using diffusion::DataCommand;
  switch (options.command) {
    case DataCommand::kHelp:
      std::fputs(options.help_text.c_str(), stdout);
      return 0;
    case DataCommand::kImportIdx:
      diffusion::import_idx(options.idx);
      return 0;
    case DataCommand::kImportCifar10:
      diffusion::import_cifar10(options.cifar);
      return 0;
    case DataCommand::kImportImages:
      diffusion::import_images(options.images);
      return 0;
    case DataCommand::kMakeToy:
      diffusion::write_toy(options.toy);
      return 0;
    case DataCommand::kInspect: {
      const auto report = diffusion::inspect_dataset(options.inspect_path);
      std::fputs(diffusion::format_report(report).c_str(), stdout);
      // Non-zero when the trainer could not read it, so scripts can gate on the verdict.
      return report.readable ? 0 : 1;
    }
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    diffusion::h5_silence_errors();
    return run(diffusion::parse_data_options(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "diffusion-data: error: %s\n", e.what());
    return 1;
  }
}
