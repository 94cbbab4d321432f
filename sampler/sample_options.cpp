// The option table of diffusion-sample (core/options/ini_options does the Boost side): defaults shown
// in --help. Every value is read as text and converted here, so a bad value names its key.
// Defaults that depend on the model read "auto" and are resolved after the checkpoint is read.
#include "sampler/sample_options.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>

#include "core/base/error.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/device.h"
#include "core/diffusion/samplers.h"
#include "core/options/ini_options.h"
#include "core/options/option_values.h"
#include "trainer/train_options.h"

namespace diffusion {
namespace {

// One declaration per option: group, name, default, help.
const OptionSpec kOptions[] = {
    {"model", "checkpoint", "", "run folder (its latest checkpoint) or a step folder"},
    {"fan-out", "jobs", "", "jobs file: run its [job.NAME] sampling and distillation jobs at once on slices of the ranks (docs/jobs.md); no other option with it"},
    {"model", "ema", "auto", "EMA rate of the weights, sigma-rel-S (a power EMA; post-hoc from the run's EMA "
     "snapshots when not kept), or none (raw weights); auto = the slowest"},
    {"model", "torchscript", "", "a TorchScript file instead of --checkpoint: forward(x, t) or forward(x, t, y), "
     "int64 t in 0..T-1, returning the network output; described by the next five options"},
    {"model", "sample-shape", "", "TorchScript: shape of one sample, D (vectors) or C,H,W (images)"},
    {"model", "schedule", "linear", "TorchScript: linear | cosine (linear: DDPM's betas scaled by 1000/T)"},
    {"model", "timesteps", "1000", "TorchScript: T, training timesteps"},
    {"model", "prediction", "eps", "TorchScript: what the network predicts, eps | x0 | v"},
    {"model", "num-classes", "0", "TorchScript: C classes (forward(x, t, y), null label C); 0 = unconditional"},
    {"input", "latents", "", "decode these x_T instead of drawing them: dataset `x` float32 [N, sample shape] "
     "(N = --num-samples, or defines it)"},
    {"input", "invert", "", "DDIM inversion (eta 0, forward in time) of a dataset file (`images` uint8 or `x`); "
     "writes its latents `x` float32 [N, sample shape], readable by --latents"},
    {"input", "interpolate", "0", "K >= 2: decode K slerp steps (lambda = j/(K-1), j = 0..K-1) between latents "
     "(0,1), (2,3), ... of --latents; output row p*K + j is pair p, step j; N = K * pairs"},
    {"output", "num-samples", "0", "N, samples to generate over all ranks (0: as many as --latents/--invert hold)"},
    {"output", "out", "", "output folder (samples.h5, shards/, manifest.json, grid.png)"},
    {"output", "save-float", "false", "images: write float32 `x` [N,H,W,C] in [-1,1] instead of uint8"},
    {"sampler", "sampler", "auto", "ddpm | ddim | euler | heun | dpmpp-2m | dpmpp-2m-sde | consistency (docs/sampling.md); "
     "auto = consistency for a consistency model, else ddim"},
    {"sampler", "steps", "auto", "S sampling steps; auto = T for ddpm, 1 for consistency, 50 for the others"},
    {"sampler", "time-points", "auto", "consistency: the K time points T1,...,TK (descending training timesteps from "
     "T-1, on a distilled student's grid) instead of trailing spacing; sets --steps K; auto = trailing"},
    {"sampler", "eta", "0", "DDIM noise scale (0 = deterministic)"},
    {"sampler", "variance", "auto", "DDPM: fixed-large | fixed-small | learned; auto = learned if the model learned it"},
    {"sampler", "timestep-spacing", "auto", "leading | trailing | linspace; auto = leading, or a distilled student's own grid"},
    {"sampler", "karras", "false", "euler | heun | dpmpp-2m(-sde): Karras sigma grid (rho = 7) between the schedule's sigma(0) and "
     "sigma(T-1), instead of --timestep-spacing"},
    {"sampler", "churn", "0", "euler | heun: stochastic churn S_churn (EDM Algorithm 2); 0 = the deterministic ODE"},
    {"sampler", "s-tmin", "0", "euler | heun with --churn: churn only where sigma >= s-tmin"},
    {"sampler", "s-tmax", "inf", "euler | heun with --churn: churn only where sigma <= s-tmax"},
    {"sampler", "s-noise", "1", "euler | heun with --churn: scale of the churn noise S_noise"},
    {"sampler", "clip-x0", "auto", "clip predicted x0 to [-1,1]; auto = true for images"},
    {"sampler", "guidance-scale", "1", "classifier-free guidance scale s (1 = plain conditional)"},
    {"sampler", "guidance-interval", "all", "LOW,HIGH: classifier-free guidance only where LOW < sigma_t <= HIGH "
     "(sigma_t = sqrt((1-alphabar_t)/alphabar_t); HIGH may be inf), plain conditional elsewhere; all = every step"},
    {"sampler", "classifier", "", "classifier guidance: a run folder of diffusion-train --objective classifier "
     "(its slowest EMA); ddpm and ddim (docs/sampling.md)"},
    {"sampler", "classifier-scale", "auto", "classifier guidance scale s (needs --classifier); auto = 1"},
    {"sampler", "class", "spread", "class of every sample; spread = sample i gets class i mod C"},
    {"sampler", "seed", "0", "seed: sample i is a function of (model, settings, seed, i)"},
    {"runtime", "batch-size", "auto", "samples per forward pass per rank (does not change results); auto = 64 on "
     "a CPU, on a GPU as many as about 60% of its free memory holds"},
    {"runtime", "threads", "0", "intra-op threads per rank; 0 = default"},
    {"runtime", "device", "auto", "auto | cpu | cuda (auto: CUDA when every rank sees a GPU)"},
    {"runtime", "share-gpus", "false", "allow more ranks on a node than GPUs (they share; for sampling: NCCL needs a GPU per rank)"},
    {"runtime", "precision", "fp32", "fp32 | bf16: the network's forward passes (the sampler's update math stays float32)"},
    {"runtime", "collective-timeout", "300", "seconds a rank may wait in a collective before the job ends naming "
     "the stuck rank (docs/launch.md); 0 = off"},
    {"slurm", "array-task", "0", "K: this job generates indices [floor(K*N/P), floor((K+1)*N/P)) into the same --out; "
     "the last task to finish writes samples.h5"},
    {"slurm", "array-tasks", "1", "P, jobs that share the N samples (a Slurm job array: K = $SLURM_ARRAY_TASK_ID)"},
};

template <typename Parse>
auto to_enum(const std::string& key, const std::string& v, Parse parse) {
  try {
    return parse(v);
  } catch (const Error& e) {
    throw Error(fmt::format("option --{}: {}", key, e.what()));
  }
}

}  // namespace

std::optional<SampleConfig> parse_sample_options(int argc, char** argv) {
  static const OptionTable table{
      "diffusion-sample",
      "mpirun -np W diffusion-sample --checkpoint RUN --num-samples N --out DIR [options]\n"
      "mpirun -np W diffusion-sample --torchscript model.pt --sample-shape 1,28,28 --num-samples N --out DIR [options]",
      {"model", "input", "output", "sampler", "runtime", "slurm", "fan-out"},
      {std::begin(kOptions), std::end(kOptions)},
      /*config_file=*/false};
  const auto values = parse_option_table(argc, argv, table);
  if (!values) return std::nullopt;
  const auto s = [&](const char* key) { return values->at(key); };

  SampleConfig c;
  c.checkpoint = s("checkpoint");
  c.torchscript.path = s("torchscript");
  if (c.checkpoint.empty() == c.torchscript.path.empty())
    throw Error("give one of --checkpoint (a run or step folder) or --torchscript (a TorchScript file)");
  if (!c.torchscript.path.empty()) {
    if (s("sample-shape").empty()) throw Error("option --sample-shape is required with --torchscript (D or C,H,W)");
    auto& ts = c.torchscript;
    ts.sample_shape = option_int_list("sample-shape", s("sample-shape"));
    if ((ts.sample_shape.size() != 1 && ts.sample_shape.size() != 3) ||
        std::any_of(ts.sample_shape.begin(), ts.sample_shape.end(), [](int64_t d) { return d <= 0; }))
      bad_option_value("sample-shape", s("sample-shape"), "D or C,H,W with positive sizes");
    ts.schedule = to_enum("schedule", s("schedule"), parse_schedule_kind);
    ts.timesteps = option_int("timesteps", s("timesteps"));
    if (ts.timesteps < 2) throw Error(fmt::format("option --timesteps: {} must be at least 2", ts.timesteps));
    ts.prediction = to_enum("prediction", s("prediction"), parse_prediction);
    ts.num_classes = option_int("num-classes", s("num-classes"));
    if (ts.num_classes < 0) throw Error(fmt::format("option --num-classes: {} must be >= 0", ts.num_classes));
  }
  c.out = s("out");
  if (c.out.empty()) throw Error("option --out is required (the output folder)");
  c.latents = s("latents");
  c.invert = s("invert");
  if (!c.latents.empty() && !c.invert.empty()) throw Error("options --latents and --invert exclude each other");
  c.interpolate = option_int("interpolate", s("interpolate"));
  if (c.interpolate != 0 && (c.interpolate < 2 || c.latents.empty()))
    throw Error(fmt::format("option --interpolate {}: needs K >= 2 and --latents (the pairs to interpolate)",
                            c.interpolate));
  c.num_samples = option_int("num-samples", s("num-samples"));
  if (c.num_samples < 0 || (c.num_samples == 0 && c.latents.empty() && c.invert.empty()))
    throw Error(fmt::format("option --num-samples: {} must be positive (or 0 with --latents/--invert, which then "
                            "define N)", c.num_samples));
  c.ema = ema_choice_option("ema", s("ema"));
  c.save_float = option_bool("save-float", s("save-float"));
  c.sampler = s("sampler");
  // auto is resolved once the model is read (generation.cpp); until then it is checked as ddim.
  const SamplerKind kind = c.sampler == "auto" ? SamplerKind::kDdim : to_enum("sampler", c.sampler, parse_sampler_kind);
  if (s("steps") != "auto") {
    c.steps = option_int("steps", s("steps"));
    if (*c.steps < 1) throw Error(fmt::format("option --steps: {} must be at least 1", *c.steps));
  }
  if (s("time-points") != "auto") {
    c.time_points = option_int_list("time-points", s("time-points"));
    if (c.steps && *c.steps != static_cast<int64_t>(c.time_points.size()))
      throw Error(fmt::format("option --time-points {}: {} points, but --steps {}; leave --steps out", s("time-points"),
                              c.time_points.size(), *c.steps));
  }
  c.eta = option_double("eta", s("eta"));
  if (c.eta < 0) throw Error(fmt::format("option --eta: {} must be >= 0", c.eta));
  if (s("variance") != "auto") c.variance = to_enum("variance", s("variance"), parse_variance_kind);
  if (s("timestep-spacing") != "auto")
    c.spacing = to_enum("timestep-spacing", s("timestep-spacing"), parse_timestep_spacing);
  c.karras = option_bool("karras", s("karras"));
  if (c.karras && !is_fast_sampler(kind))
    throw Error(fmt::format("option --karras: needs --sampler euler, heun, dpmpp-2m or dpmpp-2m-sde, not {}",
                            c.sampler));
  if (c.karras && c.spacing)
    throw Error(fmt::format("option --karras: places its own sigma grid, so it cannot be combined with "
                            "--timestep-spacing {} (leave that option out)",
                            s("timestep-spacing")));
  c.churn = option_double("churn", s("churn"));
  c.s_tmin = option_double("s-tmin", s("s-tmin"));
  c.s_tmax = option_double("s-tmax", s("s-tmax"));
  c.s_noise = option_double("s-noise", s("s-noise"));
  if (c.churn < 0) throw Error(fmt::format("option --churn: {} must be >= 0", c.churn));
  if (c.s_tmin < 0 || c.s_tmax < c.s_tmin)
    throw Error(fmt::format("option --s-tmin/--s-tmax: need 0 <= s-tmin ({}) <= s-tmax ({})", c.s_tmin, c.s_tmax));
  if (c.s_noise < 0) throw Error(fmt::format("option --s-noise: {} must be >= 0", c.s_noise));
  const bool churning = kind == SamplerKind::kEuler || kind == SamplerKind::kHeun;
  const std::pair<const char*, bool> churn_set[] = {
      {"churn", c.churn != 0}, {"s-tmin", c.s_tmin != 0}, {"s-tmax", !std::isinf(c.s_tmax)}, {"s-noise", c.s_noise != 1}};
  for (const auto& [key, set] : churn_set)
    if (set && !churning)
      throw Error(fmt::format("option --{}: only euler and heun churn, not --sampler {}", key, c.sampler));
  if (s("clip-x0") != "auto") c.clip_x0 = option_bool("clip-x0", s("clip-x0"));
  c.guidance_scale = option_double("guidance-scale", s("guidance-scale"));
  if (s("guidance-interval") != "all") {
    const auto v = option_double_list("guidance-interval", s("guidance-interval"));
    if (v.size() != 2 || !(v[0] >= 0 && v[0] < v[1]))
      throw Error(fmt::format("option --guidance-interval {}: expected LOW,HIGH with 0 <= LOW < HIGH (sigma values; "
                              "HIGH may be inf) or all",
                              s("guidance-interval")));
    if (c.guidance_scale == 1.0)
      throw Error(fmt::format("option --guidance-interval {}: needs --guidance-scale other than 1 (it limits where "
                              "classifier-free guidance applies)",
                              s("guidance-interval")));
    c.guidance_interval = {v[0], v[1]};
  }
  c.classifier = s("classifier");
  if (s("classifier-scale") != "auto") {
    if (c.classifier.empty())
      throw Error(fmt::format("option --classifier-scale {}: needs --classifier (a classifier run folder)",
                              s("classifier-scale")));
    c.classifier_scale = option_double("classifier-scale", s("classifier-scale"));
    if (!std::isfinite(*c.classifier_scale) || *c.classifier_scale < 0)
      throw Error(fmt::format("option --classifier-scale: {} must be a finite value >= 0", *c.classifier_scale));
  }
  if (!c.classifier.empty() && kind != SamplerKind::kDdpm && kind != SamplerKind::kDdim)
    throw Error(fmt::format("option --classifier: classifier guidance is implemented for --sampler ddpm and ddim, "
                            "not {}", c.sampler));
  if (s("class") != "spread") {
    c.class_label = option_int("class", s("class"));
    if (*c.class_label < 0) throw Error(fmt::format("option --class: {} must be >= 0", *c.class_label));
  }
  const int64_t seed = option_int("seed", s("seed"));
  if (seed < 0) throw Error(fmt::format("option --seed: {} must be >= 0", seed));
  c.seed = static_cast<uint64_t>(seed);
  c.batch_size = s("batch-size") == "auto" ? 0 : option_int("batch-size", s("batch-size"));
  if (s("batch-size") != "auto" && c.batch_size <= 0)
    throw Error(fmt::format("option --batch-size: {} must be positive (or auto)", c.batch_size));
  c.threads = static_cast<int>(option_int("threads", s("threads")));
  if (c.threads < 0) throw Error(fmt::format("option --threads: {} must be >= 0", c.threads));
  c.device = s("device");
  parse_device_kind(c.device);  // a bad value fails here, naming the option
  c.share_gpus = option_bool("share-gpus", s("share-gpus"));
  c.precision = parse_precision(s("precision"));
  c.collective_timeout_s = collective_timeout_option(s("collective-timeout"));
  c.array_tasks = static_cast<int>(option_int("array-tasks", s("array-tasks")));
  if (c.array_tasks < 1) throw Error(fmt::format("option --array-tasks: {} must be at least 1", c.array_tasks));
  c.array_task = static_cast<int>(option_int("array-task", s("array-task")));
  if (c.array_task < 0 || c.array_task >= c.array_tasks)
    throw Error(fmt::format("option --array-task: {} is not in 0 … {} (--array-tasks {})", c.array_task,
                            c.array_tasks - 1, c.array_tasks));
  if (!c.invert.empty() && !c.classifier.empty())
    throw Error("option --classifier: DDIM inversion (--invert) is not guided; leave --classifier out");
  if ((!c.invert.empty() || c.interpolate > 0) && (kind != SamplerKind::kDdim || c.eta != 0.0))
    throw Error(fmt::format("option --{}: needs --sampler ddim with --eta 0 (deterministic DDIM)",
                            c.invert.empty() ? "interpolate" : "invert"));
  return c;
}

}  // namespace diffusion
