// Dataset inspection: the same validation the trainer's reader runs, plus a full scan.
#include "datasets/inspect.h"

#include <fmt/core.h>

#include <algorithm>
#include <limits>

#include "core/base/error.h"

namespace diffusion {
namespace {

// Rows per read while scanning: a few MiB at a time whatever the row size.
int64_t scan_rows(const DatasetInfo& info) {
  const int64_t row_bytes =
      info.sample_elements() * (info.kind == DataKind::kImages ? 1 : 4);
  return std::max<int64_t>(1, (8 << 20) / row_bytes);
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
      std::vector<int64_t> labels(static_cast<size_t>(info.num_samples));
      reader.read_labels_range(0, info.num_samples, labels.data());
      for (int64_t label : labels) ++report.label_counts[static_cast<size_t>(label)];
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
        text += fmt::format("  class {}{}: {}\n", k, name, r.label_counts[k]);
      }
    } else {
      text += "labels: none (unlabelled)\n";
    }
  }
  text += r.readable ? "trainer can read it: yes\n"
                     : fmt::format("trainer can read it: no: {}\n", r.reason);
  return text;
}

}  // namespace diffusion
