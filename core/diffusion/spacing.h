// Which S of the T training timesteps a sampler visits (docs/math.md "Samplers", timestep
// spacing), under the names common libraries use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace diffusion {

enum class TimestepSpacing { kLeading, kTrailing, kLinspace };

TimestepSpacing parse_timestep_spacing(const std::string& name);  // leading|trailing|linspace
std::string to_string(TimestepSpacing spacing);

// S timesteps out of 0 … T-1 in the order a sampler visits them (descending):
//   leading  t_i = i·⌊T/S⌋,               i = S-1 … 0
//   trailing t_i = round(T - i·T/S) - 1,   i = 0 … S-1
//   linspace round(linspace(0, T-1, S)), descending
// Throws diffusion::Error when S < 1 or S > T.
std::vector<int64_t> timestep_spacing(TimestepSpacing spacing, int64_t T, int64_t S);

}  // namespace diffusion
