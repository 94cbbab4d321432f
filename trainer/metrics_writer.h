// The run's metrics: one JSON record per log step appended to RUN/metrics.jsonl by rank 0
// (the file docs/formats.md describes), and the matching progress line (llm.c's logger.h).
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace diffusion {

struct MetricsRecord {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;
  std::array<double, 4> loss_per_t_quarter{};
  double grad_norm = 0;
  double lr = 0;
  double images_per_s = 0;
  int64_t images_seen = 0;
  int64_t skipped_steps = 0;
  double eta_s = 0;
  double accuracy = -1;  // a classifier's train accuracy on its noisy inputs; written when >= 0
};

class MetricsWriter {
 public:
  // Only the writer of rank 0 touches the file.
  MetricsWriter(std::string path, bool writes) : path_(std::move(path)), writes_(writes) {}
  // Logs the progress line (rank 0) and appends the record; throws naming the file on failure.
  void write(const MetricsRecord& record) const;

 private:
  std::string path_;
  bool writes_;
};

// Drops the records past `step` from the metrics file at `path` and returns how many it dropped:
// a run that resumes from a checkpoint older than its last log step logs those steps again, and
// a reader should find each step once. Lines that are not records are kept; a missing file drops
// nothing. The file is replaced atomically, so a failure leaves it as it was.
int64_t drop_metrics_after(const std::string& path, int64_t step);

}  // namespace diffusion
