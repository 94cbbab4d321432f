// The option table of diffusion-eval (core/options/ini_options does the Boost side): defaults shown in
// --help. Every value is read as text and converted here, so a bad value names its key.
#include "evaluation/eval_options.h"

#include <fmt/format.h>

#include <iterator>

#include "core/base/error.h"
#include "core/options/ini_options.h"
#include "core/options/option_values.h"

namespace diffusion {
namespace {

// One declaration per option: group, name, default, help.
const OptionSpec kOptions[] = {
    {"input", "samples", "", "samples file (diffusion-sample's samples.h5 or any dataset file)"},
    {"input", "reference", "", "reference dataset file (labelled, for the classifier)"},
    {"input", "max-reference", "20000", "reference rows in the distance (seeded subset); 0 = all"},
    {"input", "max-samples", "0", "sample rows evaluated (the first ones); 0 = all"},
    {"output", "json", "", "also write every number to this JSON file"},
    {"features", "features", "", "TorchScript feature network for the distance: forward(x [B,C,H,W] in [-1,1]) -> [B,F]"},
    {"classifier", "classifier-cache", "", "classifier file; default: next to the reference, R.h5 -> R.classifier.pt"},
    {"classifier", "retrain", "false", "train the classifier even when a valid cached one exists"},
    {"classifier", "classifier-seed", "0", "seed of the classifier's weights, split and batch order"},
    {"classifier", "classifier-train-rows", "20000", "at most this many reference rows train the classifier"},
    {"classifier", "classifier-epochs", "3", "epochs over those rows"},
    {"classifier", "classifier-heldout", "0.1", "fraction of the reference held out to test the classifier (at most 10000 rows)"},
    {"mixture", "gmm-modes", "auto", "2-D data without gmm_* attributes: M equal modes on a ring (as make-toy)"},
    {"mixture", "gmm-radius", "2", "radius of that ring"},
    {"mixture", "gmm-std", "auto", "std of each mode of that ring (required with --gmm-modes)"},
    {"mixture", "coverage-radius", "3", "a sample counts for its nearest mode within this many stds"},
    {"mixture", "coverage-share", "0.1", "a mode is covered when it gets at least this share of its expected count"},
    {"runtime", "batch-size", "256", "rows per forward pass (does not change results)"},
    {"runtime", "threads", "0", "intra-op threads; 0 = LibTorch's default"},
};

}  // namespace

std::optional<EvalConfig> parse_eval_options(int argc, char** argv) {
  static const OptionTable table{"diffusion-eval",
                                 "diffusion-eval --samples S.h5 --reference R.h5 [--json OUT.json] [options]",
                                 {"input", "output", "features", "classifier", "mixture", "runtime"},
                                 {std::begin(kOptions), std::end(kOptions)},
                                 /*config_file=*/false};
  const auto values = parse_option_table(argc, argv, table);
  if (!values) return std::nullopt;
  const auto s = [&](const char* key) { return values->at(key); };
  const auto non_negative = [&](const char* key) {
    const int64_t v = option_int(key, s(key));
    if (v < 0) throw Error(fmt::format("option --{}: {} must be >= 0", key, v));
    return v;
  };
  const auto positive = [&](const char* key) {
    const int64_t v = option_int(key, s(key));
    if (v <= 0) throw Error(fmt::format("option --{}: {} must be positive", key, v));
    return v;
  };

  EvalConfig c;
  c.samples = s("samples");
  if (c.samples.empty()) throw Error("option --samples is required (the samples file)");
  c.reference = s("reference");
  if (c.reference.empty()) throw Error("option --reference is required (the reference dataset file)");
  c.max_reference_rows = non_negative("max-reference");
  c.max_sample_rows = non_negative("max-samples");
  c.json_out = s("json");
  c.features = s("features");
  c.classifier_cache = s("classifier-cache");
  c.retrain = option_bool("retrain", s("retrain"));
  c.classifier.seed = static_cast<uint64_t>(non_negative("classifier-seed"));
  c.classifier.train_rows = positive("classifier-train-rows");
  c.classifier.epochs = positive("classifier-epochs");
  c.classifier.heldout_fraction = option_double("classifier-heldout", s("classifier-heldout"));
  if (!(c.classifier.heldout_fraction > 0 && c.classifier.heldout_fraction < 1))
    bad_option_value("classifier-heldout", s("classifier-heldout"), "a fraction in (0, 1)");
  if (s("gmm-modes") != "auto") c.gmm_modes = positive("gmm-modes");
  c.gmm_radius = option_double("gmm-radius", s("gmm-radius"));
  if (s("gmm-std") != "auto") {
    c.gmm_std = option_double("gmm-std", s("gmm-std"));
    if (!(*c.gmm_std > 0)) bad_option_value("gmm-std", s("gmm-std"), "a value > 0");
  }
  if (c.gmm_modes.has_value() != c.gmm_std.has_value())
    throw Error("options --gmm-modes and --gmm-std go together (a ring of M modes of one std)");
  c.coverage_radius = option_double("coverage-radius", s("coverage-radius"));
  if (!(c.coverage_radius > 0)) bad_option_value("coverage-radius", s("coverage-radius"), "a value > 0");
  c.coverage_share = option_double("coverage-share", s("coverage-share"));
  if (!(c.coverage_share >= 0)) bad_option_value("coverage-share", s("coverage-share"), "a value >= 0");
  c.batch_size = positive("batch-size");
  c.threads = static_cast<int>(non_negative("threads"));
  return c;
}

}  // namespace diffusion
