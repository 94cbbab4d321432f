// Boost.Program_options for diffusion-train: one options_description per group with its
// defaults shown in --help, INI sections mirroring the groups, command line over INI.
// Every value is read as text and converted here, so a bad value names its key.
#include "trainer/train_options.h"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/option_values.h"

namespace diffusion {
namespace po = boost::program_options;
namespace {

// One declaration per option (llama.cpp's arg table): group, name, default, help.
const OptionSpec kOptions[] = {
    {"data", "data", "", "training set (HDF5, docs/formats.md)"},
    {"data", "random-flip", "false", "random horizontal flips (images)"},
    {"data", "memory-limit-mb", "1024", "load the data set into memory when it fits under this"},
    {"model", "model", "unet", "network: unet | mlp"},
    {"model", "in-channels", "0", "image channels; 0 = from the data"},
    {"model", "base-channels", "128", "unet: channels of the first level"},
    {"model", "channel-mult", "1,2,2,2", "unet: channel multiplier per level"},
    {"model", "num-res-blocks", "2", "unet: residual blocks per level"},
    {"model", "attention-resolutions", "16", "unet: self-attention at these sizes (for image-size)"},
    {"model", "image-size", "32", "unet: input size the attention resolutions refer to"},
    {"model", "num-heads", "1", "unet: attention heads"},
    {"model", "num-groups", "32", "unet: GroupNorm groups"},
    {"model", "dropout", "0.1", "dropout probability"},
    {"model", "mlp-hidden", "256", "mlp: hidden width"},
    {"model", "mlp-blocks", "4", "mlp: residual blocks"},
    {"model", "mlp-time-dim", "128", "mlp: timestep embedding size"},
    {"diffusion", "timesteps", "1000", "T, the number of diffusion steps"},
    {"diffusion", "schedule", "linear", "beta schedule: linear | cosine"},
    {"diffusion", "beta-start", "auto", "linear schedule: first beta (auto: 1e-4*1000/T)"},
    {"diffusion", "beta-end", "auto", "linear schedule: last beta (auto: 0.02*1000/T)"},
    {"diffusion", "prediction", "eps", "network target: eps | x0 | v"},
    {"diffusion", "learned-variance", "false", "learn the variance (L_hybrid)"},
    {"diffusion", "vlb-weight", "0.001", "lambda of L_hybrid = L_simple + lambda*L_vlb (L_vlb sums T terms)"},
    {"diffusion", "class-cond", "false", "class-conditional (needs labels)"},
    {"diffusion", "p-uncond", "0.1", "probability of dropping the label (guidance)"},
    {"optimiser", "steps", "1000", "total optimiser steps"},
    {"optimiser", "batch-size", "64", "global batch size over all ranks"},
    {"optimiser", "micro-batch", "0", "per-rank micro-batch (gradient accumulation); 0 = off"},
    {"optimiser", "lr", "2e-4", "AdamW learning rate"},
    {"optimiser", "warmup", "0", "linear learning-rate warmup steps"},
    {"optimiser", "weight-decay", "0", "AdamW weight decay"},
    {"optimiser", "grad-clip", "1", "clip the global gradient norm to this; 0 = off"},
    {"optimiser", "ema-rates", "0.9999", "EMA decay rates, comma-separated"},
    {"optimiser", "max-nonfinite", "10", "stop after this many non-finite steps in a row"},
    {"optimiser", "seed", "0", "seed of every random draw of the run"},
    {"optimiser", "bucket-mb", "25", "gradient all-reduce bucket size (MB)"},
    {"optimiser", "threads", "0", "intra-op threads per rank; 0 = default"},
    {"checkpoint", "out", "", "run folder (config, metrics, checkpoints)"},
    {"checkpoint", "checkpoint-every", "1000", "save every K steps (and at the end)"},
    {"checkpoint", "keep-checkpoints", "3", "complete checkpoints kept"},
    {"logging", "log-every", "50", "progress line and metrics record every K steps"},
};

const char* const kGroups[] = {"data", "model", "diffusion", "optimiser", "checkpoint", "logging"};

}  // namespace

namespace {

// INI text (sections mirror the groups, "section.key" in Boost's terms) stored into `vm` under
// the flat command-line names; unknown keys and keys in another group's section are refused.
// Sections in `ignored` (e.g. the trainer's own [derived]) are skipped.
void store_ini(std::istream& in, const std::string& source, po::variables_map& vm,
               const std::set<std::string>& ignored = {}) {
  std::map<std::string, std::string> group_of;
  po::options_description ini_options, flat;
  for (const auto& o : kOptions) {
    group_of[o.key] = o.group;
    ini_options.add_options()(fmt::format("{}.{}", o.group, o.key).c_str(), po::value<std::string>());
    flat.add_options()(o.key, po::value<std::string>());
  }
  po::parsed_options parsed(&ini_options);
  try {
    parsed = po::parse_config_file(in, ini_options, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    throw Error(fmt::format("{}: {}", source, e.what()));
  }
  std::vector<po::option> kept;
  for (auto opt : parsed.options) {
    const auto dot = opt.string_key.find('.');
    const std::string section = dot == std::string::npos ? "" : opt.string_key.substr(0, dot);
    const std::string key = dot == std::string::npos ? opt.string_key : opt.string_key.substr(dot + 1);
    if (ignored.count(section)) continue;
    const auto it = group_of.find(key);
    if (it == group_of.end())
      throw Error(fmt::format("{}: unknown key '{}' in section [{}]", source, key, section));
    if (it->second != section)
      throw Error(fmt::format("{}: key '{}' belongs in section [{}], found in [{}]", source, key,
                              it->second, section));
    opt.string_key = key;
    opt.unregistered = false;
    kept.push_back(opt);
  }
  parsed.options = kept;
  parsed.description = &flat;
  try {
    po::store(parsed, vm);  // values already in vm (the command line) win
  } catch (const po::error& e) {
    throw Error(fmt::format("{}: {}", source, e.what()));
  }
}

po::options_description defaults_only() {
  po::options_description d;
  for (const auto& o : kOptions) d.add_options()(o.key, po::value<std::string>()->default_value(o.default_value));
  return d;
}

TrainConfig config_from_vm(const po::variables_map& vm) {
  TrainConfig config;
  const auto s = [&](const char* key) { return vm[key].as<std::string>(); };
  std::string resolved;
  for (const char* g : kGroups) {
    resolved += fmt::format("[{}]\n", g);
    for (const auto& o : kOptions)
      if (std::string(o.group) == g) resolved += fmt::format("{} = {}\n", o.key, s(o.key));
    resolved += "\n";
  }
  config.resolved_text = resolved;

  config.data.path = s("data");
  config.data.random_flip = option_bool("random-flip", s("random-flip"));
  config.data.memory_limit_mb = option_int("memory-limit-mb", s("memory-limit-mb"));

  auto& m = config.model;
  m.kind = s("model");
  auto& u = m.unet;
  u.in_channels = option_int("in-channels", s("in-channels"));
  u.base_channels = option_int("base-channels", s("base-channels"));
  u.channel_mult = option_int_list("channel-mult", s("channel-mult"));
  u.num_res_blocks = option_int("num-res-blocks", s("num-res-blocks"));
  u.attention_resolutions = s("attention-resolutions") == "none"
                                ? std::vector<int64_t>{}
                                : option_int_list("attention-resolutions", s("attention-resolutions"));
  u.image_size = option_int("image-size", s("image-size"));
  u.num_heads = option_int("num-heads", s("num-heads"));
  u.num_groups = option_int("num-groups", s("num-groups"));
  u.dropout = option_double("dropout", s("dropout"));
  m.mlp.hidden = option_int("mlp-hidden", s("mlp-hidden"));
  m.mlp.num_blocks = option_int("mlp-blocks", s("mlp-blocks"));
  m.mlp.time_embed_dim = option_int("mlp-time-dim", s("mlp-time-dim"));
  m.mlp.dropout = u.dropout;

  auto& d = config.diffusion;
  d.schedule.timesteps = option_int("timesteps", s("timesteps"));
  d.schedule.kind = parse_schedule_kind(s("schedule"));
  if (s("beta-start") != "auto") d.schedule.beta_start = option_double("beta-start", s("beta-start"));
  if (s("beta-end") != "auto") d.schedule.beta_end = option_double("beta-end", s("beta-end"));
  d.prediction = parse_prediction(s("prediction"));
  d.learned_variance = option_bool("learned-variance", s("learned-variance"));
  d.vlb_weight = option_double("vlb-weight", s("vlb-weight"));
  d.class_conditional = option_bool("class-cond", s("class-cond"));
  d.p_uncond = option_double("p-uncond", s("p-uncond"));
  u.learned_variance = m.mlp.learned_variance = d.learned_variance;

  auto& o = config.optim;
  o.steps = option_int("steps", s("steps"));
  o.batch_size = option_int("batch-size", s("batch-size"));
  o.micro_batch = option_int("micro-batch", s("micro-batch"));
  o.lr = option_double("lr", s("lr"));
  o.warmup = option_int("warmup", s("warmup"));
  o.weight_decay = option_double("weight-decay", s("weight-decay"));
  o.grad_clip = option_double("grad-clip", s("grad-clip"));
  o.ema_rates = option_double_list("ema-rates", s("ema-rates"));
  o.max_nonfinite = option_int("max-nonfinite", s("max-nonfinite"));
  o.seed = static_cast<uint64_t>(option_int("seed", s("seed")));
  o.bucket_mb = option_int("bucket-mb", s("bucket-mb"));
  o.threads = static_cast<int>(option_int("threads", s("threads")));

  config.checkpoint.out = s("out");
  config.checkpoint.checkpoint_every = option_int("checkpoint-every", s("checkpoint-every"));
  config.checkpoint.keep = static_cast<int>(option_int("keep-checkpoints", s("keep-checkpoints")));
  config.logging.log_every = option_int("log-every", s("log-every"));
  return config;
}

}  // namespace

std::optional<TrainConfig> parse_train_options(int argc, char** argv) {
  po::options_description general("general");
  general.add_options()("help,h", "show this help")(
      "config", po::value<std::string>(), "INI file; its [sections] mirror the groups below");
  std::map<std::string, po::options_description> groups;
  for (const char* g : kGroups) groups.emplace(g, po::options_description(g));
  for (const auto& o : kOptions)
    groups.at(o.group).add_options()(o.key, po::value<std::string>()->default_value(o.default_value), o.help);
  po::options_description all("diffusion-train [--config FILE.ini] [--key value ...]");
  all.add(general);
  for (const char* g : kGroups) all.add(groups.at(g));

  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, all), vm);
  } catch (const po::error& e) {
    throw Error(fmt::format("command line: {}", e.what()));
  }
  if (vm.count("help")) {
    std::cout << all << "\n";
    return std::nullopt;
  }
  std::string config_file;
  if (vm.count("config")) {
    config_file = vm["config"].as<std::string>();
    std::ifstream in(config_file);
    if (!in) throw Error(fmt::format("{}: cannot open the config file", config_file));
    store_ini(in, config_file, vm);
  }
  po::notify(vm);
  auto config = config_from_vm(vm);
  config.config_file = config_file;
  return config;
}

TrainConfig parse_resolved_config(const std::string& text, const std::string& source) {
  po::variables_map vm;
  // Defaults first (as "defaulted" values, which the file's values replace).
  const auto defaults = defaults_only();
  const char* no_args[] = {"resolved"};
  po::store(po::parse_command_line(1, no_args, defaults), vm);
  std::istringstream in(text);
  store_ini(in, source, vm, {"derived"});
  po::notify(vm);
  auto config = config_from_vm(vm);
  // What the trainer derived from its data, needed to rebuild the model.
  std::istringstream lines(text);
  bool in_derived = false;
  std::vector<int64_t> shape;
  int64_t num_classes = 0;
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] == '[') in_derived = line == "[derived]";
    const auto eq = line.find(" = ");
    if (!in_derived || eq == std::string::npos) continue;
    const auto key = line.substr(0, eq), value = line.substr(eq + 3);
    if (key == "sample-shape") shape = option_int_list("sample-shape", value);
    if (key == "num-classes") num_classes = option_int("num-classes", value);
  }
  if (shape.empty()) throw Error(fmt::format("{}: no [derived] sample-shape: not a config written by diffusion-train", source));
  apply_data_shape(config, shape, num_classes);
  config.resolved_text = text;
  return config;
}

}  // namespace diffusion
