// The one exception type of the project: every message names the file, key or rank at fault
// and what was expected, so a user can act on it without reading the source.
#pragma once

#include <stdexcept>
#include <string>

namespace diffusion {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace diffusion
