// The training loop (see trainer.h). Every random draw is keyed by (seed, step, global sample
// position) and each rank's loss is the mean over its B/W samples, so averaging gradients over
// ranks gives the gradient of the global-batch mean at any W: the same config and global batch
// give the same run at W = 1, 2, 4, up to float32 reduction round-off. Dropout masks are the
// exception: they come from LibTorch's generator, reseeded per (seed, step, rank), so with
// dropout > 0 runs at different W agree in distribution only (resume stays bit-identical).
#include "core/atomic_file.h"
#include "trainer/trainer.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "core/checkpoint.h"
#include "core/denoiser.h"
#include "core/error.h"
#include "core/grad_bucketer.h"
#include "core/log.h"
#include "core/mpi_session.h"
#include "core/losses.h"
#include "core/rng.h"
#include "datasets/dataset_file.h"
#include "datasets/shard_reader.h"
#include "trainer/ema.h"
#include "trainer/training_draws.h"

namespace diffusion {
namespace {

std::atomic<bool> g_stop_requested{false};

extern "C" void on_stop_signal(int) { g_stop_requested.store(true); }

// The sections of a resolved config that define the model and its diffusion; a run folder or
// checkpoint whose sections differ belongs to another model.
std::string model_identity(const std::string& resolved_text) {
  std::string out;
  bool keep = false;
  std::istringstream in(resolved_text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '[') keep = line == "[model]" || line == "[diffusion]" || line == "[distilled]";
    if (keep && !line.empty()) out += line + "\n";
  }
  return out;
}

std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream ia(a), ib(b);
  std::string la, lb;
  while (true) {
    const bool ga = static_cast<bool>(std::getline(ia, la));
    const bool gb = static_cast<bool>(std::getline(ib, lb));
    if (!ga && !gb) return "";
    if (la != lb || ga != gb) return fmt::format("'{}' vs '{}'", ga ? la : "", gb ? lb : "");
  }
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

struct NamedParams {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
};

NamedParams named_parameters(const torch::nn::Module& m) {
  NamedParams out;
  for (const auto& item : m.named_parameters()) {
    out.names.push_back(item.key());
    out.tensors.push_back(item.value());
  }
  return out;
}

// Everything a checkpoint holds beyond the config, in one place for save and load.
struct TrainCounters {
  int64_t step = 0;
  int64_t images_seen = 0;
  int64_t data_position = 0;  // next global sample position of the data stream
  int64_t nonfinite_in_row = 0;
  int64_t skipped = 0;
};

std::string ema_name(const Ema& ema, const std::string& param) {
  return fmt::format("ema_{}/{}", ema.rate(), param);
}

CheckpointState make_checkpoint_state(const NamedParams& params, const std::vector<Ema>& emas,
                                      torch::optim::AdamW& optimizer, const TrainCounters& n,
                                      uint64_t seed) {
  CheckpointState state;
  state.step = n.step;
  for (size_t i = 0; i < params.tensors.size(); ++i)
    state.tensors.emplace_back("model/" + params.names[i], params.tensors[i].detach().contiguous());
  for (const auto& ema : emas)
    for (size_t i = 0; i < params.tensors.size(); ++i)
      state.tensors.emplace_back(ema_name(ema, params.names[i]), ema.shadow()[i]);
  for (size_t i = 0; i < params.tensors.size(); ++i) {
    auto it = optimizer.state().find(params.tensors[i].unsafeGetTensorImpl());
    if (it == optimizer.state().end()) continue;  // no update yet
    auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
    const auto prefix = "adam/" + params.names[i];
    state.tensors.emplace_back(prefix + "/step", torch::tensor({s.step()}, torch::kLong));
    state.tensors.emplace_back(prefix + "/exp_avg", s.exp_avg());
    state.tensors.emplace_back(prefix + "/exp_avg_sq", s.exp_avg_sq());
  }
  state.meta_json = nlohmann::json{{"step", n.step},
                                   {"images_seen", n.images_seen},
                                   {"data_position", n.data_position},
                                   {"seed", seed},
                                   {"nonfinite_in_row", n.nonfinite_in_row},
                                   {"skipped_steps", n.skipped}}
                        .dump();
  return state;
}

// The inverse of make_checkpoint_state; every mismatch names the folder and the tensor.
TrainCounters restore_checkpoint_state(const LoadedCheckpoint& loaded, const NamedParams& params,
                                       std::vector<Ema>& emas, torch::optim::AdamW& optimizer,
                                       uint64_t seed) {
  std::map<std::string, at::Tensor> by_name(loaded.state.tensors.begin(), loaded.state.tensors.end());
  const auto take = [&](const std::string& name, const at::Tensor& like) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw Error(fmt::format("{}: checkpoint lacks tensor '{}'", loaded.dir, name));
    if (like.defined() && (it->second.sizes() != like.sizes() || it->second.scalar_type() != like.scalar_type()))
      throw Error(fmt::format("{}: tensor '{}' is {} [{}], the model needs {} [{}]", loaded.dir, name,
                              c10::toString(it->second.scalar_type()), fmt::join(it->second.sizes(), ", "),
                              c10::toString(like.scalar_type()), fmt::join(like.sizes(), ", ")));
    return it->second;
  };
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.tensors.size(); ++i) {
    const auto& p = params.tensors[i];
    p.copy_(take("model/" + params.names[i], p));
    for (auto& ema : emas) ema.shadow()[i].copy_(take(ema_name(ema, params.names[i]), p));
    const auto prefix = "adam/" + params.names[i];
    if (!by_name.count(prefix + "/step")) continue;
    auto state = std::make_unique<torch::optim::AdamWParamState>();
    state->step(take(prefix + "/step", {}).item<int64_t>());
    state->exp_avg(take(prefix + "/exp_avg", p).clone());
    state->exp_avg_sq(take(prefix + "/exp_avg_sq", p).clone());
    optimizer.state()[p.unsafeGetTensorImpl()] = std::move(state);
  }
  TrainCounters n;
  try {
    const auto meta = nlohmann::json::parse(loaded.state.meta_json);
    n.step = meta.at("step").get<int64_t>();
    n.images_seen = meta.at("images_seen").get<int64_t>();
    n.data_position = meta.at("data_position").get<int64_t>();
    n.nonfinite_in_row = meta.at("nonfinite_in_row").get<int64_t>();
    n.skipped = meta.at("skipped_steps").get<int64_t>();
    const auto written_seed = meta.at("seed").get<uint64_t>();
    if (written_seed != seed)
      throw Error(fmt::format("{}: written with --seed {}, this run has --seed {}", loaded.dir, written_seed, seed));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: manifest meta data: {}", loaded.dir, e.what()));
  }
  return n;
}

// Rank 0 picks the checkpoint and every rank loads that one, so ranks cannot disagree (a stale
// file-system cache on one node, a checkpoint finishing meanwhile).
std::optional<std::string> agree_on_checkpoint(MPI_Comm comm, const std::string& run_dir) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::string chosen;
  if (rank == 0) chosen = find_checkpoint(run_dir).value_or("");
  int length = static_cast<int>(chosen.size());
  MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT, 0, comm));
  chosen.resize(static_cast<size_t>(length));
  MPI_CHECK(MPI_Bcast(chosen.data(), length, MPI_CHAR, 0, comm));
  if (chosen.empty()) return std::nullopt;
  return chosen;
}


void set_lr(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

}  // namespace

void request_stop() { g_stop_requested.store(true); }

void install_stop_signal_handlers() {
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
}

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
  validate_train_config(config_, world);
  auto& c = config_;
  const auto& run_dir = c.checkpoint.out;
  if (c.optim.threads > 0) torch::set_num_threads(c.optim.threads);

  // --- data and model shapes -----------------------------------------------------------------
  const DatasetInfo info = probe_dataset(c.data.path);
  validate_data_fits_model(c, info);
  apply_data_shape(c, info.kind == DataKind::kImages
                         ? std::vector<int64_t>{info.sample_shape[2], info.sample_shape[0], info.sample_shape[1]}
                         : std::vector<int64_t>{info.sample_shape[0]},
                   info.num_classes);
  const auto& sample_shape = c.sample_shape;
  const int64_t num_classes = c.num_classes;
  // The resolved text also records what came from the data.
  c.resolved_text += fmt::format("[derived]\nsample-shape = {}\nnum-classes = {}\nworld-size = {}\n",
                                 fmt::join(sample_shape, ","), num_classes, world);

  // --- model, optimiser, EMA ------------------------------------------------------------------
  std::unique_ptr<TrainingObjective> denoising;
  if (!objective_) {
    denoising = std::make_unique<DenoisingObjective>(
        NoiseSchedule::from_config(c.diffusion.schedule),
        LossConfig{c.diffusion.prediction, c.diffusion.learned_variance, c.diffusion.vlb_weight});
  }
  TrainingObjective& objective = objective_ ? *objective_ : *denoising;
  torch::manual_seed(c.optim.seed);
  auto model = make_denoiser(c.model);
  objective.initialize(*model);
  auto params = named_parameters(*model);
  {
    // Every rank starts from rank 0's weights, whatever its own initialisation did.
    torch::NoGradGuard no_grad;
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

  // --- run folder and resume: refuse another model's folder before writing anything ----------
  const std::string config_path = run_dir + "/config.ini";
  if (rank == 0) {
    std::ifstream existing(config_path);
    if (existing) {
      const std::string old((std::istreambuf_iterator<char>(existing)), std::istreambuf_iterator<char>());
      const auto diff = first_difference(model_identity(old), model_identity(c.resolved_text));
      if (!diff.empty())
        throw Error(fmt::format("{}: this run folder holds another model ({}); use a new --out",
                                config_path, diff));
    }
  }
  TrainCounters n;
  if (const auto found = agree_on_checkpoint(comm_, run_dir)) {
    const auto loaded = read_checkpoint(*found);
    const auto diff = first_difference(model_identity(loaded.config_text), model_identity(c.resolved_text));
    if (!diff.empty())
      throw Error(fmt::format("{}: checkpoint of another model config ({})", loaded.dir, diff));
    n = restore_checkpoint_state(loaded, params, emas, optimizer, c.optim.seed);
    log0("[ckpt] resumed from {} (step {}, written by {} rank(s))", loaded.dir, n.step,
         loaded.written_by_world_size);
  }
  if (rank == 0) {
    std::filesystem::create_directories(run_dir);
    write_file_atomic(config_path, c.resolved_text);
    log0("[train] resolved config (saved to {}):\n{}", config_path, c.resolved_text);
  }
  log0("[train] {} with {} parameters on {} rank(s), global batch {} ({} per rank)", c.model.kind,
       count_parameters(*model), world, c.optim.batch_size, c.optim.batch_size / world);

  const auto save = [&]() {
    CheckpointWriteOptions options;
    options.keep_last = c.checkpoint.keep;
    options.config_text = c.resolved_text;
    return write_checkpoint(comm_, run_dir, make_checkpoint_state(params, emas, optimizer, n, c.optim.seed),
                            options);
  };

  TrainResult result;
  if (n.step >= c.optim.steps) {
    log0("[train] already at step {} of {}: nothing to do", n.step, c.optim.steps);
    result.final_step = n.step;
    result.skipped_steps = n.skipped;
    return result;
  }

  // --- data stream, gradient reduction ----------------------------------------------------------
  ShardReaderConfig reader_config;
  reader_config.path = c.data.path;
  reader_config.global_batch = c.optim.batch_size;
  reader_config.rank = rank;
  reader_config.world_size = world;
  reader_config.seed = c.optim.seed;
  reader_config.start_position = n.data_position;
  reader_config.random_flip = c.data.random_flip;
  reader_config.memory_limit_bytes = c.data.memory_limit_mb << 20;
  ShardReader reader(reader_config);
  GradBucketerConfig bucket_config;
  bucket_config.bucket_bytes = c.optim.bucket_mb << 20;
  GradBucketer bucketer(communicator_, params.tensors, bucket_config);

  const int64_t local_batch = c.optim.batch_size / world;
  const int64_t micro = c.optim.micro_batch > 0 ? c.optim.micro_batch : local_batch;
  const int64_t T = c.diffusion.schedule.timesteps;
  const std::string metrics_path = run_dir + "/metrics.jsonl";

  model->train();
  auto clock_start = std::chrono::steady_clock::now();
  auto window_start = clock_start;
  int64_t window_images = 0;
  const int64_t first_step = n.step;

  while (n.step < c.optim.steps) {
    // Dropout draws come from LibTorch's generator: reseed it per (seed, step, rank).
    torch::manual_seed(stream_key(c.optim.seed, RngPurpose::kDropout,
                                  {static_cast<uint64_t>(n.step), static_cast<uint64_t>(rank)}));
    ShardBatch batch = reader.next();
    const auto draws = draw_training_noise(c.optim.seed, n.step, batch.positions, sample_shape,
                                           objective.timestep_draws(), c.diffusion.p_uncond);
    optimizer.zero_grad();
    double loss_sum = 0;
    std::array<double, 8> quarter{};  // loss sums and counts per quarter of the t range
    for (int64_t begin = 0; begin < local_batch; begin += micro) {
      const int64_t end = begin + micro;
      const auto x0 = batch.x.slice(0, begin, end);  // [m, …]
      const auto draw = draws.t.slice(0, begin, end);
      const auto eps = draws.eps.slice(0, begin, end);
      at::Tensor y;
      if (num_classes > 0)
        y = torch::where(draws.drop_label.slice(0, begin, end), torch::full_like(batch.labels.slice(0, begin, end), num_classes),
                         batch.labels.slice(0, begin, end));
      const auto terms = objective.losses(*model, x0, y, draw, eps);  // [m]
      const auto& t = terms.t;
      // Each rank minimises its local mean; the bucketer averages over ranks.
      if (end >= local_batch) bucketer.prepare_for_backward();
      (terms.loss.sum() / static_cast<double>(local_batch)).backward();
      if (end >= local_batch) bucketer.finish();
      const auto losses = terms.loss.detach().to(torch::kFloat64);
      loss_sum += losses.sum().item<double>();
      const auto q = torch::div(t * 4, T, "floor").clamp_max(3);  // quarter of the t range
      for (int k = 0; k < 4; ++k) {
        const auto mask = q == k;
        quarter[k] += losses.masked_select(mask).sum().item<double>();
        quarter[4 + k] += static_cast<double>(mask.sum().item<int64_t>());
      }
    }

    // Gradients are identical on every rank now, so every rank takes the same decision.
    const double lr = c.optim.lr * (c.optim.warmup > 0 ? std::min(1.0, double(n.step + 1) / c.optim.warmup) : 1.0);
    set_lr(optimizer, lr);
    const double max_norm = c.optim.grad_clip > 0 ? c.optim.grad_clip : std::numeric_limits<double>::infinity();
    const double grad_norm = torch::nn::utils::clip_grad_norm_(params.tensors, max_norm);
    if (std::isfinite(grad_norm)) {
      optimizer.step();
      for (auto& ema : emas) ema.update(params.tensors);
      n.nonfinite_in_row = 0;
    } else {
      ++n.skipped;
      if (++n.nonfinite_in_row >= c.optim.max_nonfinite)
        throw Error(fmt::format("step {}: {} non-finite gradient norms in a row (--max-nonfinite); "
                                "lower --lr or check the data",
                                n.step, n.nonfinite_in_row));
      log0("[train] step {}: non-finite gradient norm, update skipped ({} in a row)", n.step,
           n.nonfinite_in_row);
    }
    ++n.step;
    n.images_seen += c.optim.batch_size;
    n.data_position = reader.next_position();
    window_images += c.optim.batch_size;

    if (n.step % c.logging.log_every == 0 || n.step == c.optim.steps) {
      const double global_loss = communicator_.all_reduce_sum(loss_sum) / c.optim.batch_size;
      std::array<double, 8> q{};
      for (int k = 0; k < 8; ++k) q[k] = communicator_.all_reduce_sum(quarter[k]);
      const auto now = std::chrono::steady_clock::now();
      const double window_s = std::chrono::duration<double>(now - window_start).count();
      const double images_per_s = window_images / std::max(window_s, 1e-9);
      const double elapsed = std::chrono::duration<double>(now - clock_start).count();
      const double eta = elapsed / double(n.step - first_step) * double(c.optim.steps - n.step);
      log0("[train] step {}/{} loss {:.5f} grad-norm {:.3f} lr {:.2e} {:.0f} img/s ETA {}", n.step,
           c.optim.steps, global_loss, grad_norm, lr, images_per_s, format_duration(eta));
      if (rank == 0) {
        nlohmann::json record = {{"step", n.step},          {"loss", global_loss},
                                 {"grad_norm", grad_norm},    {"lr", lr},
                                 {"images_per_s", images_per_s}, {"images_seen", n.images_seen},
                                 {"skipped_steps", n.skipped}};
        std::vector<double> per_quarter;
        for (int k = 0; k < 4; ++k) per_quarter.push_back(q[4 + k] > 0 ? q[k] / q[4 + k] : 0.0);
        record["loss_per_t_quarter"] = per_quarter;
        std::ofstream metrics(metrics_path, std::ios::app);
        if (!(metrics << record.dump() << "\n"))
          throw Error(fmt::format("{}: cannot append the metrics record", metrics_path));
      }
      window_start = now;
      window_images = 0;
    }

    // A stop request on any rank (SIGTERM/SIGUSR1 before a time limit) stops every rank here.
    const bool stop = communicator_.all_reduce_max(g_stop_requested.load() ? 1.0 : 0.0) > 0;
    if (stop || n.step % c.checkpoint.checkpoint_every == 0 || n.step == c.optim.steps)
      result.last_checkpoint = save();
    if (stop) {
      log0("[train] stop requested: checkpoint written at step {}, exiting", n.step);
      g_stop_requested.store(false);  // handled: a later run in this process starts afresh
      result.stopped_by_signal = true;
      break;
    }
  }
  result.final_step = n.step;
  result.skipped_steps = n.skipped;
  return result;
}

}  // namespace diffusion
