// The training loop (see trainer.h). Every random draw is keyed by (seed, step, global sample
// position) and each rank's loss is the mean over its B/W samples, so averaging gradients over
// ranks gives the gradient of the global-batch mean at any W: the same config and global batch
// give the same run at W = 1, 2, 4, up to float32 reduction round-off. Dropout masks are the
// exception: they come from LibTorch's generator, reseeded per (seed, step, rank), so with
// dropout > 0 runs at different W agree in distribution only (resume stays bit-identical).
#include "trainer/trainer.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/base/durable_file.h"
#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/base/rng.h"
#include "core/base/stop_signal.h"
#include "core/base/text.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/grad_bucketer.h"
#include "core/diffusion/losses.h"
#include "core/io/checkpoint.h"
#include "core/models/autocast.h"
#include "core/models/denoiser.h"
#include "datasets/dataset_file.h"
#include "datasets/shard_reader.h"
#include "trainer/classifier_objective.h"
#include "trainer/consistency_objective.h"
#include "trainer/ema.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics_writer.h"
#include "trainer/step_stats.h"
#include "trainer/train_state.h"
#include "trainer/training_draws.h"

namespace diffusion {
namespace {

// Rank 0 picks the checkpoint and every rank loads that one, so ranks cannot disagree (a stale
// file-system cache on one node, a checkpoint finishing meanwhile).
std::optional<std::string> agree_on_checkpoint(MPI_Comm comm, const std::string& run_dir) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const std::string chosen = broadcast_string(comm, rank == 0 ? find_checkpoint(run_dir).value_or("") : "");
  if (chosen.empty()) return std::nullopt;
  return chosen;
}

void set_lr(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

// The config's data settings and this rank's place, for the sharded reader.
ShardReaderConfig reader_config(const TrainConfig& c, int rank, int world, int64_t start_position) {
  ShardReaderConfig r;
  r.path = c.data.path;
  r.global_batch = c.optim.batch_size;
  r.rank = rank;
  r.world_size = world;
  r.seed = c.optim.seed;
  r.start_position = start_position;
  r.random_flip = c.data.random_flip;
  r.memory_limit_bytes = c.data.memory_limit_mb << 20;
  return r;
}

// The rank's batch on the model's device (one copy each; the reader fills host memory).
struct DeviceBatch {
  at::Tensor x;       // [b, …]
  at::Tensor labels;  // int64 [b], or undefined
};

DeviceBatch to_device(const ShardBatch& batch, const c10::Device& device, bool channels_last) {
  DeviceBatch d;
  d.x = batch.x.to(device);
  if (channels_last && d.x.dim() == 4) d.x = d.x.contiguous(at::MemoryFormat::ChannelsLast);
  if (batch.labels.defined()) d.labels = batch.labels.to(device);
  return d;
}

// Forward and backward of one step over the rank's micro-batches; the bucketer reduces the
// gradients over the ranks while the last backward runs. Gradients hold the global-batch mean.
void forward_backward(DenoiserImpl& model, TrainingObjective& objective, GradBucketer& bucketer,
                      const DeviceBatch& batch, const TrainingDraws& draws, int64_t num_classes,
                      bool classifier, int64_t micro, StepStats& stats) {
  const int64_t local_batch = batch.x.size(0);
  for (int64_t begin = 0; begin < local_batch; begin += micro) {
    const int64_t end = std::min(begin + micro, local_batch);
    const auto x0 = batch.x.slice(0, begin, end);  // [m, …]
    at::Tensor y;                                  // [m], the null label where dropped
    if (num_classes > 0) {
      const auto labels = batch.labels.slice(0, begin, end);
      y = torch::where(draws.drop_label.slice(0, begin, end), torch::full_like(labels, num_classes), labels);
    } else if (classifier) {
      y = batch.labels.slice(0, begin, end);  // a classifier's targets: never dropped
    }
    const auto terms = objective.losses(model, x0, y, draws.t.slice(0, begin, end), draws.eps.slice(0, begin, end));
    // Each rank minimises its local mean; the bucketer averages over ranks.
    const bool last = end >= local_batch;
    if (last) bucketer.prepare_for_backward();
    (terms.loss.sum() / static_cast<double>(local_batch)).backward();
    if (last) bucketer.finish();
    stats.add(terms.loss, terms.t, terms.correct);
  }
}

}  // namespace

Trainer::Trainer(TrainConfig config, MPI_Comm comm, Communicator& communicator,
                 TrainingObjective* objective)
    : config_(std::move(config)), comm_(comm), communicator_(communicator), objective_(objective) {}

TrainResult Trainer::run() {
  const int rank = communicator_.rank();
  const int world = communicator_.size();
  int comm_size = 0;
  MPI_CHECK(MPI_Comm_size(comm_, &comm_size));
  if (comm_size != world)
    throw Error(fmt::format("trainer: the MPI communicator has {} ranks, the gradient communicator {}",
                            comm_size, world));
  // On a slice of the world, this job's rank 0 prints its progress.
  ScopedLogRank log_scope(rank, world);
  auto& c = config_;
  // The communicator's device is where everything of the step lives.
  const c10::Device device = communicator_.device();
  const Precision precision = effective_precision(c.runtime.precision, device.type());
  const auto& run_dir = c.checkpoint.out;
  const std::string config_path = run_dir + "/config.ini";

  // --- config, data shapes, run folder: every rank's verdict agreed before any other collective
  agree_or_throw(comm_, capture_error([&] {
    validate_train_config(c, world);
    const DatasetInfo info = probe_dataset(c.data.path);
    validate_data_fits_model(c, info);
    apply_data_shape(c, info.kind == DataKind::kImages
                           ? std::vector<int64_t>{info.sample_shape[2], info.sample_shape[0], info.sample_shape[1]}
                           : std::vector<int64_t>{info.sample_shape[0]},
                     info.num_classes);
    // The resolved text also records what came from the data.
    // num-classes: the classes a conditional model is conditioned on, or a classifier's.
    const bool classifier = c.model.classifier_classes > 0;
    c.resolved_text += fmt::format("[derived]\nsample-shape = {}\nnum-classes = {}\nworld-size = {}\n",
                                   fmt::join(c.sample_shape, ","), classifier ? c.model.classifier_classes : c.num_classes,
                                   world);
    // Refuse another model's folder before writing anything.
    std::ifstream existing(config_path);
    if (rank == 0 && existing) {
      const std::string old((std::istreambuf_iterator<char>(existing)), std::istreambuf_iterator<char>());
      const auto diff = first_line_difference(model_identity(old), model_identity(c.resolved_text));
      if (!diff.empty())
        throw Error(fmt::format("{}: this run folder holds another model ({}); use a new --out", config_path, diff));
    }
  }), "[train] setup");
  if (c.optim.threads > 0) torch::set_num_threads(c.optim.threads);

  // --- model, optimiser, EMA ------------------------------------------------------------------
  std::unique_ptr<TrainingObjective> own_objective;  // when the caller gives none
  if (!objective_ && c.diffusion.objective == "classifier") {
    own_objective = std::make_unique<ClassifierObjective>(NoiseSchedule::from_config(c.diffusion.schedule), precision);
  } else if (!objective_ && c.diffusion.objective == "consistency") {
    ConsistencySettings k;
    k.prediction = c.diffusion.prediction;
    k.channels = c.sample_shape[0];  // C of [C, H, W], or D of [D]
    k.precision = precision;
    k.huber_c = c.consistency.huber_c;
    k.initial_points = c.consistency.initial_points;
    k.final_points = c.consistency.final_points;
    k.total_steps = c.optim.steps;
    k.p_mean = c.consistency.p_mean;
    k.p_std = c.consistency.p_std;
    own_objective = std::make_unique<ConsistencyObjective>(NoiseSchedule::from_config(c.diffusion.schedule), k);
  } else if (!objective_) {
    own_objective = std::make_unique<DenoisingObjective>(
        NoiseSchedule::from_config(c.diffusion.schedule),
        LossConfig{c.diffusion.prediction, c.diffusion.learned_variance, c.diffusion.vlb_weight,
                   c.diffusion.min_snr_gamma}, precision);
  }
  TrainingObjective& objective = objective_ ? *objective_ : *own_objective;
  torch::manual_seed(c.optim.seed);
  // Built and initialised on the CPU, so the initial weights do not depend on the device.
  auto model = make_denoiser(c.model);
  objective.initialize(*model);
  model->to(device);
  if (c.runtime.channels_last) set_channels_last(*model);
  auto params = named_parameters(*model);
  {
    // Every rank starts from rank 0's weights, whatever its own initialisation did.
    torch::NoGradGuard no_grad;
    CollectiveScope scope("initial weights broadcast", comm_);
    for (auto& p : params.tensors) {
      at::Tensor t = p.detach();
      communicator_.broadcast(t, 0);
    }
  }
  torch::optim::AdamW optimizer(params.tensors, torch::optim::AdamWOptions(c.optim.lr)
                                                    .betas({c.optim.beta1, c.optim.beta2})
                                                    .eps(c.optim.adam_eps)
                                                    .weight_decay(c.optim.weight_decay));
  std::vector<Ema> emas;
  for (double rate : c.optim.ema_rates) emas.emplace_back(params.tensors, rate);
  for (double sigma_rel : c.optim.ema_sigma_rels) emas.push_back(Ema::power(params.tensors, sigma_rel));

  // --- resume -----------------------------------------------------------------------------------
  TrainCounters n;
  if (const auto found = agree_on_checkpoint(comm_, run_dir)) {
    LoadedCheckpoint loaded;
    agree_or_throw(comm_, capture_error([&] {
      loaded = read_checkpoint(*found);
      const auto diff = first_line_difference(model_identity(loaded.config_text), model_identity(c.resolved_text));
      if (!diff.empty()) throw Error(fmt::format("{}: checkpoint of another model config ({})", loaded.dir, diff));
      n = restore_checkpoint_state(loaded, params, emas, optimizer, c.optim.seed);
    }), "[ckpt] resuming");
    log0("[ckpt] resumed from {} (step {}, written by {} rank(s))", loaded.dir, n.step,
         loaded.written_by_world_size);
    // Precision and device are run settings: a checkpoint continues in either, and says so.
    const std::string written = runtime_setting(loaded.config_text, "precision", "fp32");
    if (written != to_string(c.runtime.precision))
      log0("[ckpt] the checkpoint was trained with --precision {}; continuing with --precision {}", written,
           to_string(c.runtime.precision));
  }
  objective.bind_emas(emas);
  // What a run wrote past its start step (EMA snapshots, metrics records) goes before it is
  // written again. Rank 0 alone touches the folder, but a failure there must end every rank, not
  // leave them in the next collective.
  agree_or_throw(comm_, capture_error([&] {
    if (rank != 0) return;
    if (c.checkpoint.ema_snapshot_every > 0) remove_snapshots_after(run_dir + "/" + kEmaSnapshotFolder, n.step);
    const std::string path = run_dir + "/metrics.jsonl";
    if (const int64_t dropped = drop_metrics_after(path, n.step); dropped > 0)
      log0("[train] {}: dropped {} record(s) past step {}, logged before the resume", path, dropped, n.step);
  }), "[train] removing what the run wrote past the start step");
  if (rank == 0) {
    std::filesystem::create_directories(run_dir);
    write_file_atomic(config_path, c.resolved_text);
    log0("[train] resolved config (saved to {}):\n{}", config_path, c.resolved_text);
  }
  log0("[train] {} with {} parameters on {} rank(s), global batch {} ({} per rank), {} on {}{}", c.model.kind,
       count_parameters(*model), world, c.optim.batch_size, c.optim.batch_size / world, to_string(precision),
       device.str(), c.runtime.channels_last ? ", channels-last" : "");
  if (const auto note = precision_fallback_note(c.runtime.precision, device.type()); !note.empty())
    log0("[train] {}", note);

  TrainResult result;
  if (n.step >= c.optim.steps) {
    log0("[train] already at step {} of {}: nothing to do", n.step, c.optim.steps);
    result.final_step = n.step;
    result.skipped_steps = n.skipped;
    return result;
  }

  // --- data stream, gradient reduction, schedule, metrics -------------------------------------
  ShardReader reader(reader_config(c, rank, world, n.data_position));
  GradBucketerConfig bucket_config;
  bucket_config.bucket_bytes = c.optim.bucket_mb << 20;
  GradBucketer bucketer(communicator_, params.tensors, bucket_config);
  const LrSchedule lr_schedule{c.optim.lr, c.optim.warmup, c.optim.lr_decay, c.optim.lr_min, c.optim.steps};
  const double max_norm = c.optim.grad_clip > 0 ? c.optim.grad_clip : std::numeric_limits<double>::infinity();
  const int64_t local_batch = c.optim.batch_size / world;
  const int64_t micro = c.optim.micro_batch > 0 ? c.optim.micro_batch : local_batch;
  const MetricsWriter metrics(run_dir + "/metrics.jsonl", rank == 0);
  StepStats stats(c.diffusion.schedule.timesteps);
  const auto save = [&] {
    CheckpointWriteOptions options;
    options.keep_last = c.checkpoint.keep;
    options.config_text = c.resolved_text;
    return write_checkpoint(comm_, run_dir, make_checkpoint_state(params, emas, optimizer, n, c.optim.seed), options);
  };
  const auto save_ema_snapshot = [&] {
    CheckpointWriteOptions options;
    options.keep_last = std::numeric_limits<int>::max();  // post-hoc EMA needs every one
    options.config_text = c.resolved_text;
    options.folder = kEmaSnapshotFolder;
    write_checkpoint(comm_, run_dir, make_ema_snapshot_state(params, emas, n.step), options);
  };

  model->train();
  const auto clock_start = std::chrono::steady_clock::now();
  auto window_start = clock_start;
  int64_t window_images = 0;
  const int64_t first_step = n.step;

  while (n.step < c.optim.steps) {
    // Dropout draws come from LibTorch's generator: reseed it per (seed, step, rank).
    torch::manual_seed(stream_key(c.optim.seed, RngPurpose::kDropout,
                                  {static_cast<uint64_t>(n.step), static_cast<uint64_t>(rank)}));

    // batch → keyed draws → forward/backward with the reduction under way
    const ShardBatch host_batch = reader.next();
    const DeviceBatch batch = to_device(host_batch, device, c.runtime.channels_last);
    objective.begin_step(n.step);
    const auto draws = draw_training_noise(c.optim.seed, n.step, host_batch.positions, c.sample_shape,
                                           objective.timestep_draws(), c.diffusion.p_uncond, device);
    bucketer.zero_grad();
    stats.begin_step(batch.x);
    forward_backward(*model, objective, bucketer, batch, draws, c.num_classes, c.model.classifier_classes > 0, micro,
                     stats);

    // clip → step → EMA. Gradients are identical on every rank, so every rank takes the same
    // decision; the norm is the one host read the step needs.
    const double lr = lr_schedule.at(n.step);
    set_lr(optimizer, lr);
    const double grad_norm = torch::nn::utils::clip_grad_norm_(params.tensors, max_norm);
    if (std::isfinite(grad_norm)) {
      optimizer.step();
      for (auto& ema : emas) ema.update(params.tensors, n.step + 1);
      n.nonfinite_in_row = 0;
    } else {
      ++n.skipped;
      // The weights stand still for this step; a power EMA's profile counts it all the same
      // (post-hoc EMA assumes exactly p_{t,γ} with t the loop step).
      for (auto& ema : emas)
        if (ema.is_power()) ema.update(params.tensors, n.step + 1);
      if (++n.nonfinite_in_row >= c.optim.max_nonfinite)
        throw Error(fmt::format("step {}: {} non-finite gradient norms in a row (--max-nonfinite); "
                                "lower --lr or check the data",
                                n.step, n.nonfinite_in_row));
      log0("[train] step {}: non-finite gradient norm, update skipped ({} in a row)", n.step, n.nonfinite_in_row);
    }
    ++n.step;
    n.images_seen += c.optim.batch_size;
    n.data_position = reader.next_position();
    window_images += c.optim.batch_size;

    // log: the diagnostics are read, and reduced over the ranks, only here
    if (n.step % c.logging.log_every == 0 || n.step == c.optim.steps) {
      // The scope covers the host read too: with NCCL that read is where the wait happens.
      const StepStatsSummary summary = [&] {
        CollectiveScope scope("step statistics all-reduce", comm_);
        return stats.reduce(communicator_);
      }();
      const auto now = std::chrono::steady_clock::now();
      const double window_s = std::chrono::duration<double>(now - window_start).count();
      const double elapsed = std::chrono::duration<double>(now - clock_start).count();
      MetricsRecord record;
      record.step = n.step;
      record.total_steps = c.optim.steps;
      record.loss = summary.loss;
      record.loss_per_t_quarter = summary.loss_per_quarter;
      record.accuracy = summary.accuracy;
      record.grad_norm = grad_norm;
      record.lr = lr;
      record.images_per_s = window_images / std::max(window_s, 1e-9);
      record.images_seen = n.images_seen;
      record.skipped_steps = n.skipped;
      record.eta_s = elapsed / double(n.step - first_step) * double(c.optim.steps - n.step);
      metrics.write(record);
      window_start = now;
      window_images = 0;
    }

    // checkpoint: a stop request on any rank (SIGTERM/SIGUSR1 before a time limit) stops every
    // rank here, with a checkpoint.
    const bool stop = [&] {
      CollectiveScope scope("stop flag all-reduce", comm_);
      return communicator_.all_reduce_max(stop_requested() ? 1.0 : 0.0) > 0;
    }();
    // The snapshot goes first: a run killed between the two redoes this step after its resume
    // and writes the snapshot again, where the other order would lose it.
    if (c.checkpoint.ema_snapshot_every > 0 && n.step % c.checkpoint.ema_snapshot_every == 0)
      save_ema_snapshot();
    if (stop || n.step % c.checkpoint.checkpoint_every == 0 || n.step == c.optim.steps)
      result.last_checkpoint = save();
    if (stop) {
      // Every rank says whether the signal reached it: on a multi-node job that shows the
      // launcher delivered it everywhere (a rank may also stop only because another one did).
      const char* signal = stop_signal_name();
      log_rank("[train] stop on host {}: {}", host_name(),
               signal ? fmt::format("got {}", signal) : std::string("no signal here, stopping with the others"));
      log0("[train] stop requested: checkpoint written at step {}, exiting", n.step);
      clear_stop_request();
      result.stopped_by_signal = true;
      break;
    }
  }
  result.final_step = n.step;
  result.skipped_steps = n.skipped;
  return result;
}

}  // namespace diffusion
