// The sampling job (see generation.h). Order of work, and why:
//   1. every rank reads and checks the model, the input files and the settings: bad input
//      fails before anything is written;
//   2. rank 0 of the job (of each array task) owns DIR/manifest.json under DIR/.lock: it
//      refuses a folder holding another command's output and records this command's settings
//      and its task's shards before any shard exists; the other ranks wait for its decision
//      (broadcast), so no shard is written into a refused folder;
//   3. each rank continues its shard from the rows it records as complete;
//   4. after a barrier rank 0 checks its task's shards and marks the task complete; the task
//      that completes the set writes samples.h5 (the virtual dataset over every task's
//      shards), grid.png, and marks the manifest complete.
#include "core/base/durable_file.h"
#include "sampler/generation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <tuple>
#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/text.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"
#ifdef DIFFUSION_WITH_CUDA
#include "core/comm/cuda_runtime.h"
#endif
#include "core/diffusion/samplers.h"
#include "core/diffusion/schedule.h"
#include "core/models/autocast.h"
#include "datasets/dataset_file.h"
#include "sampler/latents_file.h"
#include "sampler/sample_shard.h"
#include "sampler/sampling_model.h"

namespace diffusion {
namespace fs = std::filesystem;
using json = nlohmann::json;
namespace {

constexpr const char* kManifestName = "manifest.json";
constexpr const char* kSamplesName = "samples.h5";
constexpr const char* kLockName = ".lock";
constexpr int64_t kGridMax = 64;
// LibTorch's CPU GEMM takes another code path, with other rounding, for fewer than 4 rows; a
// forward pass on fewer rows than this is padded, so a sample's arithmetic does not depend on
// how many samples share its batch (the tail batch of a rank) and outputs stay bit-identical
// across W and --batch-size.
constexpr int64_t kMinForwardRows = 16;

// Where output row i comes from.
enum class Source { kNoise, kLatents, kInterpolate, kInvert };

// Everything that decides the samples, with the model-dependent defaults resolved. Compared
// against the manifest on a re-run: batch size, threads, W and the array task index are left
// out because they do not change any sample.
struct Resolved {
  SamplerConfig sampler;
  Source source = Source::kNoise;
  int64_t num_samples = 0;
  bool images = false;
  json settings;
};

// `classifier`: --classifier's, or null.
Resolved resolve(const SampleConfig& c, const SamplingModel& m, const GuidanceClassifier* classifier,
                 int64_t input_rows, int rank) {
  const int64_t T = m.schedule.timesteps;
  const int64_t C = m.num_classes;
  Resolved r;
  r.images = m.sample_shape.size() == 3;
  r.source = !c.invert.empty() ? Source::kInvert
             : c.interpolate > 0 ? Source::kInterpolate
             : !c.latents.empty() ? Source::kLatents
                                  : Source::kNoise;
  r.num_samples = c.num_samples;
  if (r.source != Source::kNoise) {
    const std::string& file = r.source == Source::kInvert ? c.invert : c.latents;
    const char* option = r.source == Source::kInvert ? "invert" : "latents";
    int64_t n = input_rows;
    if (r.source == Source::kInterpolate) {
      if (input_rows % 2 != 0)
        throw Error(fmt::format("option --interpolate: {} holds {} latents; interpolation needs pairs (an even count)",
                                file, input_rows));
      n = input_rows / 2 * c.interpolate;
    }
    if (c.num_samples != 0 && c.num_samples != n)
      throw Error(fmt::format("option --num-samples {}: --{} {} defines {} outputs (leave --num-samples out)",
                              c.num_samples, option, file, n));
    r.num_samples = n;
  }
  auto& s = r.sampler;
  s.kind = c.sampler == "auto" ? (m.consistency ? SamplerKind::kConsistency : SamplerKind::kDdim)
                               : parse_sampler_kind(c.sampler);
  // A consistency model's output is f(x, t), not a denoiser's: only consistency sampling reads it.
  if (m.consistency && s.kind != SamplerKind::kConsistency)
    throw Error(fmt::format("option --sampler {}: {} is a consistency model (objective = consistency); it samples with "
                            "--sampler consistency (or auto): 1 step, or --steps K for multistep sampling",
                            c.sampler, m.description));
  if (!m.consistency && s.kind == SamplerKind::kConsistency)
    throw Error(fmt::format("option --sampler consistency: {} is not a consistency model (train one with "
                            "diffusion-train --objective consistency or diffusion-distill --method consistency)",
                            m.description));
  if (m.consistency) {
    if (classifier)
      throw Error(fmt::format("option --classifier: {} is a consistency model; classifier guidance is for DDPM and "
                              "DDIM on a denoiser", m.description));
    if (c.guidance_scale != 1.0)
      throw Error(fmt::format("option --guidance-scale {}: {} is a consistency model{}; sample it with "
                              "--guidance-scale 1",
                              c.guidance_scale, m.description,
                              m.distilled.guidance_scale != 1.0
                                  ? fmt::format(" with guidance {} built in", m.distilled.guidance_scale)
                                  : std::string(" (no guidance was distilled into it)")));
  }
  // A distilled student samples with DDIM on its own grid, which is trailing spacing with its
  // step count (checked here), unless told otherwise.
  const auto& student = m.distilled;
  const int64_t default_steps = student.sampling_steps > 0              ? student.sampling_steps
                                : s.kind == SamplerKind::kDdpm        ? T
                                : s.kind == SamplerKind::kConsistency ? 1
                                                                      : std::min<int64_t>(50, T);
  if (!c.time_points.empty() && s.kind != SamplerKind::kConsistency)
    throw Error(fmt::format("option --time-points: {} is not a consistency model (it samples with --sampler {}); "
                            "chosen time points are for consistency sampling",
                            m.description, to_string(s.kind)));
  s.steps = c.steps.value_or(c.time_points.empty() ? default_steps : static_cast<int64_t>(c.time_points.size()));
  if (s.steps > T)
    throw Error(fmt::format("option --steps: {} exceeds the model's T = {} timesteps", s.steps, T));
  // Consistency sampling starts at σ_max, which trailing spacing visits first at any step count.
  s.spacing = c.spacing.value_or(student.sampling_steps > 0 || s.kind == SamplerKind::kConsistency
                                     ? TimestepSpacing::kTrailing
                                     : TimestepSpacing::kLeading);
  if (student.sampling_steps > 0) {
    if (timestep_spacing(TimestepSpacing::kTrailing, T, student.sampling_steps) != student.timesteps)
      throw Error(fmt::format("{}: the student's recorded grid is not trailing spacing with {} steps", m.description,
                              student.sampling_steps));
    if (classifier)
      throw Error(fmt::format("option --classifier: {} is a distilled student (DDIM on its own {}-step grid); "
                              "classifier guidance is for DDPM and DDIM on an undistilled model",
                              m.description, student.sampling_steps));
    if (c.guidance_scale != 1.0)
      throw Error(fmt::format("option --guidance-scale {}: this distilled student has guidance {} built into it; "
                              "sample it with --guidance-scale 1",
                              c.guidance_scale, student.guidance_scale));
    if (s.kind != SamplerKind::kDdim || s.steps != student.sampling_steps || s.spacing != TimestepSpacing::kTrailing)
      log0("[sample] warning: this student was distilled for DDIM with {} steps on its own grid (trailing); "
           "these settings sample it off that grid",
           student.sampling_steps);
  }
  if (m.consistency) s.consistency_grid = m.distilled.grid;
  s.time_points = c.time_points;
  s.eta = c.eta;
  s.karras = c.karras;
  s.churn = c.churn;
  s.s_tmin = c.s_tmin;
  s.s_tmax = c.s_tmax;
  s.s_noise = c.s_noise;
  if (s.karras && s.steps < 2)
    throw Error(fmt::format("option --karras: needs --steps >= 2 (the grid spans sigma(T-1) to sigma(0)), got {}",
                            s.steps));
  s.variance = c.variance.value_or(m.learned_variance ? VarianceKind::kLearnedRange : VarianceKind::kFixedLarge);
  if (s.variance == VarianceKind::kLearnedRange && !m.learned_variance)
    throw Error("option --variance learned: this model did not learn its variance (use fixed-large or fixed-small)");
  s.prediction = m.prediction;
  s.clip_x0 = c.clip_x0.value_or(r.images);
  s.guidance_scale = c.guidance_scale;
  if (c.guidance_interval) std::tie(s.guidance_sigma_lo, s.guidance_sigma_hi) = *c.guidance_interval;
  s.num_classes = C;
  s.seed = c.seed;
  if (C == 0 && c.guidance_scale != 1.0)
    throw Error(fmt::format("option --guidance-scale {}: the model is unconditional (guidance needs a "
                            "class-conditional model)", c.guidance_scale));
  s.classifier_scale = c.classifier_scale.value_or(1.0);
  // An unconditional model guided by a classifier samples the class --class names; it has no
  // classes of its own to spread.
  if (classifier && C == 0 && !c.class_label)
    throw Error(fmt::format("option --classifier: the model is unconditional; give the class to guide towards with "
                            "--class K (0 … {})", classifier->num_classes - 1));
  if (C == 0 && c.class_label && !classifier)
    throw Error(fmt::format("option --class {}: the model is unconditional", *c.class_label));
  const int64_t label_classes = C > 0 ? C : classifier ? classifier->num_classes : 0;
  if (c.class_label && *c.class_label >= label_classes)
    throw Error(fmt::format("option --class {}: out of range, the {} has {} classes (0 … {})", *c.class_label,
                            C > 0 ? "model" : "classifier", label_classes, label_classes - 1));
  r.settings = {{"model", m.identity},
                {"sample_shape", m.sample_shape},
                {"schedule", to_string(m.schedule.kind)},
                {"timesteps", T},
                {"prediction", to_string(m.prediction)},
                {"num_classes", C},
                {"num_samples", r.num_samples},
                {"seed", c.seed},
                {"sampler", to_string(s.kind)},  // auto resolved, as folders written before it record it
                {"steps", s.steps},
                {"eta", s.eta},
                {"variance", to_string(s.variance)},
                {"timestep_spacing", to_string(s.spacing)},
                {"clip_x0", s.clip_x0},
                {"guidance_scale", s.guidance_scale},
                {"class", c.class_label ? json(*c.class_label) : json(C > 0 ? "spread" : "none")},
                {"save_float", c.save_float},
                {"array_tasks", c.array_tasks}};
  // Recorded only when set (--guidance-interval), so folders written before it existed still resume.
  if (c.guidance_interval)
    r.settings["guidance_interval"] = {s.guidance_sigma_lo,
                                       std::isinf(s.guidance_sigma_hi) ? json("inf") : json(s.guidance_sigma_hi)};
  // Recorded only with a classifier, so folders written before it existed still resume.
  if (classifier) r.settings["classifier"] = {{"model", classifier->identity}, {"scale", s.classifier_scale}};
  if (!s.consistency_grid.empty()) r.settings["consistency_grid"] = s.consistency_grid;
  // Recorded only when chosen, so folders written before --time-points existed still resume.
  if (!s.time_points.empty()) r.settings["time_points"] = s.time_points;
  // The fast samplers' settings are recorded only for them, so folders written before they
  // existed (ddpm, ddim) still resume.
  if (is_fast_sampler(s.kind)) {
    r.settings["karras"] = s.karras;
    if (s.kind == SamplerKind::kEuler || s.kind == SamplerKind::kHeun)
      r.settings["churn"] = {{"s_churn", s.churn},
                             {"s_tmin", s.s_tmin},
                             {"s_tmax", std::isinf(s.s_tmax) ? json("inf") : json(s.s_tmax)},
                             {"s_noise", s.s_noise}};
    if (s.karras) r.settings.erase("timestep_spacing");  // the Karras grid replaces it
  }
  // Every setting of the sampler checked now (its grid and time points included), before anything
  // is written; the error names the model it was checked against.
  try {
    (void)Sampler(NoiseSchedule::from_config(m.schedule), s);
  } catch (const Error& e) {
    throw Error(fmt::format("option {} ({})", e.what(), m.description));
  }
  // Input files by path and content (CRC32, rank 0 only: only its copy is compared).
  const auto file_id = [&](const std::string& path) {
    json id = {{"path", fs::absolute(path).lexically_normal().string()}};
    if (rank == 0) id["crc32"] = fmt::format("{:08x}", file_crc32(path).first);
    return id;
  };
  if (r.source == Source::kInvert) r.settings["invert"] = file_id(c.invert);
  if (r.source == Source::kLatents || r.source == Source::kInterpolate) r.settings["latents"] = file_id(c.latents);
  if (r.source == Source::kInterpolate) r.settings["interpolate"] = c.interpolate;
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


// The first setting (a key of the manifest's "settings") that differs, or "" when none does.
std::string first_setting_difference(const json& old_settings, const json& settings) {
  for (const auto& [key, value] : settings.items()) {
    const auto it = old_settings.find(key);
    if (it == old_settings.end()) return fmt::format("{}: absent there, {} here", key, value.dump());
    if (*it != value) return fmt::format("{}: {} there, {} here", key, it->dump(), value.dump());
  }
  for (const auto& [key, value] : old_settings.items())
    if (!settings.contains(key)) return fmt::format("{}: {} there, absent here", key, value.dump());
  return "";
}

// An exclusive flock on DIR/.lock, held while a task's rank 0 reads or rewrites the manifest
// or samples.h5: array tasks share DIR and may start and finish at the same moment.
class DirLock {
 public:
  explicit DirLock(const std::string& dir) : path_(dir + "/" + kLockName) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(fmt::format("{}: cannot open the lock file: {}", path_, std::strerror(errno)));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd_);
      throw Error(fmt::format("{}: cannot lock: {}", path_, std::strerror(err)));
    }
  }
  ~DirLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

enum class Start { kGenerate, kTaskComplete, kJobComplete };

// Rank 0's decision at start, under the folder's lock: generate (the folder is new or holds
// this command's unfinished run), or this task / the whole job is already complete. Records
// this task (its W and shards) in the manifest. Throws for a folder that holds anything else,
// and for a task resumed with another W (its shards split the block differently).
Start prepare_output(const std::string& out, const json& manifest, const std::string& task_key, const json& task) {
  std::error_code ec;
  const std::string manifest_path = out + "/" + kManifestName;
  // A foreign folder is refused before anything (even the lock file) is written into it.
  if (fs::exists(out, ec) && !fs::exists(manifest_path, ec) && !fs::exists(out + "/" + kLockName, ec) &&
      !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    throw Error(fmt::format("option --out: {} exists and is not an output folder of diffusion-sample (no {})", out,
                            kManifestName));
  fs::create_directories(out, ec);
  if (ec) throw Error(fmt::format("option --out: cannot create {}: {}", out, ec.message()));
  DirLock lock(out);
  json current = manifest;
  if (fs::exists(manifest_path, ec)) {
    current = read_json(manifest_path);
    const auto diff = first_setting_difference(current.value("settings", json::object()), manifest["settings"]);
    if (!diff.empty())
      throw Error(fmt::format("{}: this folder holds samples of a different command ({}); use a new --out",
                              manifest_path, diff));
    if (current.value("status", "") == "complete" && fs::exists(out + "/" + kSamplesName, ec))
      return Start::kJobComplete;
    const auto old = current["tasks"].find(task_key);
    if (old != current["tasks"].end()) {
      if ((*old)["world_size"] != task["world_size"])
        throw Error(fmt::format("{}: task {} was started with {} ranks and is resumed with {}; resume it with {} "
                                "ranks or use a new --out", manifest_path, task_key, (*old)["world_size"].dump(),
                                task["world_size"].dump(), (*old)["world_size"].dump()));
      if ((*old).value("status", "") == "complete") return Start::kTaskComplete;
    }
  }
  current["tasks"][task_key] = task;
  fs::create_directories(out + "/" + task["shard_folder"].get<std::string>(), ec);
  if (ec) throw Error(fmt::format("option --out: cannot create the shard folder in {}: {}", out, ec.message()));
  write_file_atomic(manifest_path, current.dump(2) + "\n");
  return Start::kGenerate;
}

// Shards of task `task` of `tasks` written by `world` ranks: one per rank with samples.
std::vector<ShardRef> task_shards(const ShardLayout& layout, SampleRange task_range, int task, int tasks,
                                  int world) {
  std::vector<ShardRef> shards;
  for (int k = 0; k < world; ++k) {
    const auto range = rank_sample_range(task_range.end - task_range.begin, world, k);
    ShardLayout l = layout;
    l.first_index = task_range.begin + range.begin;
    l.rows = range.end - range.begin;
    if (l.rows > 0) shards.push_back({shard_relative_path(k, world, task, tasks), l});
  }
  return shards;
}

// Rank 0 of a task whose ranks all finished: marks the task complete and, when every task is,
// writes samples.h5 over all their shards (with grid.png) and marks the job complete. Under
// the folder's lock, so of two tasks finishing together exactly one sees the other's record.
void finish_task(const SampleConfig& c, const SamplingModel& m, const ShardLayout& layout, int64_t num_samples,
                 int64_t label_classes, const std::string& task_key) {
  const std::string manifest_path = c.out + "/" + kManifestName;
  DirLock lock(c.out);
  json manifest = read_json(manifest_path);
  manifest["tasks"][task_key]["status"] = "complete";
  std::vector<ShardRef> all;
  int complete_tasks = 0;
  for (const auto& [key, task] : manifest["tasks"].items()) {
    if (task.value("status", "") != "complete") continue;
    ++complete_tasks;
    for (const auto& s : task["shards"]) {
      ShardLayout l = layout;
      l.first_index = s["first_index"].get<int64_t>();
      l.rows = s["rows"].get<int64_t>();
      all.push_back({s["file"].get<std::string>(), l});
    }
  }
  if (complete_tasks < c.array_tasks) {
    write_file_atomic(manifest_path, manifest.dump(2) + "\n");
    log0("[sample] task {} of {} complete; {} of {} tasks done, samples.h5 follows with the last", c.array_task,
         c.array_tasks, complete_tasks, c.array_tasks);
    return;
  }
  std::sort(all.begin(), all.end(),
            [](const ShardRef& a, const ShardRef& b) { return a.layout.first_index < b.layout.first_index; });
  for (const auto& s : all) {
    const int64_t done = shard_rows_complete(c.out + "/" + s.relative_path);
    if (done != s.layout.rows)
      throw Error(fmt::format("{}/{}: {} of {} rows complete in a task recorded as complete", c.out, s.relative_path,
                              done, s.layout.rows));
  }
  const std::string samples_path = c.out + "/" + kSamplesName;
  write_virtual_samples(samples_path, all, label_classes, m.class_names);
  if (layout.images) {
    // Classes spread over the samples (i mod C) make a grid with one column per class;
    // interpolations one row per pair of latents; anything else a square-ish grid.
    int64_t columns = 0, n = std::min(kGridMax, num_samples);
    if (c.interpolate > 0) {
      columns = c.interpolate;
      n = std::min(num_samples, columns * 8);
    } else if (m.num_classes > 0 && !c.class_label && num_samples >= m.num_classes) {
      columns = m.num_classes;
      n = std::min(num_samples, columns * 10) / columns * columns;
    }
    const auto pixels = read_first_images(samples_path, n);
    write_grid_png(c.out + "/grid.png", pixels.data(), n, layout.row_shape[0], layout.row_shape[1],
                   layout.row_shape[2], columns);
  }
  manifest["status"] = "complete";
  write_file_atomic(manifest_path, manifest.dump(2) + "\n");
  log0("[sample] wrote {} ({} samples)", samples_path, num_samples);
}

// Input rows for --latents/--interpolate (a latents file) or --invert (a dataset file),
// read a batch at a time on each rank.
class InputRows {
 public:
  InputRows(const SampleConfig& c, const SamplingModel& m) : shape_(m.sample_shape) {
    if (!c.invert.empty()) {
      data_ = std::make_unique<DatasetReader>(c.invert);
      const auto& info = data_->info();
      const bool image_model = shape_.size() == 3;
      const std::vector<int64_t> want =
          image_model ? std::vector<int64_t>{shape_[1], shape_[2], shape_[0]} : shape_;
      if ((info.kind == DataKind::kImages) != image_model || info.sample_shape != want)
        throw Error(fmt::format("option --invert: {} holds {}; the model needs {} [N, {}]", c.invert, info.describe(),
                                image_model ? "images uint8" : "x float32", fmt::join(want, ", ")));
      rows_ = info.num_samples;
      data_labels_ = info.has_labels && m.num_classes > 0;
      if (data_labels_ && info.num_classes > m.num_classes)
        throw Error(fmt::format("option --invert: {} has {} classes, the model {}", c.invert, info.num_classes,
                                m.num_classes));
    } else if (!c.latents.empty()) {
      latents_ = std::make_unique<LatentsReader>(c.latents, shape_, "latents");
      rows_ = latents_->rows();
    }
  }
  int64_t rows() const { return rows_; }
  bool data_labels() const { return data_labels_; }

  // Rows [begin, end) in the model's layout: [n, C, H, W] (images scaled to [-1, 1]) or [n, D].
  at::Tensor read(int64_t begin, int64_t end) {
    std::vector<int64_t> shape{end - begin};
    shape.insert(shape.end(), shape_.begin(), shape_.end());
    if (latents_) {
      auto x = torch::empty(shape, torch::kFloat32);
      latents_->read(begin, end, x.data_ptr<float>());
      return x;
    }
    if (data_->info().kind == DataKind::kImages) {
      auto u8 = torch::empty({end - begin, shape_[1], shape_[2], shape_[0]}, torch::kUInt8);  // [n, H, W, C]
      data_->read_images_range(begin, end, u8.data_ptr<uint8_t>());
      return (u8.to(torch::kFloat32) / 127.5 - 1.0).permute({0, 3, 1, 2}).contiguous();
    }
    auto x = torch::empty(shape, torch::kFloat32);
    data_->read_vectors_range(begin, end, x.data_ptr<float>());
    return x;
  }
  std::vector<int64_t> labels(int64_t begin, int64_t end) {
    std::vector<int64_t> out(static_cast<size_t>(end - begin));
    data_->read_labels_range(begin, end, out.data());
    return out;
  }

 private:
  std::vector<int64_t> shape_;
  std::unique_ptr<LatentsReader> latents_;
  std::unique_ptr<DatasetReader> data_;
  int64_t rows_ = 0;
  bool data_labels_ = false;
};

// --batch-size auto: 64 on a CPU; on a GPU as many samples as about 60% of the free memory holds,
// from the working memory of one probe forward pass (guidance doubles the rows).
int64_t choose_batch_size(const SampleConfig& c, const DenoiseFn& net, const std::vector<int64_t>& shape,
                          int64_t num_classes, bool guided, const c10::Device& device) {
  constexpr int64_t kCpuBatch = 64, kProbe = 16;
  if (c.batch_size > 0) return c.batch_size;
  if (!device.is_cuda()) return kCpuBatch;
#ifdef DIFFUSION_WITH_CUDA
  const int64_t rows = guided ? 2 * kProbe : kProbe;
  std::vector<int64_t> full{rows};
  full.insert(full.end(), shape.begin(), shape.end());
  const auto on = torch::TensorOptions().device(device);
  torch::NoGradGuard no_grad;
  const std::size_t peak = cuda_peak_bytes_of(device.index(), [&] {
    net(torch::zeros(full, on), torch::zeros({rows}, on.dtype(torch::kLong)),
        num_classes > 0 ? torch::zeros({rows}, on.dtype(torch::kLong)) : at::Tensor());
  });
  const double per_sample = std::max<double>(static_cast<double>(peak) / kProbe, 1.0);
  const double free_bytes = static_cast<double>(use_cuda_device(device.index()).free_bytes);
  const auto fit = static_cast<int64_t>(0.6 * free_bytes / per_sample);
  const int64_t b = std::clamp<int64_t>(fit / kProbe * kProbe, kProbe, 16384);
  log_rank("[sample] --batch-size auto: {} per forward pass ({:.1f} MiB per sample, {:.0f} MiB free on GPU {})", b,
           per_sample / (1 << 20), free_bytes / (1 << 20), device.index());
  return b;
#else
  (void)net, (void)shape, (void)num_classes, (void)guided;
  return kCpuBatch;
#endif
}

}  // namespace

SampleRange rank_sample_range(int64_t num_samples, int world_size, int rank) {
  return {num_samples * rank / world_size, num_samples * (rank + 1) / world_size};
}

void run_sampling(const SampleConfig& c, MPI_Comm comm, const c10::Device& device) {
  int rank = 0, world = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &world));
  if (c.threads > 0) torch::set_num_threads(c.threads);

  // --- 1. device, model, inputs and settings, checked on every rank before anything is written -
  // (A missing checkpoint or a bad input file is found alike on every rank: agreed, reported once.)
  const Precision precision = effective_precision(c.precision, device.type());
  if (device.is_cuda()) {
    // A sample must not depend on which kernels the libraries pick at run time: no cuDNN
    // autotuning, deterministic cuDNN algorithms, cuBLAS with a fixed workspace split.
    setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setBenchmarkCuDNN(false);
    at::globalContext().setDeterministicCuDNN(true);
  }
  if (const auto note = precision_fallback_note(c.precision, device.type()); !note.empty()) log0("[sample] {}", note);
  const SamplingModel m = agreed(comm, "[sample] model", [&] {
    return c.torchscript.path.empty() ? load_checkpoint_model(c, device, precision)
                                      : load_torchscript_model(c.torchscript, device, precision);
  });
  std::optional<GuidanceClassifier> classifier;
  if (!c.classifier.empty())
    classifier = agreed(comm, "[sample] classifier", [&] { return load_guidance_classifier(c, m, device); });
  std::optional<InputRows> input_rows;
  std::optional<Resolved> resolved;
  agree_or_throw(comm, capture_error([&] {
    input_rows.emplace(c, m);
    resolved.emplace(resolve(c, m, classifier ? &*classifier : nullptr, input_rows->rows(), rank));
    // Precision and the device type change the bits of a sample (not W or the batch size).
    resolved->settings["precision"] = to_string(precision);
    resolved->settings["device"] = c10::DeviceTypeName(device.type(), /*lower_case=*/true);
    resolved->sampler.device = device;  // where the sampler draws its keyed noise
  }), "[sample] inputs");
  InputRows& input = *input_rows;
  const Resolved& r = *resolved;
  const int64_t N = r.num_samples;
  const auto& shape = m.sample_shape;  // [C, H, W] or [D]
  const int64_t num_classes = m.num_classes;
  // Samples carry labels when the model is conditional, or a classifier guides them.
  const int64_t label_classes = num_classes > 0 ? num_classes : classifier ? classifier->num_classes : 0;
  const bool inverting = r.source == Source::kInvert;
  ShardLayout layout;
  layout.images = r.images && !c.save_float && !inverting;
  // Latents stay in the model's layout ([C, H, W]) so that --latents reads them back.
  layout.row_shape = r.images && !inverting ? std::vector<int64_t>{shape[1], shape[2], shape[0]} : shape;
  layout.has_labels = label_classes > 0;
  const SampleRange task_range = rank_sample_range(N, c.array_tasks, c.array_task);
  const std::vector<ShardRef> shards = task_shards(layout, task_range, c.array_task, c.array_tasks, world);
  const std::string task_key = std::to_string(c.array_task);
  json task = {{"world_size", world},
               {"batch_size", c.batch_size > 0 ? json(c.batch_size) : json("auto")},
               {"threads", c.threads},
               {"status", "running"},
               {"first_index", task_range.begin},
               {"rows", task_range.end - task_range.begin},
               {"shard_folder", fs::path(shard_relative_path(0, world, c.array_task, c.array_tasks)).parent_path().string()},
               {"shards", json::array()}};
  for (const auto& s : shards)
    task["shards"].push_back({{"file", s.relative_path}, {"first_index", s.layout.first_index},
                              {"rows", s.layout.rows}});
  const json manifest = {{"format", "diffusion-sample/2"},
                         {"status", "running"},
                         {"settings", r.settings},
                         {"num_samples", N},
                         {"seed", c.seed},
                         {"output", inverting ? "latents" : layout.images ? "images" : "x"},
                         {"index_split", "task K of P holds [floor(KN/P), floor((K+1)N/P)); within it rank r of W "
                                         "holds the r-th of W contiguous blocks"},
                         {"tasks", json::object()}};

  // --- 2. rank 0 accepts or refuses the output folder; the others wait for its answer --------
  int state = agreed(comm, "[sample] output folder", [&] {
    return rank == 0 ? static_cast<int>(prepare_output(c.out, manifest, task_key, task)) : 0;
  });
  {
    CollectiveScope scope("output folder broadcast", comm);
    MPI_CHECK(MPI_Bcast(&state, 1, MPI_INT, 0, comm));
  }
  if (static_cast<Start>(state) == Start::kJobComplete) {
    log0("[sample] {} is already complete ({} samples); nothing to do", c.out, N);
    return;
  }
  const std::string task_text =
      c.array_tasks > 1 ? fmt::format(", array task {} of {} (samples {} … {})", c.array_task, c.array_tasks,
                                      task_range.begin, task_range.end - 1)
                        : "";
  if (static_cast<Start>(state) == Start::kTaskComplete) {
    log0("[sample] task {} of {} is already complete", c.array_task, c.array_tasks);
  } else {
    const bool guided_batches = num_classes > 0 && r.sampler.guidance_scale != 1.0;
    log0("[sample] {}: {} samples on {} ranks{}, {} with {} steps{} ({} network evaluations per sample{}), "
         "seed {}, {} on {}",
         m.description, N, world, task_text, to_string(r.sampler.kind), r.sampler.steps, r.sampler.karras ? " on the Karras grid" : "",
         evaluations_per_sample(r.sampler.kind, r.sampler.steps),
         !guided_batches ? ""
         : c.guidance_interval
             ? fmt::format(", doubled batches where {} < sigma <= {}", r.sampler.guidance_sigma_lo, r.sampler.guidance_sigma_hi)
             : ", each on a doubled batch",
         c.seed, to_string(precision), device.str());
    if (classifier)
      log0("[sample] classifier guidance, scale {}: {}", r.sampler.classifier_scale, classifier->description);

    // --- 3. this rank's block, continued from its shard's record -------------------------------
    const auto mine_range = rank_sample_range(task_range.end - task_range.begin, world, rank);
    const int64_t first = task_range.begin + mine_range.begin;
    const int64_t rows = mine_range.end - mine_range.begin;
    const int64_t task_rows = task_range.end - task_range.begin;
    if (rows > 0) {
      ShardLayout mine = layout;
      mine.first_index = first;
      mine.rows = rows;
      SampleShard shard(c.out + "/" + shard_relative_path(rank, world, c.array_task, c.array_tasks), mine);
      const int64_t resumed = shard.complete();
      if (resumed > 0) log_rank("[sample] resuming after {} of {} samples", resumed, rows);
      const Sampler sampler(NoiseSchedule::from_config(m.schedule), r.sampler);
      const DenoiseFn net = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
        const int64_t B = x.size(0);
        if (B >= kMinForwardRows) return m.forward(x, t, y);
        // Pad with copies of row 0 (valid inputs), then drop the padding.
        const auto pad = [&](const at::Tensor& v) {
          return v.defined() ? torch::cat({v, v.slice(0, 0, 1).repeat_interleave(kMinForwardRows - B, /*dim=*/0)}) : v;
        };
        return m.forward(pad(x), pad(t), pad(y)).slice(0, 0, B);
      };
      // The classifier's gradient, padded as `net` is (its backward is row-wise too).
      ClassifierGradFn classifier_grad;
      if (classifier)
        classifier_grad = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
          const int64_t B = x.size(0);
          if (B >= kMinForwardRows) return classifier->grad(x, t, y);
          const auto pad = [&](const at::Tensor& v) {
            return torch::cat({v, v.slice(0, 0, 1).repeat_interleave(kMinForwardRows - B, /*dim=*/0)});
          };
          return classifier->grad(pad(x), pad(t), pad(y)).slice(0, 0, B);
        };
      const int64_t batch_size = choose_batch_size(c, net, shape, num_classes,
                                                   num_classes > 0 && r.sampler.guidance_scale != 1.0, device);
      const auto start = std::chrono::steady_clock::now();
      auto last_log = start;
      for (int64_t done = resumed; done < rows;) {
        const int64_t b = std::min(batch_size, rows - done);
        const int64_t i0 = first + done;
        std::vector<int64_t> indices(static_cast<size_t>(b)), labels;
        for (int64_t k = 0; k < b; ++k) indices[k] = i0 + k;
        at::Tensor y;
        if (label_classes > 0) {
          if (inverting && input.data_labels()) {
            labels = input.labels(i0, i0 + b);
          } else {
            for (int64_t i : indices) labels.push_back(c.class_label.value_or(i % label_classes));
          }
          y = torch::tensor(labels, torch::kLong).to(device);
        }
        at::Tensor x;
        if (inverting) {
          x = sampler.invert(net, input.read(i0, i0 + b).to(device), y);  // [B, C, H, W] or [B, D] latents
        } else {
          at::Tensor x_T;
          if (r.source == Source::kLatents) x_T = input.read(i0, i0 + b);
          if (r.source == Source::kInterpolate) {
            // Output row i is step j = i mod K of pair p = i / K, latents (2p, 2p+1).
            const int64_t K = c.interpolate, p0 = i0 / K, p1 = (i0 + b - 1) / K;
            const auto pairs = input.read(2 * p0, 2 * p1 + 2);
            std::vector<at::Tensor> rows_T;
            for (int64_t i : indices) {
              const int64_t p = i / K - p0, j = i % K;
              rows_T.push_back(slerp(pairs.slice(0, 2 * p, 2 * p + 1), pairs.slice(0, 2 * p + 1, 2 * p + 2),
                                     static_cast<double>(j) / static_cast<double>(K - 1)));
            }
            x_T = torch::cat(rows_T);
          }
          if (x_T.defined()) x_T = x_T.to(device);
          x = sampler.sample(net, indices, shape, y, x_T, classifier_grad).to(torch::kCPU);  // [B, C, H, W] or [B, D]
          if (r.images) x = x.permute({0, 2, 3, 1});        // [B, H, W, C]
          if (layout.images) x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch::kUInt8);
        }
        x = x.to(torch::kCPU).contiguous();
        shard.append(x.data_ptr(), labels.empty() ? nullptr : labels.data(), indices.data(), b);
        done += b;

        const auto now = std::chrono::steady_clock::now();
        if (rank == 0 && (done == rows || now - last_log > std::chrono::seconds(2))) {
          last_log = now;
          // Rank 0 speaks for its task: blocks differ by at most one sample, so its fraction
          // done and its rate times W estimate the task's.
          const double secs = std::chrono::duration<double>(now - start).count();
          const double rate = static_cast<double>(done - resumed) / std::max(secs, 1e-9) * world;
          const auto task_done = static_cast<int64_t>(static_cast<double>(done) / rows * task_rows);
          log0("[sample] {}/{} samples{}, {:.1f} samples/s, ETA {}", task_done, task_rows,
               c.array_tasks > 1 ? fmt::format(" of task {}", c.array_task) : "", rate,
               format_duration(static_cast<double>(task_rows - task_done) / std::max(rate, 1e-9)));
        }
      }
    }
  }

  // --- 4. rank 0 records the task once every rank is done; the last task joins all shards ----
  {
    CollectiveScope scope("sampler barrier", comm);
    MPI_CHECK(MPI_Barrier(comm));
  }
  if (rank != 0) return;
  for (const auto& s : shards) {
    const int64_t complete = shard_rows_complete(c.out + "/" + s.relative_path);
    if (complete != s.layout.rows)
      throw Error(fmt::format("{}/{}: {} of {} rows complete after every rank finished", c.out, s.relative_path,
                              complete, s.layout.rows));
  }
  finish_task(c, m, layout, N, label_classes, task_key);
}

}  // namespace diffusion
