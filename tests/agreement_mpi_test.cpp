// core/comm/agreement.h at 1-4 ranks: success passes on every rank; a failure on one rank makes
// every rank throw the same error naming that rank; a failure everywhere reads as the message
// alone; broadcast_string carries any root's text.
#include <gtest/gtest.h>

#include <mpi.h>

#include <string>

#include "core/comm/agreement.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::world_rank;
using testing::world_size;

// The message every rank caught, and whether it was an AgreedError.
std::pair<std::string, bool> caught(const std::string& local_error, const std::string& what) {
  try {
    agree_or_throw(MPI_COMM_WORLD, local_error, what);
  } catch (const AgreedError& e) {
    return {e.what(), true};
  } catch (const Error& e) {
    return {e.what(), false};
  }
  return {"", false};
}

TEST(Agreement, SuccessEverywherePasses) {
  EXPECT_EQ(caught("", "[test] step").first, "");
}

TEST(Agreement, OneFailingRankIsNamedOnEveryRank) {
  const int W = world_size(), failing = W - 1;
  const auto [message, agreed] = caught(world_rank() == failing ? "disk full" : "", "[test] write");
  EXPECT_TRUE(agreed);  // MPI_COMM_WORLD: the whole job agreed
  const std::string expected =
      "[test] write failed on rank " + std::to_string(failing) + " of " + std::to_string(W) + ": disk full";
  EXPECT_EQ(message, expected);
}

TEST(Agreement, LowestOfSeveralFailingRanksIsNamed) {
  if (world_size() < 3) GTEST_SKIP() << "needs 3 ranks";
  const int rank = world_rank();
  const auto [message, agreed] = caught(rank >= 1 ? "error on " + std::to_string(rank) : "", "[test] x");
  EXPECT_EQ(message, "[test] x failed on rank 1 (and " + std::to_string(world_size() - 2) + " other ranks) of " +
                         std::to_string(world_size()) + ": error on 1");
}

TEST(Agreement, FailureEverywhereReadsAsTheMessage) {
  // Every rank finds the same bad option: one message, no rank list.
  EXPECT_EQ(caught("unknown option --x", "").first, "unknown option --x");
  // With a WHAT the ranks are counted.
  const int W = world_size();
  const std::string others = W > 1 ? " (and " + std::to_string(W - 1) + " other ranks)" : "";
  EXPECT_EQ(caught("no data", "[train] setup").first,
            "[train] setup failed on rank 0" + others + " of " + std::to_string(W) + ": no data");
}

TEST(Agreement, OnASliceOfTheJobItIsAPlainError) {
  if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  MPI_Comm half;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, world_rank() % 2, world_rank(), &half), MPI_SUCCESS);
  int half_size = 0;
  MPI_Comm_size(half, &half_size);
  bool agreed = true;
  std::string message;
  try {
    agree_or_throw(half, "bad", "");
  } catch (const AgreedError&) {
    agreed = true;
  } catch (const Error& e) {
    agreed = false;
    message = e.what();
  }
  MPI_Comm_free(&half);
  EXPECT_FALSE(agreed);  // the other half knows nothing of it: the job must be taken down
  EXPECT_EQ(message, "bad");
  EXPECT_GE(half_size, 1);
}

TEST(Agreement, AgreedReturnsTheValueOrThrowsEverywhere) {
  EXPECT_EQ(agreed(MPI_COMM_WORLD, "[test]", [] { return 41 + 1; }), 42);
  const int W = world_size();
  testing::expect_error([&] { agreed(MPI_COMM_WORLD, "[test] v", [&]() -> int {
                          if (world_rank() == 0) throw Error("bad value");
                          return 1;
                        }); },
                        {"[test] v failed on rank 0 of " + std::to_string(W) + ": bad value"});
}

TEST(Agreement, BroadcastStringFromAnyRoot) {
  for (int root = 0; root < world_size(); ++root) {
    const std::string mine = "text of rank " + std::to_string(world_rank()) + std::string(world_rank() * 3, 'x');
    EXPECT_EQ(broadcast_string(MPI_COMM_WORLD, mine, root),
              "text of rank " + std::to_string(root) + std::string(root * 3, 'x'));
  }
  EXPECT_EQ(broadcast_string(MPI_COMM_WORLD, world_rank() == 0 ? "" : "ignored"), "");
}

}  // namespace
}  // namespace diffusion
