// Loading the model to sample from (see sampling_model.h): checkpoints through the trainer's
// load_trained_model; TorchScript files through torch::jit::load.
#include "sampler/sampling_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "core/models/autocast.h"
#include "datasets/dataset_file.h"
#include "trainer/trained_model.h"

namespace diffusion {
namespace fs = std::filesystem;
namespace {

// The class names of the training data, when its file is still there and has them (a
// convenience for samples.h5; the data may well have moved since training).
std::vector<std::string> class_names_of(const std::string& data_path, int64_t num_classes) {
  std::error_code ec;
  if (num_classes == 0 || data_path.empty() || !fs::is_regular_file(data_path, ec)) return {};
  try {
    auto info = probe_dataset(data_path);
    if (static_cast<int64_t>(info.class_names.size()) == num_classes) return info.class_names;
  } catch (const Error&) {
  }
  return {};
}

}  // namespace

std::pair<uint32_t, uint64_t> file_crc32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot read", path));
  std::vector<char> buffer(1 << 20);
  uLong crc = ::crc32(0L, Z_NULL, 0);
  uint64_t bytes = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto n = in.gcount();
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(buffer.data()), static_cast<uInt>(n));
    bytes += static_cast<uint64_t>(n);
  }
  return {static_cast<uint32_t>(crc), bytes};
}

SamplingModel load_checkpoint_model(const SampleConfig& c, const c10::Device& device, Precision precision) {
  TrainedModel t = load_trained_model(c.checkpoint, c.ema, "option --checkpoint");
  if (t.train.model.classifier_classes > 0)
    throw Error(fmt::format("option --checkpoint: {} is a noisy-sample classifier (objective = classifier), not a "
                            "denoiser; give it with --classifier", t.checkpoint_dir));
  t.net->to(device);
  SamplingModel m;
  m.description = fmt::format("{} step {} (ema {}{})", t.checkpoint_dir, t.step, t.ema,
                              t.ema_note.empty() ? "" : ": " + t.ema_note);
  m.identity = {{"checkpoint", t.checkpoint_dir}, {"step", t.step}, {"ema", t.ema}, {"kind", t.train.model.kind}};
  m.schedule = t.train.diffusion.schedule;
  m.prediction = t.train.diffusion.prediction;
  m.learned_variance = t.train.diffusion.learned_variance;
  m.sample_shape = t.train.sample_shape;
  m.num_classes = t.train.num_classes;
  m.class_names = class_names_of(t.train.data.path, t.train.num_classes);
  m.distilled = t.train.distilled;
  m.consistency = t.train.diffusion.objective == "consistency";
  m.forward = [net = t.net, precision](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    return run_network(*net, x, t, y, precision);
  };
  return m;
}

GuidanceClassifier load_guidance_classifier(const SampleConfig& c, const SamplingModel& m, const c10::Device& device) {
  TrainedModel t = load_trained_model(c.classifier, "", "option --classifier");
  const auto& k = t.train;
  const std::string dir = t.checkpoint_dir;
  if (k.model.classifier_classes == 0)
    throw Error(fmt::format("option --classifier: {} is not a classifier (its config has objective = {}); train one "
                            "with diffusion-train --objective classifier",
                            dir, k.diffusion.objective));
  if (k.sample_shape != m.sample_shape)
    throw Error(fmt::format("option --classifier: {} classifies samples of shape [{}] ([derived] sample-shape: "
                            "{}), the model generates [{}]",
                            dir, fmt::join(k.sample_shape, ", "),
                            k.sample_shape.size() == 3 ? "channels, image size" : "dimension",
                            fmt::join(m.sample_shape, ", ")));
  if (k.diffusion.schedule.kind != m.schedule.kind || k.diffusion.schedule.timesteps != m.schedule.timesteps)
    throw Error(fmt::format("option --classifier: {} was trained on the schedule {} with timesteps = {}, the model "
                            "on {} with timesteps = {}",
                            dir, to_string(k.diffusion.schedule.kind), k.diffusion.schedule.timesteps,
                            to_string(m.schedule.kind), m.schedule.timesteps));
  if (m.num_classes > 0 && k.model.classifier_classes != m.num_classes)
    throw Error(fmt::format("option --classifier: {} tells {} classes apart (num-classes in its config), the model "
                            "is conditioned on {}",
                            dir, k.model.classifier_classes, m.num_classes));
  t.net->to(device);
  GuidanceClassifier g;
  g.description = fmt::format("{} step {} (ema {}, {} classes)", dir, t.step, t.ema, k.model.classifier_classes);
  g.identity = {{"checkpoint", dir}, {"step", t.step}, {"ema", t.ema}};
  g.num_classes = k.model.classifier_classes;
  // float32 whatever --precision: the gradient is a small difference of logits.
  g.grad = [net = t.net](const at::Tensor& x, const at::Tensor& tau, const at::Tensor& y) {
    return classifier_log_prob_grad(
        [&](const at::Tensor& xi, const at::Tensor& ti) { return run_network(*net, xi, ti, {}, Precision::kFp32); }, x,
        tau, y);
  };
  return g;
}

SamplingModel load_torchscript_model(const TorchScriptModel& c, const c10::Device& device, Precision precision) {
  std::error_code ec;
  if (!fs::is_regular_file(c.path, ec))
    throw Error(fmt::format("option --torchscript: {} is not a readable file", c.path));
  const auto [crc, bytes] = file_crc32(c.path);
  auto module = std::make_shared<torch::jit::Module>();
  try {
    *module = torch::jit::load(c.path, device);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error(fmt::format("option --torchscript: {} is not a loadable TorchScript module: {}", c.path, what));
  }
  module->eval();
  // The profiling executor re-optimises a graph after its first runs; the plain interpreter
  // runs the same arithmetic on every call, so sample i does not depend on how many forward
  // passes its rank made before it.
  torch::jit::setGraphExecutorOptimize(false);

  const auto method = module->find_method("forward");
  if (!method) throw Error(fmt::format("option --torchscript: {} has no forward method", c.path));
  const size_t inputs = method->function().getSchema().arguments().size() - 1;  // without self
  const bool conditional = c.num_classes > 0;
  if (inputs != (conditional ? 3u : 2u))
    throw Error(fmt::format("option --torchscript: {}: forward takes {} inputs; --num-classes {} needs {}", c.path,
                            inputs, c.num_classes, conditional ? "forward(x, t, y)" : "forward(x, t)"));

  SamplingModel m;
  m.description = fmt::format("{} (TorchScript, crc32 {:08x})", c.path, crc);
  m.identity = {{"torchscript", fs::absolute(c.path).lexically_normal().string()},
                {"crc32", fmt::format("{:08x}", crc)},
                {"bytes", bytes}};
  m.schedule.kind = c.schedule;
  m.schedule.timesteps = c.timesteps;
  m.prediction = c.prediction;
  m.sample_shape = c.sample_shape;
  m.num_classes = c.num_classes;
  m.forward = [module, conditional, num_classes = c.num_classes, precision](const at::Tensor& x, const at::Tensor& t,
                                                                             const at::Tensor& y) {
    std::vector<torch::jit::IValue> args{x, t};
    if (conditional)
      args.emplace_back(y.defined() ? y : torch::full({x.size(0)}, num_classes, t.options().dtype(torch::kLong)));
    AutocastScope autocast(x.device().type(), precision);
    return module->forward(args).toTensor().to(torch::kFloat);
  };

  // One probe forward: a wrong --sample-shape or --num-classes fails here, before anything is
  // written, with the module's own message.
  torch::NoGradGuard no_grad;
  std::vector<int64_t> shape{2};
  shape.insert(shape.end(), c.sample_shape.begin(), c.sample_shape.end());
  at::Tensor out;
  try {
    const auto on = torch::TensorOptions().device(device);
    out = m.forward(torch::zeros(shape, on), torch::full({2}, c.timesteps - 1, on.dtype(torch::kLong)),
                    conditional ? torch::zeros({2}, on.dtype(torch::kLong)) : at::Tensor());
  } catch (const std::exception& e) {
    // The interpreter's message ends with the error itself, after a serialized traceback.
    std::string what = e.what();
    while (!what.empty() && what.back() == '\n') what.pop_back();
    what = what.substr(what.find_last_of('\n') + 1);
    throw Error(fmt::format("option --torchscript: {}: forward on a batch [{}] failed (check --sample-shape and "
                            "--num-classes): {}", c.path, fmt::join(shape, ", "), what));
  }
  if (out.sizes() != c10::IntArrayRef(shape))
    throw Error(fmt::format("option --torchscript: {}: forward maps [{}] to [{}]; expected the same shape "
                            "(check --sample-shape)", c.path, fmt::join(shape, ", "), fmt::join(out.sizes(), ", ")));
  return m;
}

}  // namespace diffusion
