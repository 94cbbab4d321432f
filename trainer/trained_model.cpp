// Loading a trained denoiser from a checkpoint (see trained_model.h).
#include "trainer/trained_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "core/io/checkpoint.h"
#include "core/base/error.h"
#include "trainer/train_options.h"
#include "trainer/train_state.h"
#include "core/base/text.h"

namespace diffusion {
namespace fs = std::filesystem;
namespace {

// The EMA tags a checkpoint holds, as written in its tensor names ("ema_0.999/...",
// "ema_sigma-rel-0.05/...").
std::vector<std::string> ema_tags_in(const CheckpointState& state) {
  std::vector<std::string> tags;
  for (const auto& [name, tensor] : state.tensors) {
    if (name.rfind("ema_", 0) != 0) continue;
    const auto tag = name.substr(4, name.find('/') - 4);
    if (std::find(tags.begin(), tags.end(), tag) == tags.end()) tags.push_back(tag);
  }
  return tags;
}

// The tag to load, or a power tag the checkpoint lacks (then built post hoc).
std::string choose_ema(const std::string& requested, const std::vector<std::string>& tags,
                       const std::string& dir, const std::string& what) {
  if (requested == "none") return "none";
  std::vector<std::string> rates, powers;
  for (const auto& t : tags) (parse_power_ema_tag(t) > 0 ? powers : rates).push_back(t);
  if (const double sigma_rel = parse_power_ema_tag(requested); sigma_rel > 0) {
    for (const auto& p : powers)
      if (std::abs(parse_power_ema_tag(p) - sigma_rel) < 1e-12) return p;
    return power_ema_tag(sigma_rel);
  }
  if (tags.empty()) {
    if (requested.empty()) return "none";  // a run trained without EMA: its raw weights
    throw Error(fmt::format("{}: ema {}: checkpoint {} holds no EMA weights (use none)", what, requested, dir));
  }
  if (requested.empty()) {  // the slowest: the highest rate, else the widest power EMA
    if (!rates.empty())
      return *std::max_element(rates.begin(), rates.end(),
                               [](const auto& a, const auto& b) { return std::stod(a) < std::stod(b); });
    return *std::max_element(powers.begin(), powers.end(), [](const auto& a, const auto& b) {
      return parse_power_ema_tag(a) < parse_power_ema_tag(b);
    });
  }
  for (const auto& r : rates)
    if (std::abs(std::stod(r) - std::stod(requested)) < 1e-12) return r;
  throw Error(fmt::format("{}: ema {}: checkpoint {} holds EMAs {} (or use none, or sigma-rel-S)", what, requested,
                          dir, fmt::join(tags, ", ")));
}

// EDM2's post-hoc EMA: the weights of the power EMA `tag` at the checkpoint's step, as the
// least-squares combination of the power EMAs the checkpoint holds and those of every earlier
// snapshot in RUN/ema-snapshots. Returns the tensors under "ema_<tag>/…".
std::map<std::string, at::Tensor> posthoc_ema(const LoadedCheckpoint& ckpt, const std::string& tag,
                                              const std::string& what, std::string& note) {
  const double sigma_rel = parse_power_ema_tag(tag);
  if (!(sigma_rel < kMaxPowerEmaSigmaRel))
    throw Error(fmt::format("{}: ema {}: sigma_rel must be in (0, {})", what, tag, kMaxPowerEmaSigmaRel));
  // RUN/checkpoints/step-X, however the folder was spelled (relative, trailing slash).
  fs::path step_dir = fs::absolute(ckpt.dir).lexically_normal();
  if (step_dir.filename().empty()) step_dir = step_dir.parent_path();
  const fs::path snapshot_dir = step_dir.parent_path().parent_path() / kEmaSnapshotFolder;
  std::vector<LoadedCheckpoint> snapshots;
  for (const auto& folder : complete_checkpoints(snapshot_dir.string())) {
    // The checkpoint's own EMAs stand for its step; later snapshots are not read at all.
    if (folder.step >= ckpt.step) continue;
    LoadedCheckpoint snap = read_checkpoint(folder.path);
    const auto diff = first_line_difference(model_identity(snap.config_text), model_identity(ckpt.config_text));
    if (!diff.empty())
      throw Error(fmt::format("{}: ema {}: snapshot {} belongs to another model config ({})", what, tag, snap.dir,
                              diff));
    snapshots.push_back(std::move(snap));
  }
  // Every power EMA of every source: its profile and where its tensors are.
  struct Input {
    PowerProfile profile;
    std::string prefix;
    const CheckpointState* state;
    std::string dir;
  };
  std::vector<Input> inputs;
  const auto add_inputs = [&](const LoadedCheckpoint& source) {
    for (const auto& t : ema_tags_in(source.state))
      if (const double s = parse_power_ema_tag(t); s > 0)
        inputs.push_back({{double(source.step), power_ema_gamma(s)}, "ema_" + t + "/", &source.state, source.dir});
  };
  for (const auto& snap : snapshots) add_inputs(snap);
  add_inputs(ckpt);
  if (inputs.empty())
    throw Error(fmt::format("{}: ema {}: checkpoint {} holds no power-function EMAs and {} no snapshots to rebuild "
                            "it from (train with --ema-sigma-rels and --ema-snapshot-every)",
                            what, tag, ckpt.dir, snapshot_dir.string()));
  if (snapshots.empty())
    throw Error(fmt::format("{}: ema {}: {} holds no EMA snapshots before step {} to rebuild it from (train with "
                            "--ema-snapshot-every); the checkpoint keeps {}",
                            what, tag, snapshot_dir.string(), ckpt.step, fmt::join(ema_tags_in(ckpt.state), ", ")));
  std::vector<PowerProfile> profiles;
  for (const auto& in : inputs) profiles.push_back(in.profile);
  const PosthocEmaFit fit = posthoc_ema_fit(profiles, {double(ckpt.step), power_ema_gamma(sigma_rel)});
  double coefficient_sum = 0;
  for (double c : fit.coefficients) coefficient_sum += std::abs(c);
  note = fmt::format("post-hoc EMA from {} power-EMA profiles ({} snapshots in {}), profile error {:.2g}, "
                     "sum |c| {:.3g}",
                     inputs.size(), snapshots.size(), snapshot_dir.string(), fit.relative_error, coefficient_sum);
  // A profile the snapshots cannot represent (too narrow for their spacing, or only old ones)
  // would give weights that are no EMA of this run at all.
  constexpr double kMaxProfileError = 0.1;
  if (fit.relative_error > kMaxProfileError)
    throw Error(fmt::format("{}: ema {}: the snapshots in {} cannot represent it: profile error {:.3g} > {} ({}); "
                            "snapshot more often, or choose a width nearer the kept ones",
                            what, tag, snapshot_dir.string(), fit.relative_error, kMaxProfileError, note));

  std::map<std::string, at::Tensor> out;
  std::vector<std::map<std::string, at::Tensor>> by_name(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    for (const auto& [name, tensor] : inputs[i].state->tensors)
      if (name.rfind(inputs[i].prefix, 0) == 0) by_name[i].emplace(name.substr(inputs[i].prefix.size()), tensor);
  for (const auto& [param, first] : by_name.front()) {
    at::Tensor sum = torch::zeros(first.sizes(), first.options().dtype(torch::kFloat64));  // in float64: the
    for (size_t i = 0; i < inputs.size(); ++i) {  // coefficients alternate in sign
      const auto it = by_name[i].find(param);
      if (it == by_name[i].end())
        throw Error(fmt::format("{}: ema {}: no tensor '{}{}' in {}", what, tag, inputs[i].prefix, param,
                                inputs[i].dir));
      sum.add_(it->second.to(torch::kFloat64), fit.coefficients[i]);
    }
    out.emplace("ema_" + tag + "/" + param, sum.to(first.dtype()));
  }
  return out;
}

}  // namespace

TrainedModel load_trained_model(const std::string& checkpoint, const std::string& ema,
                                const std::string& what) {
  std::error_code ec;
  if (!fs::is_directory(checkpoint, ec)) throw Error(fmt::format("{}: {} is not a folder", what, checkpoint));
  const auto found = find_checkpoint(checkpoint);
  if (!found)
    throw Error(fmt::format("{}: {} holds no complete checkpoint (no valid manifest.json)", what, checkpoint));
  LoadedCheckpoint ckpt = read_checkpoint(*found);
  TrainedModel m;
  m.checkpoint_dir = fs::absolute(ckpt.dir).lexically_normal().string();
  m.step = ckpt.step;
  m.train = parse_resolved_config(ckpt.config_text, ckpt.dir + "/manifest.json");
  const auto tags = ema_tags_in(ckpt.state);
  m.ema = choose_ema(ema, tags, ckpt.dir, what);
  const std::string prefix = m.ema == "none" ? "model/" : "ema_" + m.ema + "/";

  std::map<std::string, at::Tensor> tensors;
  if (m.ema != "none" && std::find(tags.begin(), tags.end(), m.ema) == tags.end())
    tensors = posthoc_ema(ckpt, m.ema, what, m.ema_note);
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

}  // namespace diffusion
