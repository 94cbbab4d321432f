// Timestep spacings. Rounding is half-to-even, as numpy.round does, so that grids agree with
// the Python libraries users compare against.
#include "core/diffusion/spacing.h"

#include <fmt/core.h>

#include <cmath>

#include "core/base/error.h"

namespace diffusion {

TimestepSpacing parse_timestep_spacing(const std::string& name) {
  if (name == "leading") return TimestepSpacing::kLeading;
  if (name == "trailing") return TimestepSpacing::kTrailing;
  if (name == "linspace") return TimestepSpacing::kLinspace;
  throw Error(fmt::format("unknown timestep spacing '{}': expected leading, trailing or linspace",
                          name));
}

std::string to_string(TimestepSpacing spacing) {
  switch (spacing) {
    case TimestepSpacing::kLeading: return "leading";
    case TimestepSpacing::kTrailing: return "trailing";
    case TimestepSpacing::kLinspace: return "linspace";
  }
  return "?";
}

std::vector<int64_t> timestep_spacing(TimestepSpacing spacing, int64_t T, int64_t S) {
  if (S < 1 || S > T)
    throw Error(fmt::format("sampling steps S = {}: expected 1 <= S <= T = {}", S, T));
  std::vector<int64_t> steps;
  steps.reserve(static_cast<size_t>(S));
  const auto round_even = [](double v) { return static_cast<int64_t>(std::nearbyint(v)); };
  switch (spacing) {
    case TimestepSpacing::kLeading: {
      const int64_t stride = T / S;
      for (int64_t i = S - 1; i >= 0; --i) steps.push_back(i * stride);
      break;
    }
    case TimestepSpacing::kTrailing: {
      const double stride = static_cast<double>(T) / static_cast<double>(S);
      for (int64_t i = 0; i < S; ++i) steps.push_back(round_even(T - i * stride) - 1);
      break;
    }
    case TimestepSpacing::kLinspace: {
      // numpy.linspace computes i·step with step = (T-1)/(S-1) and pins the last value.
      const double step = S == 1 ? 0.0 : static_cast<double>(T - 1) / static_cast<double>(S - 1);
      for (int64_t i = S - 1; i >= 0; --i)
        steps.push_back(S > 1 && i == S - 1 ? T - 1 : round_even(static_cast<double>(i) * step));
      break;
    }
  }
  return steps;
}

}  // namespace diffusion
