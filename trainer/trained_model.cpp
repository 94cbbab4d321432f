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

namespace diffusion {
namespace fs = std::filesystem;
namespace {

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
                       const std::string& dir, const std::string& what) {
  if (requested == "none") return "none";
  if (rates.empty()) {
    if (requested.empty()) return "none";  // a run trained without EMA: its raw weights
    throw Error(fmt::format("{}: ema {}: checkpoint {} holds no EMA weights (use none)", what, requested, dir));
  }
  if (requested.empty())
    return *std::max_element(rates.begin(), rates.end(),
                             [](const auto& a, const auto& b) { return std::stod(a) < std::stod(b); });
  for (const auto& r : rates)
    if (std::abs(std::stod(r) - std::stod(requested)) < 1e-12) return r;
  throw Error(fmt::format("{}: ema {}: checkpoint {} holds EMA rates {} (or use none)", what, requested, dir,
                          fmt::join(rates, ", ")));
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
  m.ema = choose_ema(ema, ema_rates_in(ckpt.state), ckpt.dir, what);
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

}  // namespace diffusion
