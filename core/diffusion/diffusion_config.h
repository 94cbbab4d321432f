// The names that configure the diffusion process: schedule kind and parameters, what the
// network predicts, and the reverse-step variance. Torch-free, so option parsers include it
// without LibTorch; the math lives in schedule.h and gaussian_diffusion.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace diffusion {

enum class ScheduleKind { kLinear, kCosine };

ScheduleKind parse_schedule_kind(const std::string& name);  // "linear" | "cosine"
std::string to_string(ScheduleKind kind);

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::kLinear;
  int64_t timesteps = 1000;
  // Linear endpoints. Unset: 1e-4 and 0.02 scaled by 1000/T (Improved DDPM), so that every T
  // ends near the same ᾱ_{T-1}; at T = 1000 they are exactly DDPM's values.
  std::optional<double> beta_start = std::nullopt;
  std::optional<double> beta_end = std::nullopt;
  double cosine_offset = 0.008;  // s in docs/math.md
};

enum class Prediction { kEps, kX0, kV };
enum class VarianceKind { kFixedLarge, kFixedSmall, kLearnedRange };

Prediction parse_prediction(const std::string& name);  // eps | x0 | v
std::string to_string(Prediction prediction);
VarianceKind parse_variance_kind(const std::string& name);  // fixed-large|fixed-small|learned
std::string to_string(VarianceKind kind);

}  // namespace diffusion
