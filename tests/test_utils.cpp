// Shared test helpers.
#include "tests/test_utils.h"

#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

namespace diffusion::testing {

::testing::AssertionResult tensor_near(const at::Tensor& a, const at::Tensor& b, double rtol,
                                       double atol) {
  if (a.sizes() != b.sizes()) {
    std::ostringstream s;
    s << "shapes differ: " << a.sizes() << " vs " << b.sizes();
    return ::testing::AssertionFailure() << s.str();
  }
  auto ad = a.detach().to(torch::kCPU, torch::kFloat64).contiguous().reshape(-1);
  auto bd = b.detach().to(torch::kCPU, torch::kFloat64).contiguous().reshape(-1);
  auto bad = ((ad - bd).abs() > (atol + rtol * bd.abs())) | (ad.isnan() != bd.isnan());
  if (!bad.any().item<bool>()) return ::testing::AssertionSuccess();
  const int64_t flat = bad.nonzero()[0][0].item<int64_t>();
  // Turn the flat index back into a multi-index for the message.
  std::ostringstream index;
  int64_t rest = flat;
  std::vector<int64_t> idx(a.dim());
  for (int64_t d = a.dim() - 1; d >= 0; --d) {
    idx[d] = rest % a.size(d);
    rest /= a.size(d);
  }
  index << "[";
  for (size_t d = 0; d < idx.size(); ++d) index << (d ? ", " : "") << idx[d];
  index << "]";
  return ::testing::AssertionFailure()
         << bad.sum().item<int64_t>() << " of " << ad.numel() << " elements differ; first at "
         << index.str() << ": " << ad[flat].item<double>() << " vs " << bd[flat].item<double>()
         << " (rtol " << rtol << ", atol " << atol << ")";
}

ScratchDir::ScratchDir(const std::string& name) {
  const char* root = std::getenv("DIFFUSION_TEST_DATA");
  path_ = std::string(root ? root : "/tmp") + "/" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace diffusion::testing
