// The option table of diffusion-train (INI sections mirror its groups, command line over INI;
// core/options/ini_options does the Boost side). Every value is read as text and converted here, so a
// bad value names its key.
#include "trainer/train_options.h"

#include "trainer/ema.h"

#include <fmt/format.h>

#include <iterator>
#include <sstream>

#include "core/base/error.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/device.h"
#include "core/options/ini_options.h"
#include "core/options/option_values.h"

namespace diffusion {
namespace {

// One declaration per option (llama.cpp's arg table): group, name, default, help.
const OptionSpec kOptions[] = {
    {"data", "data", "", "training set (HDF5, docs/formats.md)"},
    {"data", "random-flip", "false", "random horizontal flips (images); not for classes that face one way (diffusion-data inspect)"},
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
    {"diffusion", "min-snr-gamma", "0", "min-SNR-gamma loss weighting (Hang et al. 2023, gamma 5); 0 = off"},
    {"diffusion", "class-cond", "false", "class-conditional (needs labels)"},
    {"diffusion", "p-uncond", "0.1", "probability of dropping the label (guidance)"},
    // Classifier guidance (docs/sampling.md, "Classifier guidance").
    {"diffusion", "objective", "denoise", "what is trained: denoise | classifier (a noisy-sample classifier for "
     "diffusion-sample --classifier) | consistency (consistency training, docs/sampling.md)"},
    // Consistency training (--objective consistency): improved CT's settings.
    {"consistency", "initial-points", "10", "consistency: grid points at the start (s0 of the N-doubling curriculum)"},
    {"consistency", "final-points", "1280", "consistency: grid points at the end (s1; at most T distinct)"},
    {"consistency", "p-mean", "-1.1", "consistency: mean of the lognormal sigma proposal"},
    {"consistency", "p-std", "2", "consistency: std of the lognormal sigma proposal"},
    {"consistency", "huber-c", "0", "consistency: pseudo-Huber c; 0 = 0.00054*sqrt(d)"},
    {"optimiser", "steps", "1000", "total optimiser steps"},
    {"optimiser", "batch-size", "64", "global batch size over all ranks"},
    {"optimiser", "micro-batch", "0", "per-rank micro-batch (gradient accumulation); 0 = off"},
    {"optimiser", "lr", "2e-4", "AdamW learning rate"},
    {"optimiser", "warmup", "0", "linear learning-rate warmup steps"},
    {"optimiser", "lr-decay", "constant", "learning rate after the warmup: constant | cosine (from lr down to "
     "lr-min at the end of --steps)"},
    {"optimiser", "lr-min", "0", "cosine lr-decay: the final learning rate"},
    {"optimiser", "weight-decay", "0", "AdamW weight decay"},
    {"optimiser", "grad-clip", "1", "clip the global gradient norm to this; 0 = off"},
    {"optimiser", "ema-rates", "0.9999", "EMA decay rates, comma-separated, or none"},
    {"optimiser", "ema-sigma-rels", "none", "power-function EMAs (EDM2) by relative width sigma_rel in (0, 0.28), "
     "comma-separated (e.g. 0.05,0.1), or none"},
    {"optimiser", "max-nonfinite", "10", "stop after this many non-finite steps in a row"},
    {"optimiser", "seed", "0", "seed of every random draw of the run"},
    {"optimiser", "bucket-mb", "25", "gradient all-reduce bucket size (MB)"},
    {"optimiser", "threads", "0", "intra-op threads per rank; 0 = default"},
    {"checkpoint", "out", "", "run folder (config, metrics, checkpoints)"},
    {"checkpoint", "checkpoint-every", "1000", "save every K steps (and at the end)"},
    {"checkpoint", "keep-checkpoints", "3", "complete checkpoints kept"},
    {"checkpoint", "ema-snapshot-every", "0", "write the power EMAs to RUN/ema-snapshots every K steps (all kept) "
     "for post-hoc EMA (--ema sigma-rel-S when sampling); 0 = none"},
    {"logging", "log-every", "50", "progress line and metrics record every K steps"},
    {"runtime", "device", "auto", "auto | cpu | cuda (auto: CUDA when every rank sees a GPU)"},
    {"runtime", "share-gpus", "false", "allow more ranks on a node than GPUs (they share; for sampling: NCCL needs a GPU per rank)"},
    {"runtime", "precision", "fp32", "fp32 | bf16 (autocast for the network; weights, optimiser, EMA in fp32)"},
    {"runtime", "channels-last", "false", "images: channels-last memory format for the network"},
    {"runtime", "collective-timeout", "300", "seconds a rank may wait in a collective before the job ends naming "
     "the stuck rank (docs/launch.md); 0 = off"},
};

const OptionTable& train_table() {
  static const OptionTable table{"diffusion-train", "diffusion-train [--config FILE.ini] [--key value ...]",
                                 {"data", "model", "diffusion", "consistency", "optimiser", "checkpoint", "logging", "runtime"},
                                 {std::begin(kOptions), std::end(kOptions)}};
  return table;
}

LrDecay lr_decay_option(const std::string& value) {
  if (value == "constant") return LrDecay::kConstant;
  if (value == "cosine") return LrDecay::kCosine;
  throw Error(fmt::format("option --lr-decay: '{}' is not constant or cosine", value));
}

TrainConfig config_from_values(const OptionValues& values) {
  TrainConfig config;
  const auto s = [&](const char* key) { return values.at(key); };
  std::string resolved;
  for (const auto& g : train_table().groups) {
    resolved += fmt::format("[{}]\n", g);
    for (const auto& o : kOptions)
      if (o.group == g) resolved += fmt::format("{} = {}\n", o.key, s(o.key));
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
  d.min_snr_gamma = option_double("min-snr-gamma", s("min-snr-gamma"));
  d.class_conditional = option_bool("class-cond", s("class-cond"));
  d.p_uncond = option_double("p-uncond", s("p-uncond"));
  d.objective = s("objective");  // checked by validate_train_config
  u.learned_variance = m.mlp.learned_variance = d.learned_variance;

  auto& k = config.consistency;
  k.initial_points = option_int("initial-points", s("initial-points"));
  k.final_points = option_int("final-points", s("final-points"));
  k.p_mean = option_double("p-mean", s("p-mean"));
  k.p_std = option_double("p-std", s("p-std"));
  k.huber_c = option_double("huber-c", s("huber-c"));

  auto& o = config.optim;
  o.steps = option_int("steps", s("steps"));
  o.batch_size = option_int("batch-size", s("batch-size"));
  o.micro_batch = option_int("micro-batch", s("micro-batch"));
  o.lr = option_double("lr", s("lr"));
  o.warmup = option_int("warmup", s("warmup"));
  o.lr_decay = lr_decay_option(s("lr-decay"));
  o.lr_min = option_double("lr-min", s("lr-min"));
  o.weight_decay = option_double("weight-decay", s("weight-decay"));
  o.grad_clip = option_double("grad-clip", s("grad-clip"));
  o.ema_rates = s("ema-rates") == "none" ? std::vector<double>{} : option_double_list("ema-rates", s("ema-rates"));
  o.ema_sigma_rels = s("ema-sigma-rels") == "none" ? std::vector<double>{}
                                                  : option_double_list("ema-sigma-rels", s("ema-sigma-rels"));
  o.max_nonfinite = option_int("max-nonfinite", s("max-nonfinite"));
  o.seed = static_cast<uint64_t>(option_int("seed", s("seed")));
  o.bucket_mb = option_int("bucket-mb", s("bucket-mb"));
  o.threads = static_cast<int>(option_int("threads", s("threads")));

  config.checkpoint.out = s("out");
  config.checkpoint.checkpoint_every = option_int("checkpoint-every", s("checkpoint-every"));
  config.checkpoint.keep = static_cast<int>(option_int("keep-checkpoints", s("keep-checkpoints")));
  config.checkpoint.ema_snapshot_every = option_int("ema-snapshot-every", s("ema-snapshot-every"));
  config.logging.log_every = option_int("log-every", s("log-every"));

  auto& r = config.runtime;
  r.device = s("device");
  parse_device_kind(r.device);  // a bad value fails here, naming the option
  r.share_gpus = option_bool("share-gpus", s("share-gpus"));
  r.precision = parse_precision(s("precision"));
  r.channels_last = option_bool("channels-last", s("channels-last"));
  r.collective_timeout_s = collective_timeout_option(s("collective-timeout"));
  return config;
}

}  // namespace

const std::vector<OptionSpec>& train_option_specs() { return train_table().specs; }

std::optional<TrainConfig> parse_train_options(int argc, char** argv) {
  const auto values = parse_option_table(argc, argv, train_table());
  if (!values) return std::nullopt;
  auto config = config_from_values(*values);
  config.config_file = values->at("config");
  return config;
}

std::string ema_choice_option(const std::string& key, const std::string& value) {
  if (value == "auto") return "";
  if (value == "none") return value;
  if (value.rfind("sigma-rel-", 0) == 0) {
    const double sigma_rel = parse_power_ema_tag(value);
    if (!(sigma_rel > 0 && sigma_rel < kMaxPowerEmaSigmaRel))
      throw Error(fmt::format("option --{} {}: expected sigma-rel-S with sigma_rel S in (0, {})", key, value,
                              kMaxPowerEmaSigmaRel));
    return value;
  }
  const double rate = option_double(key, value);
  if (!(rate > 0 && rate < 1))
    throw Error(fmt::format("option --{}: '{}' is not a rate in (0, 1), sigma-rel-S or none", key, value));
  return value;
}

TrainConfig parse_resolved_config(const std::string& text, const std::string& source) {
  auto config = config_from_values(parse_ini_text(text, source, train_table(), {"derived", "distilled"}));
  // What the trainer derived from its data, needed to rebuild the model.
  // A distilled student also records its sampling grid.
  std::istringstream lines(text);
  std::string section;
  std::vector<int64_t> shape;
  int64_t num_classes = 0;
  auto& distilled = config.distilled;
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] == '[') section = line;
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    const auto key = line.substr(0, eq), value = line.substr(eq + 3);
    if (section == "[derived]") {
      if (key == "sample-shape") shape = option_int_list("sample-shape", value);
      if (key == "num-classes") num_classes = option_int("num-classes", value);  // a classifier's classes too
    } else if (section == "[distilled]") {
      if (key == "method") distilled.method = value;
      else if (key == "grid") distilled.grid = option_int_list(key, value);
      else if (key == "sampling-steps") distilled.sampling_steps = option_int(key, value);
      else if (key == "timesteps") distilled.timesteps = option_int_list(key, value);
      else if (key == "guidance-scale") distilled.guidance_scale = option_double(key, value);
      else throw Error(fmt::format("{}: unknown key '{}' in section [distilled]", source, key));
    }
  }
  if (distilled.method != "progressive" && distilled.method != "consistency")
    throw Error(fmt::format("{}: [distilled] method = {}: expected progressive or consistency", source, distilled.method));
  if (distilled.sampling_steps != static_cast<int64_t>(distilled.timesteps.size()))
    throw Error(fmt::format("{}: [distilled] sampling-steps = {} but {} timesteps are listed", source,
                            distilled.sampling_steps, distilled.timesteps.size()));
  if (shape.empty()) throw Error(fmt::format("{}: no [derived] sample-shape: not a config written by diffusion-train", source));
  apply_data_shape(config, shape, num_classes);
  config.resolved_text = text;
  return config;
}

}  // namespace diffusion
