// Shared test helpers: tensor comparison that reports the first mismatching index, and a
// scratch folder per test that is removed afterwards.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/base/error.h"

namespace at {
class Tensor;
}

namespace diffusion::testing {

// Passes when |a - b| <= atol + rtol·|b| everywhere and shapes agree; otherwise names the
// first index that differs with both values.
::testing::AssertionResult tensor_near(const at::Tensor& a, const at::Tensor& b, double rtol,
                                       double atol);

// Runs `fn`, expects diffusion::Error, and checks that its message contains every `needle`
// (errors must name the file, key or rank at fault).
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected diffusion::Error containing '" << needles.front() << "'";
  } catch (const ::diffusion::Error& e) {
    const std::string message = e.what();
    for (const auto& needle : needles)
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message lacks '" << needle << "': " << message;
  }
}

// Rank and size in MPI_COMM_WORLD (MPI tests only).
int world_rank();
int world_size();

// A fresh empty folder under $DIFFUSION_TEST_DATA (or /tmp), removed by the destructor.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name);
  ~ScratchDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace diffusion::testing
