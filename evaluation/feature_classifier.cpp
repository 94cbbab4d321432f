// Training, caching and applying the evaluation classifier (see feature_classifier.h).
#include "core/base/durable_file.h"
#include "evaluation/feature_classifier.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/log.h"

namespace diffusion {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kFeatureDim = 128;   // images: width of the penultimate layer
constexpr int64_t kVectorWidth = 64;   // vectors: width of both hidden layers
constexpr int64_t kMaxHeldoutRows = 10000;
constexpr int kCacheVersion = 1;

// Images: two 3x3 conv + ReLU + 2x2 max-pool stages (16, 32 channels), then a ReLU layer of
// kFeatureDim features. Vectors: inputs standardised with the training rows' mean and std,
// then two ReLU layers of kVectorWidth. The head maps the features to class logits.
struct ClassifierNetImpl : torch::nn::Module {
  ClassifierNetImpl(bool images, const std::vector<int64_t>& shape, int64_t num_classes)
      : images_(images) {
    if (images) {
      const int64_t h = shape[0], w = shape[1], c = shape[2];
      conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(c, 16, 3).padding(1)));
      conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)));
      hidden_ = register_module("hidden", torch::nn::Linear(32 * (h / 4) * (w / 4), kFeatureDim));
      head_ = register_module("head", torch::nn::Linear(kFeatureDim, num_classes));
    } else {
      const int64_t d = shape[0];
      in_mean_ = register_buffer("in_mean", torch::zeros({d}));
      in_std_ = register_buffer("in_std", torch::ones({d}));
      input_ = register_module("input", torch::nn::Linear(d, kVectorWidth));
      hidden_ = register_module("hidden", torch::nn::Linear(kVectorWidth, kVectorWidth));
      head_ = register_module("head", torch::nn::Linear(kVectorWidth, num_classes));
    }
  }

  torch::Tensor features(torch::Tensor x) {
    if (images_) {                                                          // [B, C, H, W]
      x = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);            // [B, 16, H/2, W/2]
      x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2);            // [B, 32, H/4, W/4]
      return torch::relu(hidden_->forward(x.flatten(1)));                   // [B, F]
    }
    x = (x - in_mean_) / in_std_;                                           // [B, D]
    return torch::relu(hidden_->forward(torch::relu(input_->forward(x))));  // [B, F]
  }
  torch::Tensor forward(torch::Tensor x) { return head_->forward(features(x)); }  // [B, K]

  void set_input_stats(const torch::Tensor& mean, const torch::Tensor& std) {
    torch::NoGradGuard no_grad;
    in_mean_.copy_(mean);
    in_std_.copy_(std);
  }

  bool images_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear input_{nullptr}, hidden_{nullptr}, head_{nullptr};
  torch::Tensor in_mean_, in_std_;
};
TORCH_MODULE(ClassifierNet);

std::string architecture_of(const EvalSet& set) {
  return set.images ? fmt::format("cnn(16,32)-{}", kFeatureDim)
                    : fmt::format("mlp-{}-{}", kVectorWidth, kVectorWidth);
}

std::string sidecar_path(const std::string& cache_path) {
  fs::path p(cache_path);
  if (p.extension() == ".pt") return p.replace_extension(".json").string();
  return cache_path + ".json";
}

// What a cached classifier must match: the reference file as it is now, and the settings.
nlohmann::json cache_key(const EvalSet& reference, const ClassifierSettings& s) {
  struct stat st {};
  if (::stat(reference.path.c_str(), &st) != 0)
    throw Error(fmt::format("{}: cannot stat the reference file", reference.path));
  const int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return {
      {"format", "diffusion-eval-classifier"},
      {"version", kCacheVersion},
      {"reference_file", fs::path(reference.path).filename().string()},
      {"reference_bytes", static_cast<int64_t>(st.st_size)},
      {"reference_mtime_ns", mtime_ns},
      {"reference_rows", reference.num_rows},
      {"sample_shape", reference.sample_shape},
      {"images", reference.images},
      {"num_classes", reference.num_classes},
      {"architecture", architecture_of(reference)},
      {"seed", s.seed},
      {"train_rows_max", s.train_rows},
      {"epochs", s.epochs},
      {"batch_size", s.batch_size},
      {"learning_rate", s.learning_rate},
      {"heldout_fraction", s.heldout_fraction},
  };
}


double accuracy(ClassifierNet& net, const torch::Tensor& x, const torch::Tensor& y, int64_t batch) {
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t b = 0; b < x.size(0); b += batch) {
    const int64_t e = std::min(x.size(0), b + batch);
    correct += net->forward(x.slice(0, b, e)).argmax(1).eq(y.slice(0, b, e)).sum().item<int64_t>();
  }
  return x.size(0) > 0 ? static_cast<double>(correct) / static_cast<double>(x.size(0)) : 0.0;
}

}  // namespace

std::string default_classifier_cache(const std::string& reference_path) {
  return fs::path(reference_path).replace_extension(".classifier.pt").string();
}

struct FeatureClassifier::Impl {
  ClassifierInfo info;
  mutable ClassifierNet net{nullptr};

  // Returns true when a valid cache was loaded.
  bool try_load(const EvalSet& reference, const nlohmann::json& key) {
    const std::string sidecar = sidecar_path(info.cache_path);
    std::error_code ec;
    if (!fs::exists(info.cache_path, ec) || !fs::exists(sidecar, ec)) return false;
    nlohmann::json meta;
    try {
      std::ifstream in(sidecar);
      meta = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      log0("[eval] classifier cache {} is unreadable ({}); training a new one", sidecar, e.what());
      return false;
    }
    if (!meta.contains("key") || meta["key"] != key) {
      std::vector<std::string> changed;
      for (const auto& [field, value] : key.items())
        if (!meta.contains("key") || !meta["key"].contains(field) || meta["key"][field] != value)
          changed.push_back(field);
      log0("[eval] classifier cache {} is for another reference or settings ({} changed); "
           "training a new one",
           sidecar, fmt::join(changed, ", "));
      return false;
    }
    try {
      net = ClassifierNet(reference.images, reference.sample_shape, reference.num_classes);
      torch::load(net, info.cache_path);
      const auto& r = meta.at("result");
      info.train_rows = r.at("train_rows").get<int64_t>();
      info.heldout_rows = r.at("heldout_rows").get<int64_t>();
      info.heldout_accuracy = r.at("heldout_accuracy").get<double>();
    } catch (const std::exception& e) {
      log0("[eval] classifier cache {} could not be loaded ({}); training a new one",
           info.cache_path, e.what());
      return false;
    }
    info.reused = true;
    info.cached = true;
    return true;
  }

  void train(const EvalSet& reference, const ClassifierSettings& s) {
    const auto start = std::chrono::steady_clock::now();
    // One intra-op thread while training: multi-threaded reductions sum in another order, and
    // SGD amplifies the last bits, so only this makes the classifier a function of the seed
    // and settings alone, whatever --threads says (the cache key leaves threads out).
    const int threads = torch::get_num_threads();
    torch::set_num_threads(1);
    struct RestoreThreads {
      int n;
      ~RestoreThreads() { torch::set_num_threads(n); }
    } restore{threads};
    const int64_t n = reference.x.size(0);
    if (n < 2)
      throw Error(fmt::format("{}: the classifier needs at least 2 labelled reference rows, found {}",
                              reference.path, n));
    torch::manual_seed(s.seed);
    net = ClassifierNet(reference.images, reference.sample_shape, reference.num_classes);
    const auto order = torch::randperm(n, torch::kInt64);  // [N] seeded split
    const int64_t heldout = std::clamp<int64_t>(
        std::llround(s.heldout_fraction * static_cast<double>(n)), 1, std::min(kMaxHeldoutRows, n - 1));
    const int64_t train_rows = std::min(s.train_rows, n - heldout);
    const auto heldout_idx = order.slice(0, 0, heldout);
    const auto train_idx = order.slice(0, heldout, heldout + train_rows);
    const auto train_x = reference.x.index_select(0, train_idx);
    const auto train_y = reference.labels.index_select(0, train_idx);
    if (!reference.images) {
      const auto std = train_x.std(0, /*unbiased=*/false).clamp_min(1e-6);
      net->set_input_stats(train_x.mean(0), std);
    }
    log0("[eval] training the {} classifier on {} rows of {} ({} epochs, seed {}), {} held out",
         architecture_of(reference), train_rows, reference.path, s.epochs, s.seed, heldout);
    torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(s.learning_rate));
    net->train();
    for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
      const auto perm = torch::randperm(train_rows, torch::kInt64);
      double loss_sum = 0;
      int64_t batches = 0;
      for (int64_t b = 0; b < train_rows; b += s.batch_size) {
        const auto idx = perm.slice(0, b, std::min(train_rows, b + s.batch_size));
        const auto loss = torch::cross_entropy_loss(net->forward(train_x.index_select(0, idx)),
                                                    train_y.index_select(0, idx));
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
        loss_sum += loss.item<double>();
        ++batches;
      }
      log0("[eval] classifier epoch {}/{}: mean loss {:.4f}", epoch + 1, s.epochs,
           loss_sum / static_cast<double>(std::max<int64_t>(1, batches)));
    }
    net->eval();
    info.train_rows = train_rows;
    info.heldout_rows = heldout;
    info.heldout_accuracy = accuracy(net, reference.x.index_select(0, heldout_idx),
                                     reference.labels.index_select(0, heldout_idx), 512);
    info.train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log0("[eval] classifier trained in {:.1f} s: held-out accuracy {:.4f} on {} rows",
         info.train_seconds, info.heldout_accuracy, heldout);
  }

  void write_cache(const nlohmann::json& key) {
    const std::string sidecar = sidecar_path(info.cache_path);
    try {
      std::error_code ec;
      fs::remove(sidecar, ec);  // the sidecar marks a complete cache: it goes first, comes last
      const std::string tmp = fmt::format("{}.tmp-{}", info.cache_path, ::getpid());
      torch::save(net, tmp);
      fs::rename(tmp, info.cache_path);
      const nlohmann::json meta = {
          {"key", key},
          {"result",
           {{"train_rows", info.train_rows},
            {"heldout_rows", info.heldout_rows},
            {"heldout_accuracy", info.heldout_accuracy},
            {"train_seconds", info.train_seconds}}}};
      write_file_atomic(sidecar, meta.dump(2) + "\n");
      info.cached = true;
      log0("[eval] classifier cached in {}", info.cache_path);
    } catch (const std::exception& e) {
      log0("[eval] warning: could not cache the classifier in {} ({}); it will be trained again "
           "next time (see --classifier-cache)",
           info.cache_path, e.what());
    }
  }
};

FeatureClassifier::FeatureClassifier(const EvalSet& reference, const ClassifierSettings& settings,
                                     const std::string& cache_path, bool retrain)
    : impl_(std::make_unique<Impl>()) {
  if (!reference.has_labels())
    throw Error(fmt::format("{}: the reference has no 'labels'; the evaluation classifier needs a "
                            "labelled reference (or pass --features model.pt for the distance)",
                            reference.path));
  if (reference.images && (reference.sample_shape[0] < 4 || reference.sample_shape[1] < 4))
    throw Error(fmt::format("{}: images of {}x{} are too small for the classifier (at least 4x4)",
                            reference.path, reference.sample_shape[0], reference.sample_shape[1]));
  Impl& m = *impl_;
  m.info.cache_path = cache_path;
  m.info.architecture = architecture_of(reference);
  m.info.feature_dim = reference.images ? kFeatureDim : kVectorWidth;
  const nlohmann::json key = cache_key(reference, settings);
  if (!retrain && m.try_load(reference, key)) {
    log0("[eval] reusing the classifier cached in {} (held-out accuracy {:.4f})", cache_path,
         m.info.heldout_accuracy);
  } else {
    m.train(reference, settings);
    m.write_cache(key);
  }
  m.net->eval();
}

FeatureClassifier::~FeatureClassifier() = default;

const ClassifierInfo& FeatureClassifier::info() const { return impl_->info; }

at::Tensor FeatureClassifier::features(const at::Tensor& x, int64_t batch_size) const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t b = 0; b < x.size(0); b += batch_size)
    parts.push_back(impl_->net->features(x.slice(0, b, std::min(x.size(0), b + batch_size))));
  return torch::cat(parts);  // [N, F]
}

at::Tensor FeatureClassifier::predict(const at::Tensor& x, int64_t batch_size) const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t b = 0; b < x.size(0); b += batch_size)
    parts.push_back(impl_->net->forward(x.slice(0, b, std::min(x.size(0), b + batch_size))).argmax(1));
  return torch::cat(parts);  // [N]
}

}  // namespace diffusion
