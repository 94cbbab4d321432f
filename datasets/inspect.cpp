// Dataset inspection: the same validation the trainer's reader runs, plus a full scan.
#include "datasets/inspect.h"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>

#include "core/base/error.h"

namespace diffusion {
namespace {

constexpr const char* kFlipWarning =
    "random-flip would train on mirror images that the data does not have";

// Rows per read while scanning: a few MiB at a time whatever the row size.
int64_t scan_rows(const DatasetInfo& info) {
  const int64_t row_bytes =
      info.sample_elements() * (info.kind == DataKind::kImages ? 1 : 4);
  return std::max<int64_t>(1, (8 << 20) / row_bytes);
}

// Calls f(at, mirrored) for every value of the left half of an [H, W, C] image and its mirror
// image's index (an odd middle column is its own mirror image and adds nothing).
template <class F>
void for_left_half(const DatasetInfo& info, F&& f) {
  const int64_t h = info.sample_shape[0], w = info.sample_shape[1], c = info.sample_shape[2];
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w / 2; ++x)
      for (int64_t k = 0; k < c; ++k)
        f(static_cast<size_t>((y * w + x) * c + k), static_cast<size_t>((y * w + (w - 1 - x)) * c + k));
}

}  // namespace

InspectReport inspect_dataset(const std::string& path) {
  InspectReport report;
  report.path = path;
  try {
    DatasetReader reader(path);
    report.info = reader.info();
    report.layout_ok = true;
    const DatasetInfo& info = report.info;
    const int64_t elements = info.sample_elements();
    const int64_t step = scan_rows(info);
    double lo = std::numeric_limits<double>::infinity();
    double hi = -lo;
    double sum = 0;
    std::vector<uint8_t> bytes;
    std::vector<float> floats;
    std::vector<int64_t> labels;
    if (info.has_labels) {
      labels.resize(static_cast<size_t>(info.num_samples));
      reader.read_labels_range(0, info.num_samples, labels.data());
    }
    // The mirror check groups image rows by class (one group when unlabelled) and sums them in
    // this pass; a second pass projects each row on its group's m - mirror(m).
    const int64_t groups = info.has_labels ? info.num_classes : 1;
    // Written as a division: num_classes has no upper bound, so groups * elements can overflow.
    const bool mirror_check =
        info.kind == DataKind::kImages && groups <= kMirrorCheckValues / std::max<int64_t>(1, elements);
    report.mirror_check_skipped = info.kind == DataKind::kImages && !mirror_check;
    const auto group_of = [&](int64_t row) {
      return info.has_labels ? static_cast<size_t>(labels[static_cast<size_t>(row)]) : size_t{0};
    };
    std::vector<std::vector<double>> group_sums;
    std::vector<int64_t> group_counts;
    if (mirror_check) {
      group_sums.assign(static_cast<size_t>(groups), std::vector<double>(static_cast<size_t>(elements), 0.0));
      group_counts.assign(static_cast<size_t>(groups), 0);
    }
    for (int64_t begin = 0; begin < info.num_samples; begin += step) {
      const int64_t end = std::min(info.num_samples, begin + step);
      const auto count = static_cast<size_t>((end - begin) * elements);
      // Per block in double, then added: keeps the mean accurate over billions of values.
      double block_sum = 0;
      if (info.kind == DataKind::kImages) {
        bytes.resize(count);
        reader.read_images_range(begin, end, bytes.data());
        const auto [mn, mx] = std::minmax_element(bytes.begin(), bytes.end());
        lo = std::min<double>(lo, *mn);
        hi = std::max<double>(hi, *mx);
        for (uint8_t v : bytes) block_sum += v;
        if (mirror_check)
          for (int64_t row = begin; row < end; ++row) {
            const size_t g = group_of(row);
            const uint8_t* px = bytes.data() + (row - begin) * elements;
            for (int64_t e = 0; e < elements; ++e) group_sums[g][static_cast<size_t>(e)] += px[e];
            ++group_counts[g];
          }
      } else {
        floats.resize(count);
        reader.read_vectors_range(begin, end, floats.data());  // throws on NaN/inf
        const auto [mn, mx] = std::minmax_element(floats.begin(), floats.end());
        lo = std::min<double>(lo, *mn);
        hi = std::max<double>(hi, *mx);
        for (float v : floats) block_sum += v;
      }
      sum += block_sum;
    }
    report.min = lo;
    report.max = hi;
    report.mean = sum / static_cast<double>(info.num_samples * elements);
    if (info.has_labels) {
      // The reader validated the range on open, so every label indexes the histogram.
      report.label_counts.assign(static_cast<size_t>(info.num_classes), 0);
      for (int64_t label : labels) ++report.label_counts[static_cast<size_t>(label)];
    }
    if (mirror_check) {
      // In place, left half only: a group's sums become m - mirror(m) for its mean m.
      for (size_t g = 0; g < group_sums.size(); ++g)
        if (group_counts[g] > 0)
          for_left_half(info, [&](size_t at, size_t mirrored) {
            group_sums[g][at] = (group_sums[g][at] - group_sums[g][mirrored]) / static_cast<double>(group_counts[g]);
          });
      const auto& diff = group_sums;
      std::vector<double> facing(static_cast<size_t>(groups), 0.0);
      for (int64_t begin = 0; begin < info.num_samples; begin += step) {
        const int64_t end = std::min(info.num_samples, begin + step);
        bytes.resize(static_cast<size_t>((end - begin) * elements));
        reader.read_images_range(begin, end, bytes.data());
        for (int64_t row = begin; row < end; ++row) {
          const size_t g = group_of(row);
          const uint8_t* px = bytes.data() + (row - begin) * elements;
          // Pairs a pixel with its mirror image, so a symmetric row gives exactly 0 (a tie)
          // rather than a rounding residue of far-apart terms.
          double dot = 0;
          for_left_half(info, [&](size_t at, size_t mirrored) {
            dot += (static_cast<double>(px[at]) - px[mirrored]) * diff[g][at];
          });
          facing[g] += dot > 0 ? 1.0 : dot == 0 ? 0.5 : 0.0;
        }
      }
      report.facing_share.resize(static_cast<size_t>(groups));
      for (size_t g = 0; g < facing.size(); ++g)
        report.facing_share[g] =
            group_counts[g] > 0 ? facing[g] / static_cast<double>(group_counts[g]) : 0.5;
    }
    report.readable = true;
  } catch (const Error& e) {
    report.readable = false;
    report.reason = e.what();
  }
  return report;
}

std::string format_report(const InspectReport& r) {
  std::string text = fmt::format("file: {}\n", r.path);
  if (r.layout_ok) {
    const DatasetInfo& info = r.info;
    std::string shape = fmt::format("{}", info.num_samples);
    for (int64_t d : info.sample_shape) shape += fmt::format(", {}", d);
    text += fmt::format("dataset: {}\n", info.kind == DataKind::kImages ? "images" : "x");
    text += fmt::format("dtype: {}\n", info.kind == DataKind::kImages ? "uint8" : "float32");
    text += fmt::format("shape: [{}]\n", shape);
    if (info.kind == DataKind::kImages)
      text += fmt::format("layout: N={} H={} W={} C={}\n", info.num_samples, info.sample_shape[0],
                          info.sample_shape[1], info.sample_shape[2]);
    if (r.readable)
      text += fmt::format("values: min {:.6g}, max {:.6g}, mean {:.6g}\n", r.min, r.max, r.mean);
    if (info.has_labels) {
      text += fmt::format("labels: int64 [{}], {} classes\n", info.num_samples, info.num_classes);
      for (size_t k = 0; k < r.label_counts.size(); ++k) {
        const std::string name =
            k < info.class_names.size() ? fmt::format(" ({})", info.class_names[k]) : "";
        const std::string facing = k < r.facing_share.size() && r.label_counts[k] > 0
                                       ? fmt::format(", facing as the class mean: {:.3f}", r.facing_share[k])
                                       : "";
        text += fmt::format("  class {}{}: {}{}\n", k, name, r.label_counts[k], facing);
      }
    } else {
      text += "labels: none (unlabelled)\n";
      if (!r.facing_share.empty())
        text += fmt::format("  facing as the mean: {:.3f}\n", r.facing_share[0]);
    }
    if (r.mirror_check_skipped)
      text += fmt::format("mirror check: skipped (the class means would take more than {} values)\n",
                          kMirrorCheckValues);
    if (!r.facing_share.empty()) {
      // Which groups face one way, by name where the file names its classes.
      std::vector<std::string> one_way;
      for (size_t k = 0; k < r.facing_share.size(); ++k) {
        const bool has_rows = !info.has_labels || r.label_counts[k] > 0;
        if (!has_rows || r.facing_share[k] < kFacesOneWay) continue;
        one_way.push_back(k < info.class_names.size()
                                ? fmt::format("{} ({})", k, info.class_names[k])
                                : fmt::format("{}", k));
      }
      text += "mirror check (facing as the mean: the share of rows nearer the mean than their mirror image is):\n";
      if (one_way.empty())
        text += fmt::format("  {} (every share < {})\n",
                            info.has_labels ? "no class faces one way" : "the images do not face one way",
                            kFacesOneWay);
      else if (!info.has_labels)
        text += fmt::format("  the images face one way (share >= {}): {}\n", kFacesOneWay, kFlipWarning);
      else
        text += fmt::format("  {} {} {} one way (share >= {}): {}\n",
                            one_way.size() == 1 ? "class" : "classes", fmt::join(one_way, ", "),
                            one_way.size() == 1 ? "faces" : "face", kFacesOneWay, kFlipWarning);
    }
  }
  text += r.readable ? "trainer can read it: yes\n"
                     : fmt::format("trainer can read it: no: {}\n", r.reason);
  return text;
}

}  // namespace diffusion
