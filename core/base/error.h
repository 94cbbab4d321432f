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

// An error that every rank of the job throws together, with the same text (agreed through
// core/comm/agreement.h, or found alike before any collective): rank 0 prints it once and the
// program leaves through MPI_Finalize with a non-zero code instead of MPI_Abort's banner.
class AgreedError : public Error {
 public:
  using Error::Error;
};

}  // namespace diffusion
