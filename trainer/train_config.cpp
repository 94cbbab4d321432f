// Validation of the trainer's configuration, in one place.
#include "trainer/train_config.h"

#include <fmt/ranges.h>

#include "core/base/error.h"
#include "datasets/dataset_file.h"
#include "trainer/ema.h"

namespace diffusion {
namespace {

[[noreturn]] void fail(const std::string& key, const std::string& why) {
  throw Error(fmt::format("option --{}: {}", key, why));
}

}  // namespace

void validate_train_config(const TrainConfig& c, int world_size) {
  if (c.data.path.empty()) fail("data", "no training set given");
  if (c.checkpoint.out.empty()) fail("out", "no run folder given");
  if (c.model.kind != "unet" && c.model.kind != "mlp")
    fail("model", fmt::format("'{}' is not unet or mlp", c.model.kind));
  if (c.diffusion.schedule.timesteps < 2)
    fail("timesteps", fmt::format("T = {}, expected T >= 2", c.diffusion.schedule.timesteps));
  // Classifier guidance's classifier (--objective classifier).
  if (c.diffusion.objective != "denoise" && c.diffusion.objective != "classifier" &&
      c.diffusion.objective != "consistency")
    fail("objective", fmt::format("'{}' is not denoise, classifier or consistency", c.diffusion.objective));
  if (c.diffusion.objective == "consistency") {
    if (c.diffusion.prediction == Prediction::kEps)
      fail("prediction", "a consistency model (--objective consistency) takes its one step at sigma_max, where eps "
                         "prediction blows up (x0 = (x - sigma eps)/a, a -> 0); use v or x0");
    if (c.diffusion.learned_variance)
      fail("learned-variance", "a consistency model (--objective consistency) has no reverse-step variance; leave it out");
    const auto& k = c.consistency;
    if (k.initial_points < 2) fail("initial-points", fmt::format("{} < 2", k.initial_points));
    if (k.final_points < k.initial_points)
      fail("final-points", fmt::format("{} is below initial-points {}", k.final_points, k.initial_points));
    if (k.p_std <= 0) fail("p-std", fmt::format("{} must be > 0", k.p_std));
    if (k.huber_c < 0) fail("huber-c", fmt::format("{} must be >= 0 (0 = auto)", k.huber_c));
  }
  if (c.diffusion.objective == "classifier" && c.diffusion.class_conditional)
    fail("class-cond", "a classifier (--objective classifier) is not conditioned on a label; leave --class-cond out");
  if (c.diffusion.objective == "classifier" && c.diffusion.learned_variance)
    fail("learned-variance", "a classifier (--objective classifier) predicts no variance; leave it out");
  if (c.diffusion.min_snr_gamma < 0)
    fail("min-snr-gamma", fmt::format("{} must be >= 0 (0 = off)", c.diffusion.min_snr_gamma));
  if (c.diffusion.min_snr_gamma > 0 && c.diffusion.objective != "denoise")
    fail("min-snr-gamma", fmt::format("weights the denoising loss only, not --objective {}; leave it out",
                                      c.diffusion.objective));
  if (c.diffusion.p_uncond < 0 || c.diffusion.p_uncond >= 1)
    fail("p-uncond", fmt::format("{} is not in [0, 1)", c.diffusion.p_uncond));
  const auto& o = c.optim;
  if (o.steps < 1) fail("steps", fmt::format("{} < 1", o.steps));
  if (o.batch_size < 1) fail("batch-size", fmt::format("{} < 1", o.batch_size));
  if (o.batch_size % world_size != 0)
    fail("batch-size", fmt::format("the global batch {} does not divide over {} ranks", o.batch_size,
                                   world_size));
  const int64_t local = o.batch_size / world_size;
  if (o.micro_batch < 0 || (o.micro_batch > 0 && local % o.micro_batch != 0))
    fail("micro-batch", fmt::format("{} does not divide the per-rank batch {} (= {} / {} ranks)",
                                    o.micro_batch, local, o.batch_size, world_size));
  if (!(o.lr > 0)) fail("lr", fmt::format("{} is not positive", o.lr));
  if (o.warmup < 0) fail("warmup", "must be >= 0");
  if (!(o.lr_min >= 0 && o.lr_min <= o.lr))
    fail("lr-min", fmt::format("{} is not in [0, lr = {}]", o.lr_min, o.lr));
  if (o.grad_clip < 0) fail("grad-clip", "must be >= 0");
  for (double r : o.ema_rates)
    if (!(r > 0 && r < 1)) fail("ema-rates", fmt::format("{} is not in (0, 1)", r));
  for (double r : o.ema_sigma_rels)
    if (!(r > 0 && r < kMaxPowerEmaSigmaRel))
      fail("ema-sigma-rels", fmt::format("{} is not in (0, {})", r, kMaxPowerEmaSigmaRel));
  if (c.checkpoint.ema_snapshot_every < 0) fail("ema-snapshot-every", "must be >= 0");
  if (c.checkpoint.ema_snapshot_every > 0 && o.ema_sigma_rels.empty())
    fail("ema-snapshot-every", "snapshots hold the power EMAs, but ema-sigma-rels is none");
  if (o.max_nonfinite < 1) fail("max-nonfinite", "must be >= 1");
  if (o.bucket_mb < 1) fail("bucket-mb", "must be >= 1");
  if (c.checkpoint.checkpoint_every < 1) fail("checkpoint-every", "must be >= 1");
  if (c.checkpoint.keep < 1) fail("keep-checkpoints", "must be >= 1");
  if (c.logging.log_every < 1) fail("log-every", "must be >= 1");
}

void apply_data_shape(TrainConfig& c, const std::vector<int64_t>& sample_shape, int64_t num_classes) {
  c.sample_shape = sample_shape;
  if (sample_shape.size() == 3) {
    c.model.unet.in_channels = sample_shape[0];
  } else if (sample_shape.size() == 1) {
    c.model.mlp.data_dim = sample_shape[0];
  } else {
    throw Error(fmt::format("sample shape [{}]: expected [C, H, W] or [D]", fmt::join(sample_shape, ", ")));
  }
  c.num_classes = c.diffusion.class_conditional ? num_classes : 0;
  c.model.unet.num_classes = c.model.mlp.num_classes = c.num_classes;
  // A classifier tells the data's classes apart; it is conditioned on none.
  c.model.classifier_classes = c.diffusion.objective == "classifier" ? num_classes : 0;
}

void validate_data_fits_model(const TrainConfig& c, const DatasetInfo& info) {
  const bool images = info.kind == DataKind::kImages;
  if (c.model.kind == "unet" && !images)
    throw Error(fmt::format("{}: holds vectors {} but --model unet needs images [N, H, W, C]",
                            info.path, info.describe()));
  if (c.model.kind == "mlp" && images)
    throw Error(fmt::format("{}: holds images {} but --model mlp needs vectors `x` [N, D]", info.path,
                            info.describe()));
  if (images && c.model.unet.in_channels != 0 && c.model.unet.in_channels != info.sample_shape[2])
    throw Error(fmt::format("{}: images have {} channels but --in-channels is {}", info.path,
                            info.sample_shape[2], c.model.unet.in_channels));
  if (images && c.model.unet.image_size != info.sample_shape[0])
    throw Error(fmt::format("{}: images are {}×{} but --image-size is {} (the attention resolutions "
                            "refer to it)",
                            info.path, info.sample_shape[0], info.sample_shape[1], c.model.unet.image_size));
  if (!images && c.diffusion.learned_variance)
    throw Error(fmt::format("{}: --learned-variance needs 8-bit images: its t = 0 term is the "
                            "256-bin decoder likelihood, which means nothing for vectors",
                            info.path));
  if (c.diffusion.objective == "classifier" && (!info.has_labels || info.num_classes < 2))
    throw Error(fmt::format("{}: --objective classifier trains on the data's `labels` (at least 2 classes), but the "
                            "file has {}", info.path, info.has_labels ? fmt::format("{} class", info.num_classes) : "none"));
  if (c.diffusion.class_conditional && !info.has_labels)
    throw Error(fmt::format("{}: has no `labels`, but --class-cond is set", info.path));
  if (c.data.random_flip && !images)
    throw Error(fmt::format("{}: --random-flip needs images, the file holds vectors", info.path));
}

}  // namespace diffusion
