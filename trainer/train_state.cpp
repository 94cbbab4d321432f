// Checkpoint state of a training run (see train_state.h).
#include "trainer/train_state.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "core/base/error.h"
#include "core/base/log.h"

namespace diffusion {
namespace {

std::string ema_name(const Ema& ema, const std::string& param) {
  return fmt::format("ema_{}/{}", ema.tag(), param);
}

}  // namespace

std::string model_identity(const std::string& resolved_text) {
  std::string out;
  bool keep = false;
  std::istringstream in(resolved_text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '[') keep = line == "[model]" || line == "[diffusion]" || line == "[distilled]";
    // "objective = denoise" is the default that folders written before the option lack.
    if (keep && !line.empty() && line != "objective = denoise") out += line + "\n";
  }
  return out;
}

std::string runtime_setting(const std::string& resolved_text, const std::string& key, const std::string& fallback) {
  std::istringstream in(resolved_text);
  bool runtime = false;
  const std::string prefix = key + " = ";
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '[') runtime = line == "[runtime]";
    else if (runtime && line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
  }
  return fallback;
}

void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to, const std::string& what) {
  std::map<std::string, at::Tensor> source;
  for (const auto& item : from.named_parameters()) source.emplace(item.key(), item.value());
  torch::NoGradGuard no_grad;
  for (auto& item : to.named_parameters()) {
    const auto it = source.find(item.key());
    if (it == source.end() || it->second.sizes() != item.value().sizes())
      throw Error(fmt::format("{}: the student's parameter '{}' has no match in the teacher", what, item.key()));
    item.value().copy_(it->second);
  }
}

NamedParams named_parameters(const torch::nn::Module& m) {
  NamedParams out;
  for (const auto& item : m.named_parameters()) {
    out.names.push_back(item.key());
    out.tensors.push_back(item.value());
  }
  return out;
}

CheckpointState make_ema_snapshot_state(const NamedParams& params, const std::vector<Ema>& emas, int64_t step) {
  CheckpointState state;
  state.step = step;
  for (const auto& ema : emas)
    if (ema.is_power())
      for (size_t i = 0; i < params.tensors.size(); ++i)
        state.tensors.emplace_back(ema_name(ema, params.names[i]), ema.shadow()[i]);
  state.meta_json = nlohmann::json{{"step", step}}.dump();
  return state;
}

void remove_snapshots_after(const std::string& snapshot_dir, int64_t step) {
  for (const auto& snapshot : complete_checkpoints(snapshot_dir)) {
    if (snapshot.step <= step) continue;
    log0("[ckpt] removing EMA snapshot {}: past the step this run starts from ({})", snapshot.path, step);
    std::filesystem::remove_all(snapshot.path);
  }
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
    // Checkpoints hold CPU tensors; the optimiser state lives with its parameter.
    state->exp_avg(take(prefix + "/exp_avg", p).to(p.device(), /*non_blocking=*/false, /*copy=*/true));
    state->exp_avg_sq(take(prefix + "/exp_avg_sq", p).to(p.device(), /*non_blocking=*/false, /*copy=*/true));
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

}  // namespace diffusion
