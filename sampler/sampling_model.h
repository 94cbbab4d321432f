// The model diffusion-sample draws from, whatever it was loaded from: a project checkpoint
// (which describes itself) or a TorchScript file (described by options). Both become the same
// thing: a denoiser callable plus the diffusion settings and the identity for the manifest.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "core/diffusion/samplers.h"
#include "sampler/sample_config.h"
#include "trainer/train_config.h"

namespace diffusion {

struct SamplingModel {
  std::string description;            // for the log: "run/checkpoints/step-00002000 (ema 0.99)"
  nlohmann::json identity;            // manifest "model": checkpoint path+step+ema, or file+crc32+bytes
  ScheduleConfig schedule;            // the training schedule (T steps)
  Prediction prediction = Prediction::kEps;
  bool learned_variance = false;
  std::vector<int64_t> sample_shape;  // [C, H, W] or [D]
  int64_t num_classes = 0;            // 0 = unconditional; else null label = num_classes
  std::vector<std::string> class_names;  // empty when unknown
  DistilledInfo distilled;            // a distillation student's own grid (sampling_steps > 0)
  bool consistency = false;           // a consistency model (objective = consistency): f(x, t) = x̂_0
  DenoiseFn forward;                  // (x_t, t, y) -> output; y undefined for unconditional
};

// --checkpoint: a run folder (its latest) or a step folder; --ema picks the weights. The
// network runs on `device` in `precision` (core/models/autocast.h) and returns float32.
SamplingModel load_checkpoint_model(const SampleConfig& config, const c10::Device& device, Precision precision);

// --torchscript: checks that the file loads, that forward takes (x, t) or (x, t, y) as
// --num-classes says, and that it maps a batch of --sample-shape to that shape; its identity is
// the file's CRC32 (zlib) and byte size. Throws diffusion::Error naming the file otherwise.
SamplingModel load_torchscript_model(const TorchScriptModel& config, const c10::Device& device,
                                     Precision precision);

// The classifier of classifier guidance (--classifier DIR): a run of diffusion-train
// --objective classifier, in float32 on the model's device.
struct GuidanceClassifier {
  std::string description;            // for the log
  nlohmann::json identity;            // manifest settings "classifier": checkpoint path+step+ema
  int64_t num_classes = 0;            // K, the classes it tells apart
  ClassifierGradFn grad;              // (x_t, τ, y) -> ∇_x log p(y | x_t)
};

// Loads --classifier and checks it against the model `m` samples from, before anything is
// written: it must be a classifier, of m's sample shape (image size and channels, or
// dimension), trained on m's schedule (kind and T), and with m's classes when m is
// conditional. Each refusal names the folder and the setting.
GuidanceClassifier load_guidance_classifier(const SampleConfig& config, const SamplingModel& m,
                                            const c10::Device& device);

// CRC32 (zlib's) and byte size of a file, the identity of model and input files in manifests.
std::pair<uint32_t, uint64_t> file_crc32(const std::string& path);

}  // namespace diffusion
