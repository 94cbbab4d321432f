// Names of the diffusion settings, parsed and printed (torch-free).
#include "core/diffusion/diffusion_config.h"

#include <fmt/core.h>

#include "core/base/error.h"

namespace diffusion {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "linear") return ScheduleKind::kLinear;
  if (name == "cosine") return ScheduleKind::kCosine;
  throw Error(fmt::format("unknown schedule '{}': expected linear or cosine", name));
}

std::string to_string(ScheduleKind kind) {
  return kind == ScheduleKind::kLinear ? "linear" : "cosine";
}

Prediction parse_prediction(const std::string& name) {
  if (name == "eps") return Prediction::kEps;
  if (name == "x0") return Prediction::kX0;
  if (name == "v") return Prediction::kV;
  throw Error(fmt::format("unknown prediction '{}': expected eps, x0 or v", name));
}

std::string to_string(Prediction prediction) {
  switch (prediction) {
    case Prediction::kEps: return "eps";
    case Prediction::kX0: return "x0";
    case Prediction::kV: return "v";
  }
  return "?";
}

VarianceKind parse_variance_kind(const std::string& name) {
  if (name == "fixed-large") return VarianceKind::kFixedLarge;
  if (name == "fixed-small") return VarianceKind::kFixedSmall;
  if (name == "learned" || name == "learned-range") return VarianceKind::kLearnedRange;
  throw Error(fmt::format("unknown variance '{}': expected fixed-large, fixed-small or learned",
                          name));
}

std::string to_string(VarianceKind kind) {
  switch (kind) {
    case VarianceKind::kFixedLarge: return "fixed-large";
    case VarianceKind::kFixedSmall: return "fixed-small";
    case VarianceKind::kLearnedRange: return "learned";
  }
  return "?";
}

}  // namespace diffusion
