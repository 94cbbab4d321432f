// Shared test helpers: tensor comparison that reports the first mismatching index, and a
// scratch folder per test that is removed afterwards.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace at {
class Tensor;
}

namespace diffusion::testing {

// Passes when |a - b| <= atol + rtol·|b| everywhere and shapes agree; otherwise names the
// first index that differs with both values.
::testing::AssertionResult tensor_near(const at::Tensor& a, const at::Tensor& b, double rtol,
                                       double atol);

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
