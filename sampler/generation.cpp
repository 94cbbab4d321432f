// The sampling job (see generation.h). Order of work, and why:
//   1. every rank reads and checks the checkpoint and the settings: bad input fails before
//      anything is written;
//   2. rank 0 owns DIR/manifest.json: it refuses a folder holding another command's output
//      and records this command's settings before any shard exists; the other ranks wait for
//      its decision (broadcast), so no shard is written into a refused folder;
//   3. each rank continues its shard from the rows it records as complete;
//   4. after a barrier rank 0 checks every shard's record, writes samples.h5 (the virtual
//      dataset), grid.png, and marks the manifest complete.
#include "sampler/generation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "core/denoiser.h"
#include "core/error.h"
#include "core/log.h"
#include "core/mpi_session.h"
#include "core/samplers.h"
#include "core/schedule.h"
#include "sampler/sample_shard.h"
#include "trainer/train_options.h"

namespace diffusion {
namespace fs = std::filesystem;
using json = nlohmann::json;
namespace {

constexpr const char* kManifestName = "manifest.json";
constexpr const char* kSamplesName = "samples.h5";
constexpr int64_t kGridMax = 64;
// LibTorch's CPU GEMM takes another code path, with other rounding, for fewer than 4 rows; a
// forward pass on fewer rows than this is padded, so a sample's arithmetic does not depend on
// how many samples share its batch (the tail batch of a rank) and outputs stay bit-identical
// across W and --batch-size.
constexpr int64_t kMinForwardRows = 16;

struct LoadedModel {
  std::string checkpoint_dir;
  int64_t step = 0;
  std::string ema;  // rate as stored in the tensor names, or "none"
  TrainConfig train;
  std::shared_ptr<DenoiserImpl> net;
};

// The EMA rates a checkpoint holds, as written in its tensor names ("ema_0.999/...").
std::vector<std::string> ema_rates_in(const CheckpointState& state) {
  std::vector<std::string> rates;
  for (const auto& [name, tensor] : state.tensors) {
    if (name.rfind("ema_", 0) != 0) continue;
    const auto rate = name.substr(4, name.find('/') - 4);
    if (std::find(rates.begin(), rates.end(), rate) == rates.end()) rates.push_back(rate);
  }
  return rates;
}

std::string choose_ema(const std::string& requested, const std::vector<std::string>& rates,
                       const std::string& dir) {
  if (requested == "none") return "none";
  if (rates.empty()) {
    if (requested.empty()) return "none";  // a run trained without EMA: its raw weights
    throw Error(fmt::format("option --ema {}: checkpoint {} holds no EMA weights (use --ema none)", requested, dir));
  }
  if (requested.empty())
    return *std::max_element(rates.begin(), rates.end(),
                             [](const auto& a, const auto& b) { return std::stod(a) < std::stod(b); });
  for (const auto& r : rates)
    if (std::abs(std::stod(r) - std::stod(requested)) < 1e-12) return r;
  throw Error(fmt::format("option --ema {}: checkpoint {} holds EMA rates {} (or use none)", requested, dir,
                          fmt::join(rates, ", ")));
}

LoadedModel load_model(const SampleConfig& c) {
  std::error_code ec;
  if (!fs::is_directory(c.checkpoint, ec))
    throw Error(fmt::format("option --checkpoint: {} is not a folder", c.checkpoint));
  const auto found = find_checkpoint(c.checkpoint);
  if (!found)
    throw Error(fmt::format("option --checkpoint: {} holds no complete checkpoint (no valid {})", c.checkpoint,
                            kManifestName));
  LoadedCheckpoint ckpt = read_checkpoint(*found);
  LoadedModel m;
  m.checkpoint_dir = fs::absolute(ckpt.dir).lexically_normal().string();
  m.step = ckpt.step;
  m.train = parse_resolved_config(ckpt.config_text, ckpt.dir + "/" + kManifestName);
  m.ema = choose_ema(c.ema, ema_rates_in(ckpt.state), ckpt.dir);
  const std::string prefix = m.ema == "none" ? "model/" : "ema_" + m.ema + "/";

  std::map<std::string, at::Tensor> tensors;
  for (auto& [name, tensor] : ckpt.state.tensors) tensors.emplace(name, tensor);
  m.net = make_denoiser(m.train.model);
  torch::NoGradGuard no_grad;
  for (auto& item : m.net->named_parameters()) {
    const auto it = tensors.find(prefix + item.key());
    if (it == tensors.end())
      throw Error(fmt::format("{}: no tensor '{}{}' for the model its config describes", ckpt.dir, prefix, item.key()));
    if (it->second.sizes() != item.value().sizes())
      throw Error(fmt::format("{}: tensor '{}' has shape [{}], the model needs [{}]", ckpt.dir, it->first,
                              fmt::join(it->second.sizes(), ", "), fmt::join(item.value().sizes(), ", ")));
    item.value().copy_(it->second);
  }
  m.net->eval();
  return m;
}

// Everything that decides the samples, with the model-dependent defaults resolved. Compared
// against the manifest on a re-run: batch size and threads are left out because they do not
// change any sample.
struct Resolved {
  SamplerConfig sampler;
  bool images = false;
  json settings;
};

Resolved resolve(const SampleConfig& c, const LoadedModel& m, int world_size) {
  const auto& t = m.train;
  const int64_t T = t.diffusion.schedule.timesteps;
  const int64_t C = t.num_classes;
  Resolved r;
  r.images = t.sample_shape.size() == 3;
  auto& s = r.sampler;
  s.kind = parse_sampler_kind(c.sampler);
  s.steps = c.steps.value_or(s.kind == SamplerKind::kDdpm ? T : std::min<int64_t>(50, T));
  if (s.steps > T)
    throw Error(fmt::format("option --steps: {} exceeds the model's T = {} timesteps", s.steps, T));
  s.spacing = c.spacing;
  s.eta = c.eta;
  s.variance = c.variance.value_or(t.diffusion.learned_variance ? VarianceKind::kLearnedRange
                                                                : VarianceKind::kFixedLarge);
  if (s.variance == VarianceKind::kLearnedRange && !t.diffusion.learned_variance)
    throw Error("option --variance learned: this model did not learn its variance (use fixed-large or fixed-small)");
  s.prediction = t.diffusion.prediction;
  s.clip_x0 = c.clip_x0.value_or(r.images);
  s.guidance_scale = c.guidance_scale;
  s.num_classes = C;
  s.seed = c.seed;
  if (C == 0 && c.guidance_scale != 1.0)
    throw Error(fmt::format("option --guidance-scale {}: the model is unconditional (guidance needs a "
                            "class-conditional model)", c.guidance_scale));
  if (C == 0 && c.class_label)
    throw Error(fmt::format("option --class {}: the model is unconditional", *c.class_label));
  if (c.class_label && *c.class_label >= C)
    throw Error(fmt::format("option --class {}: out of range, the model has {} classes (0 … {})", *c.class_label, C,
                            C - 1));
  r.settings = {{"checkpoint", m.checkpoint_dir},
                {"step", m.step},
                {"ema", m.ema},
                {"num_samples", c.num_samples},
                {"seed", c.seed},
                {"sampler", c.sampler},
                {"steps", s.steps},
                {"eta", s.eta},
                {"variance", to_string(s.variance)},
                {"timestep_spacing", to_string(s.spacing)},
                {"clip_x0", s.clip_x0},
                {"guidance_scale", s.guidance_scale},
                {"class", c.class_label ? json(*c.class_label) : json(C > 0 ? "spread" : "none")},
                {"save_float", c.save_float},
                {"world_size", world_size}};
  return r;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: not a readable manifest: {}", path, e.what()));
  }
}

void write_json_atomic(const std::string& path, const json& j) {
  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
    if (!out.flush()) throw Error(fmt::format("{}: cannot write", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error(fmt::format("{}: cannot write: {}", path, std::strerror(errno)));
}

std::string first_difference(const json& old_settings, const json& settings) {
  for (const auto& [key, value] : settings.items()) {
    const auto it = old_settings.find(key);
    if (it == old_settings.end()) return fmt::format("{}: absent there, {} here", key, value.dump());
    if (*it != value) return fmt::format("{}: {} there, {} here", key, it->dump(), value.dump());
  }
  for (const auto& [key, value] : old_settings.items())
    if (!settings.contains(key)) return fmt::format("{}: {} there, absent here", key, value.dump());
  return "";
}

// Rank 0's decision at start: 0 = generate (the folder is new or holds this command's
// unfinished run), 1 = already complete. Throws for a folder that holds anything else.
int prepare_output(const std::string& out, const json& manifest) {
  std::error_code ec;
  const std::string manifest_path = out + "/" + kManifestName;
  if (fs::exists(manifest_path, ec)) {
    const json old = read_json(manifest_path);
    const auto diff = first_difference(old.value("settings", json::object()), manifest["settings"]);
    if (!diff.empty())
      throw Error(fmt::format("{}: this folder holds samples of a different command ({}); use a new --out",
                              manifest_path, diff));
    if (old.value("status", "") == "complete" && fs::exists(out + "/" + kSamplesName, ec)) return 1;
    return 0;
  }
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    throw Error(fmt::format("option --out: {} exists and is not an output folder of diffusion-sample (no {})", out,
                            kManifestName));
  fs::create_directories(out + "/shards", ec);
  if (ec) throw Error(fmt::format("option --out: cannot create {}/shards: {}", out, ec.message()));
  write_json_atomic(manifest_path, manifest);
  return 0;
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}h{:02d}m", s / 3600, (s / 60) % 60) : fmt::format("{}m{:02d}s", s / 60, s % 60);
}

}  // namespace

SampleRange rank_sample_range(int64_t num_samples, int world_size, int rank) {
  return {num_samples * rank / world_size, num_samples * (rank + 1) / world_size};
}

void run_sampling(const SampleConfig& c, MPI_Comm comm) {
  int rank = 0, world = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &world));
  if (c.threads > 0) torch::set_num_threads(c.threads);

  // --- 1. model and settings, checked on every rank before anything is written -------------
  const LoadedModel m = load_model(c);
  const Resolved r = resolve(c, m, world);
  const auto& shape = m.train.sample_shape;  // [C, H, W] or [D]
  const int64_t num_classes = m.train.num_classes;
  ShardLayout layout;
  layout.images = r.images && !c.save_float;
  layout.row_shape = r.images ? std::vector<int64_t>{shape[1], shape[2], shape[0]} : shape;
  layout.has_labels = num_classes > 0;
  std::vector<ShardRef> shards;
  for (int k = 0; k < world; ++k) {
    const auto range = rank_sample_range(c.num_samples, world, k);
    ShardLayout l = layout;
    l.first_index = range.begin;
    l.rows = range.end - range.begin;
    if (l.rows > 0) shards.push_back({shard_relative_path(k, world), l});
  }
  json manifest = {{"format", "diffusion-sample/1"},
                   {"status", "running"},
                   {"settings", r.settings},
                   {"model", {{"checkpoint", m.checkpoint_dir}, {"step", m.step}, {"ema", m.ema},
                              {"kind", m.train.model.kind}}},
                   {"num_samples", c.num_samples},
                   {"world_size", world},
                   {"seed", c.seed},
                   {"batch_size", c.batch_size},
                   {"threads", c.threads},
                   {"sample_shape", shape},
                   {"num_classes", num_classes},
                   {"index_split", "contiguous blocks: rank r holds [floor(rN/W), floor((r+1)N/W))"}};
  for (const auto& s : shards)
    manifest["shards"].push_back({{"file", s.relative_path}, {"first_index", s.layout.first_index},
                                  {"rows", s.layout.rows}});

  // --- 2. rank 0 accepts or refuses the output folder; the others wait for its answer --------
  int state = 0;
  if (rank == 0) state = prepare_output(c.out, manifest);
  MPI_CHECK(MPI_Bcast(&state, 1, MPI_INT, 0, comm));
  if (state == 1) {
    log0("[sample] {} is already complete ({} samples); nothing to do", c.out, c.num_samples);
    return;
  }
  log0("[sample] {} step {} (ema {}), {} samples on {} ranks, {} with {} steps, seed {}", m.checkpoint_dir, m.step,
       m.ema, c.num_samples, world, c.sampler, r.sampler.steps, c.seed);

  // --- 3. this rank's block, continued from its shard's record -------------------------------
  const auto range = rank_sample_range(c.num_samples, world, rank);
  const int64_t rows = range.end - range.begin;
  if (rows > 0) {
    ShardLayout mine = layout;
    mine.first_index = range.begin;
    mine.rows = rows;
    SampleShard shard(c.out + "/" + shard_relative_path(rank, world), mine);
    const int64_t resumed = shard.complete();
    if (resumed > 0) log_rank("[sample] resuming after {} of {} samples", resumed, rows);
    const Sampler sampler(NoiseSchedule::from_config(m.train.diffusion.schedule), r.sampler);
    const DenoiseFn net = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
      const int64_t B = x.size(0);
      if (B >= kMinForwardRows) return m.net->forward(x, t, y);
      // Pad with copies of row 0 (valid inputs), then drop the padding.
      const auto pad = [&](const at::Tensor& v) {
        return v.defined() ? torch::cat({v, v.slice(0, 0, 1).repeat_interleave(kMinForwardRows - B, /*dim=*/0)}) : v;
      };
      return m.net->forward(pad(x), pad(t), pad(y)).slice(0, 0, B);
    };
    const auto start = std::chrono::steady_clock::now();
    auto last_log = start;
    for (int64_t done = resumed; done < rows;) {
      const int64_t b = std::min(c.batch_size, rows - done);
      std::vector<int64_t> indices(static_cast<size_t>(b)), labels;
      for (int64_t k = 0; k < b; ++k) indices[k] = range.begin + done + k;
      at::Tensor y;
      if (num_classes > 0) {
        for (int64_t i : indices) labels.push_back(c.class_label.value_or(i % num_classes));
        y = torch::tensor(labels, torch::kLong);
      }
      at::Tensor x = sampler.sample(net, indices, shape, y);  // [B, C, H, W] or [B, D]
      if (r.images) x = x.permute({0, 2, 3, 1});               // [B, H, W, C]
      if (layout.images)
        x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch::kUInt8);
      x = x.contiguous();
      shard.append(x.data_ptr(), labels.empty() ? nullptr : labels.data(), indices.data(), b);
      done += b;

      const auto now = std::chrono::steady_clock::now();
      if (rank == 0 && (done == rows || now - last_log > std::chrono::seconds(2))) {
        last_log = now;
        // Rank 0 speaks for the job: blocks differ by at most one sample, so its fraction
        // done and its rate times W estimate the whole job's.
        const double secs = std::chrono::duration<double>(now - start).count();
        const double rate = static_cast<double>(done - resumed) / std::max(secs, 1e-9) * world;
        const auto global_done = static_cast<int64_t>(static_cast<double>(done) / rows * c.num_samples);
        log0("[sample] {}/{} samples, {:.1f} samples/s, ETA {}", global_done, c.num_samples, rate,
             format_duration(static_cast<double>(c.num_samples - global_done) / std::max(rate, 1e-9)));
      }
    }
  }

  // --- 4. rank 0 joins the shards once every rank is done ------------------------------------
  MPI_CHECK(MPI_Barrier(comm));
  if (rank != 0) return;
  for (const auto& s : shards) {
    const int64_t complete = shard_rows_complete(c.out + "/" + s.relative_path);
    if (complete != s.layout.rows)
      throw Error(fmt::format("{}/{}: {} of {} rows complete after every rank finished", c.out, s.relative_path,
                              complete, s.layout.rows));
  }
  const std::string samples_path = c.out + "/" + kSamplesName;
  write_virtual_samples(samples_path, shards, num_classes);
  if (layout.images) {
    const int64_t n = std::min(kGridMax, c.num_samples);
    const auto pixels = read_first_images(samples_path, n);
    write_grid_png(c.out + "/grid.png", pixels.data(), n, layout.row_shape[0], layout.row_shape[1],
                   layout.row_shape[2]);
  }
  manifest["status"] = "complete";
  write_json_atomic(c.out + "/" + kManifestName, manifest);
  log0("[sample] wrote {} ({} samples)", samples_path, c.num_samples);
}

}  // namespace diffusion
