// The evaluation pipeline (see evaluation.h): which metrics apply depends on the data (images
// or vectors, labels or not, a known mixture or not); each is computed by its own module.
#include "core/base/durable_file.h"
#include "evaluation/evaluation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core/base/error.h"
#include "core/base/log.h"
#include "datasets/toy_sets.h"
#include "evaluation/eval_set.h"
#include "evaluation/feature_classifier.h"
#include "evaluation/frechet.h"
#include "evaluation/gmm_metrics.h"
#include "evaluation/scripted_features.h"

namespace diffusion {
namespace fs = std::filesystem;
namespace {

std::vector<int64_t> class_histogram(const torch::Tensor& classes, int64_t num_classes) {
  const auto counts = torch::bincount(classes, {}, num_classes);
  return std::vector<int64_t>(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + num_classes);
}

void check_compatible(const EvalSet& samples, const EvalSet& reference) {
  if (samples.images != reference.images || samples.sample_shape != reference.sample_shape)
    throw Error(fmt::format("shape mismatch: samples '{}' hold {} but reference '{}' holds {}",
                            samples.path, samples.shape_text(), reference.path,
                            reference.shape_text()));
  if (samples.has_labels() && reference.has_labels() &&
      samples.num_classes != reference.num_classes)
    throw Error(fmt::format("class mismatch: samples '{}' have num_classes = {} but reference '{}' "
                            "has {}",
                            samples.path, samples.num_classes, reference.path,
                            reference.num_classes));
}

// The 2-D mixture: options first, then the reference's attributes. Returns nullopt (and why)
// when there is none.
std::optional<GaussianMixture> find_mixture(const EvalConfig& config, const EvalSet& reference,
                                            std::string* why) {
  if (config.gmm_modes) return ring_mixture(*config.gmm_modes, config.gmm_radius, *config.gmm_std);
  GaussianMixture g;
  if (read_gaussian_mixture(reference.path, &g)) {
    if (g.dim != reference.sample_shape[0])
      throw Error(fmt::format("{}: attribute 'gmm_means' has D = {} but the data has D = {}",
                              reference.path, g.dim, reference.sample_shape[0]));
    return g;
  }
  *why = fmt::format("{} has no attribute 'gmm_means' (nor gmm_std, gmm_weights); pass "
                     "--gmm-modes M --gmm-std S [--gmm-radius R] for a ring mixture",
                     reference.path);
  return std::nullopt;
}

nlohmann::json set_json(const EvalSet& set, int64_t rows_used) {
  nlohmann::json j = {{"path", set.path},
                      {"kind", set.images ? "images" : "vectors"},
                      {"sample_shape", set.sample_shape},
                      {"rows", set.num_rows},
                      {"rows_used", rows_used},
                      {"has_labels", set.has_labels()}};
  if (set.has_labels()) j["num_classes"] = set.num_classes;
  return j;
}

void write_json_atomic(const std::string& path, const nlohmann::json& report) {
  try {
    write_file_atomic(path, report.dump(2) + "\n");
  } catch (const Error& e) {
    throw Error(fmt::format("--json '{}': {}", path, e.what()));
  }
}

}  // namespace

nlohmann::json evaluate(const EvalConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  if (config.threads > 0) torch::set_num_threads(config.threads);
  EvalSet reference = load_eval_set(config.reference, 0);
  const EvalSet samples = load_eval_set(config.samples, config.max_sample_rows);
  check_compatible(samples, reference);
  log0("[eval] samples {}: {} rows, {}{}; reference {}: {} rows{}", samples.path,
       samples.x.size(0), samples.shape_text(), samples.has_labels() ? ", labelled" : "",
       reference.path, reference.num_rows, reference.has_labels() ? ", labelled" : "");

  nlohmann::json report;
  report["samples"] = set_json(samples, samples.x.size(0));

  // The classifier: trained (or reused) whenever the reference has labels.
  std::unique_ptr<FeatureClassifier> classifier;
  if (reference.has_labels()) {
    const std::string cache = config.classifier_cache.empty()
                                  ? default_classifier_cache(reference.path)
                                  : config.classifier_cache;
    classifier = std::make_unique<FeatureClassifier>(reference, config.classifier, cache,
                                                     config.retrain);
  } else if (reference.images && config.features.empty()) {
    throw Error(fmt::format("{}: the reference has no 'labels', so no classifier can be trained "
                            "for the feature space; use a labelled reference or --features "
                            "model.pt",
                            reference.path));
  }

  // The distance's share of the reference: a seeded subset of max_reference rows.
  EvalSet ref_subset = reference;
  if (config.max_reference_rows > 0 && reference.x.size(0) > config.max_reference_rows) {
    torch::manual_seed(config.classifier.seed + 1);
    const auto rows = std::get<0>(
        torch::randperm(reference.x.size(0), torch::kInt64).slice(0, 0, config.max_reference_rows).sort());
    ref_subset = select_rows(reference, rows);
  }
  report["reference"] = set_json(reference, ref_subset.x.size(0));

  // Fréchet distance in the chosen feature space.
  std::string space;
  torch::Tensor f_samples, f_reference;
  if (!config.features.empty()) {
    const ScriptedFeatures net(config.features);
    f_samples = net.features(samples.x, config.batch_size);
    f_reference = net.features(ref_subset.x, config.batch_size);
    space = fmt::format("torchscript:{}", config.features);
  } else if (classifier) {
    f_samples = classifier->features(samples.x, config.batch_size);
    f_reference = classifier->features(ref_subset.x, config.batch_size);
    space = fmt::format("classifier:{}", classifier->info().architecture);
  } else {
    f_samples = samples.x;
    f_reference = ref_subset.x;
    space = "data";
  }
  report["feature_space"] = space;
  report["feature_dim"] = f_samples.size(1);
  report["frechet_distance"] = frechet_distance(gaussian_stats(f_samples), gaussian_stats(f_reference));
  if (!reference.images)
    report["frechet_distance_data"] =
        frechet_distance(gaussian_stats(samples.x), gaussian_stats(ref_subset.x));

  // What the classifier says about the samples.
  if (classifier) {
    const ClassifierInfo& ci = classifier->info();
    report["classifier"] = {{"cache", ci.cache_path},
                            {"reused", ci.reused},
                            {"cached", ci.cached},
                            {"architecture", ci.architecture},
                            {"feature_dim", ci.feature_dim},
                            {"train_rows", ci.train_rows},
                            {"heldout_rows", ci.heldout_rows},
                            {"heldout_accuracy", ci.heldout_accuracy},
                            {"train_seconds", ci.train_seconds}};
    const auto predicted = classifier->predict(samples.x, config.batch_size);  // [N]
    report["class_names"] = reference.class_names;
    report["predicted_class_histogram"] = class_histogram(predicted, reference.num_classes);
    if (samples.has_labels()) {
      report["label_histogram"] = class_histogram(samples.labels, reference.num_classes);
      report["conditional_accuracy"] = predicted.eq(samples.labels).to(torch::kFloat64).mean().item<double>();
    } else {
      report["conditional_accuracy"] = nullptr;
    }
  }

  // 2-D (any D with a given mixture): coverage of the modes and NLL under the mixture.
  if (!reference.images) {
    std::string why;
    if (const auto mixture = find_mixture(config, reference, &why)) {
      if (mixture->dim != samples.sample_shape[0])
        throw Error(fmt::format("--gmm-modes: the ring mixture is 2-D but '{}' has D = {}",
                                samples.path, samples.sample_shape[0]));
      const auto xs = samples.x.contiguous();
      const auto xr = ref_subset.x.contiguous();
      const ModeCoverage c = mode_coverage(*mixture, xs.data_ptr<float>(), xs.size(0),
                                           config.coverage_radius, config.coverage_share);
      report["gmm"] = {
          {"source", config.gmm_modes ? "options" : "reference attributes"},
          {"modes", mixture->modes()},
          {"coverage", c.coverage},
          {"covered_modes", mixture->modes() - static_cast<int64_t>(c.missing_modes.size())},
          {"missing_modes", c.missing_modes},
          {"mode_counts", c.mode_counts},
          {"min_counts", c.min_counts},
          {"off_mode", c.off_mode},
          {"off_mode_fraction", static_cast<double>(c.off_mode) / static_cast<double>(xs.size(0))},
          {"coverage_radius_stds", config.coverage_radius},
          {"nll", mean_nll(*mixture, xs.data_ptr<float>(), xs.size(0))},
          {"reference_nll", mean_nll(*mixture, xr.data_ptr<float>(), xr.size(0))}};
    } else {
      log0("[eval] no mixture metrics: {}", why);
      report["gmm"] = {{"skipped", why}};
    }
  }
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::string format_report(const nlohmann::json& r) {
  std::string out;
  const auto& s = r["samples"];
  const auto& ref = r["reference"];
  out += fmt::format("samples:    {} ({} rows used)\n", s["path"].get<std::string>(), s["rows_used"].get<int64_t>());
  out += fmt::format("reference:  {} ({} of {} rows in the distance)\n", ref["path"].get<std::string>(),
                     ref["rows_used"].get<int64_t>(), ref["rows"].get<int64_t>());
  out += fmt::format("frechet_distance: {:.6g}  (feature space {}, {} features)\n",
                     r["frechet_distance"].get<double>(), r["feature_space"].get<std::string>(),
                     r["feature_dim"].get<int64_t>());
  if (r.contains("frechet_distance_data"))
    out += fmt::format("frechet_distance_data: {:.6g}  (raw vectors)\n", r["frechet_distance_data"].get<double>());
  if (r.contains("classifier")) {
    const auto& c = r["classifier"];
    out += fmt::format("classifier: {} {} ({}), held-out accuracy {:.4f} on {} reference rows\n",
                       c["architecture"].get<std::string>(), c["reused"].get<bool>() ? "reused" : "trained",
                       c["cache"].get<std::string>(), c["heldout_accuracy"].get<double>(),
                       c["heldout_rows"].get<int64_t>());
    if (!r["conditional_accuracy"].is_null())
      out += fmt::format("conditional_accuracy: {:.4f}  (classifier agrees with the samples' labels)\n",
                         r["conditional_accuracy"].get<double>());
    out += fmt::format("predicted_class_histogram: [{}]\n",
                       fmt::join(r["predicted_class_histogram"].get<std::vector<int64_t>>(), ", "));
    if (r.contains("label_histogram"))
      out += fmt::format("label_histogram:           [{}]\n",
                         fmt::join(r["label_histogram"].get<std::vector<int64_t>>(), ", "));
  }
  if (r.contains("gmm")) {
    const auto& g = r["gmm"];
    if (g.contains("skipped")) {
      out += fmt::format("gmm: skipped: {}\n", g["skipped"].get<std::string>());
    } else {
      out += fmt::format("gmm_coverage: {:.4f}  ({} of {} modes; missing [{}])\n", g["coverage"].get<double>(),
                         g["covered_modes"].get<int64_t>(), g["modes"].get<int64_t>(),
                         fmt::join(g["missing_modes"].get<std::vector<int64_t>>(), ", "));
      out += fmt::format("gmm_mode_counts: [{}], off-mode {} ({:.4f})\n",
                         fmt::join(g["mode_counts"].get<std::vector<int64_t>>(), ", "),
                         g["off_mode"].get<int64_t>(), g["off_mode_fraction"].get<double>());
      out += fmt::format("gmm_nll: {:.6g} nats  (reference rows: {:.6g})\n", g["nll"].get<double>(),
                         g["reference_nll"].get<double>());
    }
  }
  return out;
}

void run_evaluation(const EvalConfig& config) {
  const nlohmann::json report = evaluate(config);
  std::fputs(format_report(report).c_str(), stdout);
  std::fflush(stdout);
  if (!config.json_out.empty()) {
    write_json_atomic(config.json_out, report);
    log0("[eval] wrote {}", config.json_out);
  }
}

}  // namespace diffusion
