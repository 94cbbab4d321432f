// Small text helpers that several programs print or compare with.
#pragma once

#include <string>

namespace diffusion {

// "42s", "3m07s", "2h05m": a duration for progress lines (ETA), rounded to the second.
std::string format_duration(double seconds);

// The first line where two texts differ, as "'line of a' vs 'line of b'"; "" when equal.
std::string first_line_difference(const std::string& a, const std::string& b);

}  // namespace diffusion
