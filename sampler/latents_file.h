// Reading latents files (dataset `x` float32 [N, sample shape], as --invert writes them and
// --latents reads them) a block of rows at a time, so memory stays flat in N. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffusion {

class LatentsReader {
 public:
  // Opens `path` and checks that dataset `x` is float [N, sample_shape...]; throws
  // diffusion::Error naming the file and both shapes otherwise (`what` names the option).
  LatentsReader(const std::string& path, const std::vector<int64_t>& sample_shape, const std::string& what);
  ~LatentsReader();
  LatentsReader(const LatentsReader&) = delete;
  LatentsReader& operator=(const LatentsReader&) = delete;

  int64_t rows() const { return rows_; }
  // Rows [begin, end) into `out`, row-major float32; throws naming the row of a non-finite value.
  void read(int64_t begin, int64_t end, float* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t rows_ = 0;
};

}  // namespace diffusion
