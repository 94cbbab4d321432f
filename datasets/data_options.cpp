// Boost.Program_options tables of the diffusion-data subcommands, defaults shown in --help.
#include "datasets/data_options.h"

#include <fmt/core.h>

#include <boost/program_options.hpp>
#include <sstream>
#include <vector>

#include "core/base/error.h"

namespace diffusion {
namespace {

namespace po = boost::program_options;

constexpr const char* kUsage =
    "usage: diffusion-data <subcommand> [options]\n"
    "\n"
    "subcommands:\n"
    "  import-idx      MNIST-format IDX images + labels (gzipped or not) -> HDF5\n"
    "  import-cifar10  CIFAR-10 binary batches -> HDF5\n"
    "  import-images   a folder of PNG/JPEG files (labels from sub-folders) -> HDF5\n"
    "  make-toy        2-D toy sets: gmm-ring, moons, swiss-roll\n"
    "  inspect         shape, dtype, labels, value range and a trainer-readability verdict\n"
    "\n"
    "Run 'diffusion-data <subcommand> --help' for its options. Outputs are written under a\n"
    "temporary name and renamed at the end; an existing output is never overwritten.\n";

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  std::string current;
  for (char c : text) {
    if (c == ',') {
      names.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  names.push_back(current);
  for (const auto& name : names)
    if (name.empty())
      throw Error(fmt::format("--class-names '{}': expected a comma-separated list of non-empty "
                              "names",
                              text));
  return names;
}

std::string help_of(const std::string& usage, const po::options_description& desc) {
  std::ostringstream text;
  text << usage << "\n\n" << desc;
  return text.str();
}

}  // namespace

DataOptions parse_data_options(int argc, const char* const* argv) {
  DataOptions options;
  if (argc < 2) throw Error(fmt::format("missing subcommand\n{}", kUsage));
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    options.help_text = kUsage;
    return options;
  }

  po::options_description desc;
  po::positional_options_description positional;
  std::string usage;
  std::string kind_text = "gmm-ring";
  std::string split_text = "train";
  std::string class_names_text;
  int64_t seed = 0;

  if (command == "import-idx") {
    usage = "usage: diffusion-data import-idx --images F --labels F --out OUT.h5";
    desc.add_options()
        ("images", po::value(&options.idx.images_path)->required(),
         "IDX image file [N, rows, cols], uint8, gzipped or not")
        ("labels", po::value(&options.idx.labels_path)->required(),
         "IDX label file [N], uint8, gzipped or not")
        ("out", po::value(&options.idx.out_path)->required(), "output HDF5 file (must not exist)")
        ("class-names", po::value(&class_names_text),
         "comma-separated class names (default: the Fashion-MNIST names when the labels path "
         "contains \"fashion\", else 0..9)");
    options.command = DataCommand::kImportIdx;
  } else if (command == "import-cifar10") {
    usage = "usage: diffusion-data import-cifar10 --dir D --out OUT.h5";
    desc.add_options()
        ("dir", po::value(&options.cifar.dir)->required(),
         "folder with data_batch_1..5.bin, test_batch.bin, batches.meta.txt")
        ("out", po::value(&options.cifar.out_path)->required(), "output HDF5 file (must not exist)")
        ("split", po::value(&split_text)->default_value("train"),
         "train (data_batch_1..5), test (test_batch) or all");
    options.command = DataCommand::kImportCifar10;
  } else if (command == "import-images") {
    usage = "usage: diffusion-data import-images --dir D --size S --out OUT.h5";
    desc.add_options()
        ("dir", po::value(&options.images.dir)->required(),
         "folder of PNG/JPEG files; sub-folder names become the classes")
        ("size", po::value(&options.images.size)->default_value(64),
         "side S: images are centre-cropped to a square and resized to SxS RGB")
        ("out", po::value(&options.images.out_path)->required(), "output HDF5 file (must not exist)");
    options.command = DataCommand::kImportImages;
  } else if (command == "make-toy") {
    usage = "usage: diffusion-data make-toy --kind gmm-ring|moons|swiss-roll --num N --seed S "
            "--out OUT.h5";
    const ToyOptions defaults;
    desc.add_options()
        ("kind", po::value(&kind_text)->default_value("gmm-ring"), "gmm-ring, moons or swiss-roll")
        ("num", po::value(&options.toy.num)->default_value(defaults.num), "number of points N")
        ("seed", po::value(&seed)->default_value(0), "seed; the same seed gives the same file")
        ("out", po::value(&options.toy.out_path)->required(), "output HDF5 file (must not exist)")
        ("modes", po::value(&options.toy.modes)->default_value(defaults.modes),
         "gmm-ring: number of equal-weight Gaussians")
        ("radius", po::value(&options.toy.radius)->default_value(defaults.radius, "2"),
         "gmm-ring: radius of the circle of means")
        ("std", po::value(&options.toy.std)->default_value(defaults.std, "0.15"),
         "gmm-ring: standard deviation of each Gaussian")
        ("noise", po::value(&options.toy.noise)->default_value(defaults.noise, "0.05"),
         "moons, swiss-roll: std of the added Gaussian noise");
    options.command = DataCommand::kMakeToy;
  } else if (command == "inspect") {
    usage = "usage: diffusion-data inspect FILE.h5";
    desc.add_options()("file", po::value(&options.inspect_path)->required(), "dataset file");
    positional.add("file", 1);
    if (argc < 3) throw Error(fmt::format("inspect: expected a dataset file\n{}", usage));
    options.command = DataCommand::kInspect;
  } else {
    throw Error(fmt::format("unknown subcommand '{}'\n{}", command, kUsage));
  }
  desc.add_options()("help,h", "show this help");

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc - 1, argv + 1)
                  .options(desc)
                  .positional(positional)
                  .run(),
              vm);
    if (vm.count("help")) {
      options.command = DataCommand::kHelp;
      options.help_text = help_of(usage, desc);
      return options;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error(fmt::format("{}: {}\n{}", command, e.what(), help_of(usage, desc)));
  }

  if (!class_names_text.empty()) options.idx.class_names = split_names(class_names_text);
  if (options.command == DataCommand::kImportCifar10)
    options.cifar.split = parse_cifar_split(split_text);
  if (options.command == DataCommand::kMakeToy) {
    options.toy.kind = parse_toy_kind(kind_text);
    if (seed < 0) throw Error(fmt::format("--seed {}: expected a value >= 0", seed));
    options.toy.seed = static_cast<uint64_t>(seed);
  }
  return options;
}

}  // namespace diffusion
