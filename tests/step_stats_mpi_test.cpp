// trainer/step_stats.h at 1 and 3 ranks: the per-step loss and per-t-quarter means after one
// all-reduce equal the same means computed directly over every rank's samples.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <array>

#include "core/comm/mpi_communicator.h"
#include "tests/test_utils.h"
#include "trainer/step_stats.h"

namespace diffusion {
namespace {

using testing::world_rank;
using testing::world_size;

// Rank r's samples: losses r + k/8 at timesteps (37·k + 11·r) mod T, for k = 0 … 6.
std::pair<at::Tensor, at::Tensor> samples_of(int r, int64_t T) {
  auto k = torch::arange(7, torch::kLong);
  return {r + k.to(torch::kFloat32) / 8, (37 * k + 11 * r) % T};
}

TEST(StepStats, ReducedMeansEqualTheGlobalMeans) {
  const int64_t T = 100;
  MpiCommunicator comm(MPI_COMM_WORLD);
  StepStats stats(T);
  auto [losses, t] = samples_of(world_rank(), T);
  stats.begin_step(losses);
  // Two micro-batches, as the trainer adds them.
  stats.add(losses.slice(0, 0, 3), t.slice(0, 0, 3));
  stats.add(losses.slice(0, 3, 7), t.slice(0, 3, 7));
  const auto got = stats.reduce(comm);

  double total = 0, count = 0;
  std::array<double, 4> sum{}, n{};
  for (int r = 0; r < world_size(); ++r) {
    auto [l, tt] = samples_of(r, T);
    for (int64_t i = 0; i < l.size(0); ++i) {
      const double v = l[i].item<float>();
      const int q = static_cast<int>(std::min<int64_t>(tt[i].item<int64_t>() * 4 / T, 3));
      total += v, count += 1, sum[q] += v, n[q] += 1;
    }
  }
  EXPECT_NEAR(got.loss, total / count, 1e-12);
  for (int q = 0; q < 4; ++q) EXPECT_NEAR(got.loss_per_quarter[q], n[q] > 0 ? sum[q] / n[q] : 0.0, 1e-12) << q;

  // The next step starts from zero.
  stats.begin_step(losses);
  stats.add(torch::full({2}, 3.0f), torch::tensor({0, 99}, torch::kLong));
  const auto next = stats.reduce(comm);
  EXPECT_DOUBLE_EQ(next.loss, 3.0);
  EXPECT_DOUBLE_EQ(next.loss_per_quarter[0], 3.0);
  EXPECT_DOUBLE_EQ(next.loss_per_quarter[1], 0.0);
  EXPECT_DOUBLE_EQ(next.loss_per_quarter[3], 3.0);
}

}  // namespace
}  // namespace diffusion
