// Text helpers (see text.h).
#include "core/base/text.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <sstream>

namespace diffusion {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(seconds, 0.0)));
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string first_line_difference(const std::string& a, const std::string& b) {
  std::istringstream ia(a), ib(b);
  std::string la, lb;
  while (true) {
    const bool ga = static_cast<bool>(std::getline(ia, la));
    const bool gb = static_cast<bool>(std::getline(ib, lb));
    if (!ga && !gb) return "";
    if (la != lb || ga != gb) return fmt::format("'{}' vs '{}'", ga ? la : "", gb ? lb : "");
  }
}

}  // namespace diffusion
