// GradBucketer under real MPI (ctest runs it at 1, 2, 3 and 4 ranks): a small network with the
// same weights on every rank and different data per rank. Every .grad is a view into its bucket
// (checked on the storage), and after backward + finish() it equals, bit for bit, the plain
// local gradients reduced here by hand (MPI_Allreduce of the same flat layout, then / W), and,
// up to round-off, their float64 mean over an MPI_Allgather; whatever the bucket size, the hook
// order of each rank, unused parameters, micro-batch accumulation or how .grad was reset.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/comm/grad_bucketer.h"
#include "core/comm/mpi_communicator.h"
#include "core/base/mpi_session.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::world_rank;
using testing::world_size;

using AsyncMode = MpiCommunicator::AsyncMode;

// Two branches whose creation order is a forward argument (so autograd runs their backward,
// and fires their hooks, in a different order), a parameter used only when asked, and one that
// is never used.
struct NetImpl : torch::nn::Module {
  NetImpl() {
    unused = register_parameter("unused", torch::randn({4, 2}));
    sometimes = register_parameter("sometimes", torch::randn({6}));
    in = register_module("in", torch::nn::Linear(5, 8));
    branch_a = register_module("branch_a", torch::nn::Linear(8, 6));
    branch_b = register_module("branch_b", torch::nn::Linear(8, 6));
    out = register_module("out", torch::nn::Linear(6, 3));
  }

  torch::Tensor forward(const torch::Tensor& x, bool b_first, bool use_sometimes) {
    auto h = torch::tanh(in(x));
    torch::Tensor a, b;
    if (b_first) {
      b = torch::sigmoid(branch_b(h));
      a = torch::tanh(branch_a(h));
    } else {
      a = torch::tanh(branch_a(h));
      b = torch::sigmoid(branch_b(h));
    }
    auto y = a * b;
    if (use_sometimes) y = y + sometimes;
    return out(y);
  }

  torch::Tensor unused, sometimes;
  torch::nn::Linear in{nullptr}, branch_a{nullptr}, branch_b{nullptr}, out{nullptr};
};
TORCH_MODULE(Net);

// The same weights on every rank: a fixed seed before construction.
Net make_net() {
  torch::manual_seed(1234);
  return Net();
}

struct Batch {
  torch::Tensor x, target;
};

// Different data per rank and per micro-batch.
Batch make_batch(int rank, int step, int micro) {
  torch::manual_seed(1000 + 100 * rank + 10 * step + micro);
  return {torch::randn({6, 5}), torch::randn({6, 3})};
}

// Per-rank behaviour that changes the graph: odd ranks build branch b first (other hook order),
// only rank 0 uses `sometimes`.
void backward(Net& net, const Batch& batch, int rank) {
  auto y = net->forward(batch.x, /*b_first=*/rank % 2 == 1, /*use_sometimes=*/rank == 0);
  torch::mse_loss(y, batch.target).backward();
}

// Start of a step: no gradients, except an existing one on the unused parameter of even ranks
// (as if an earlier micro-batch had produced it), which the average must include.
void reset_grads(Net& net, int rank) {
  net->zero_grad(/*set_to_none=*/true);
  if (rank % 2 == 0) net->unused.mutable_grad() = torch::full({4, 2}, 0.25f * (rank + 1));
}

std::vector<torch::Tensor> grads_of(Net& net) {
  std::vector<torch::Tensor> grads;
  for (auto& p : net->parameters())
    grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return grads;
}

// The reference: every rank's local gradients gathered and averaged in float64.
std::vector<torch::Tensor> world_average(const std::vector<torch::Tensor>& local) {
  std::vector<torch::Tensor> flat_parts;
  for (auto& g : local) flat_parts.push_back(g.to(torch::kFloat64).reshape({-1}));
  auto flat = torch::cat(flat_parts).contiguous();
  const int w = world_size();
  auto gathered = torch::empty({w, flat.numel()}, torch::kFloat64);
  MPI_CHECK(MPI_Allgather(flat.data_ptr<double>(), static_cast<int>(flat.numel()), MPI_DOUBLE,
                          gathered.data_ptr<double>(), static_cast<int>(flat.numel()), MPI_DOUBLE,
                          MPI_COMM_WORLD));
  auto mean = gathered.mean(/*dim=*/0);
  std::vector<torch::Tensor> result;
  int64_t offset = 0;
  for (auto& g : local) {
    result.push_back(mean.narrow(0, offset, g.numel()).view(g.sizes()));
    offset += g.numel();
  }
  return result;
}

// The reference the bucketer must match bit for bit: the local gradients laid out flat in
// `buckets` order, each bucket MPI_Allreduce'd (sum, on the world) and divided by W, as the
// bucketer's MPI path does (the same counts, so MPI picks the same summation order).
std::vector<torch::Tensor> reduced_by_hand(const std::vector<torch::Tensor>& local,
                                           const std::vector<std::vector<int64_t>>& buckets) {
  std::vector<torch::Tensor> result(local.size());
  for (const auto& bucket : buckets) {
    std::vector<torch::Tensor> parts;
    for (int64_t index : bucket) parts.push_back(local[index].reshape({-1}));
    auto flat = torch::cat(parts).contiguous();  // [bucket numel], float32
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr<float>(), static_cast<int>(flat.numel()),
                            MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    flat.div_(world_size());
    int64_t offset = 0;
    for (int64_t index : bucket) {
      result[index] = flat.narrow(0, offset, local[index].numel()).view(local[index].sizes());
      offset += local[index].numel();
    }
  }
  return result;
}

void expect_grads_equal(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(torch::equal(got[i], want[i]))
        << "parameter " << i << ": " << testing::tensor_near(got[i], want[i], 0, 0).message();
}

// Every trainable parameter's .grad lies inside its bucket's buffer, at its own place: a view
// with the parameter's shape, not a copy.
void expect_grads_are_bucket_views(const GradBucketer& bucketer, const std::vector<torch::Tensor>& params) {
  const auto buckets = bucketer.bucket_assignment();
  for (size_t b = 0; b < buckets.size(); ++b) {
    const torch::Tensor buffer = bucketer.bucket_buffer(static_cast<int64_t>(b));
    const auto* begin = static_cast<const char*>(buffer.data_ptr());
    const auto* end = begin + buffer.nbytes();
    const auto* expected = begin;
    for (int64_t index : buckets[b]) {
      const torch::Tensor& grad = params[index].grad();
      ASSERT_TRUE(grad.defined()) << "parameter " << index;
      EXPECT_TRUE(grad.is_alias_of(buffer)) << "parameter " << index << " has its own storage";
      const auto* data = static_cast<const char*>(grad.data_ptr());
      EXPECT_EQ(data, expected) << "parameter " << index << " is not at its offset";
      EXPECT_LE(data + grad.nbytes(), end) << "parameter " << index;
      EXPECT_EQ(grad.sizes(), params[index].sizes()) << "parameter " << index;
      expected += grad.nbytes();
    }
    EXPECT_EQ(expected, end) << "bucket " << b << " has room no parameter uses";
  }
}

void expect_grads_near(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(testing::tensor_near(got[i], want[i], /*rtol=*/1e-5, /*atol=*/1e-6)) << "parameter " << i;
}

// Bucket sizes: one parameter per bucket, a few per bucket, one bucket for everything.
const std::vector<int64_t> kBucketBytes = {1, 100, 1ll << 30};

class GradBucketerTest : public ::testing::TestWithParam<std::tuple<int64_t, AsyncMode>> {
 protected:
  GradBucketerConfig config() const {
    GradBucketerConfig c;
    c.bucket_bytes = std::get<0>(GetParam());
    return c;
  }
  AsyncMode mode() const { return std::get<1>(GetParam()); }
};

TEST_P(GradBucketerTest, GradientsAreTheRankAverageOfThePlainLocalGradients) {
  const int rank = world_rank();
  MpiCommunicator comm(MPI_COMM_WORLD, mode());
  Net reference = make_net();
  Net net = make_net();
  GradBucketer bucketer(comm, net->parameters(), config());
  // Two steps: the bucketer is reused across steps.
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const Batch batch = make_batch(rank, step, 0);
    reset_grads(reference, rank);
    backward(reference, batch, rank);
    const auto want = world_average(grads_of(reference));

    // Different data per rank: the average is not any rank's own gradient.
    if (world_size() > 1) {
      EXPECT_FALSE(testing::tensor_near(grads_of(reference).back(), want.back(), 1e-5, 1e-6));
    }

    reset_grads(net, rank);  // set to none: the hook copies them back into the buckets
    bucketer.prepare_for_backward();
    backward(net, batch, rank);
    bucketer.finish();
    expect_grads_near(grads_of(net), want);
    expect_grads_equal(grads_of(net), reduced_by_hand(grads_of(reference), bucketer.bucket_assignment()));
    expect_grads_are_bucket_views(bucketer, net->parameters());
  }
}

TEST_P(GradBucketerTest, MicroBatchesAccumulateLocallyAndReduceOnce) {
  const int rank = world_rank();
  MpiCommunicator comm(MPI_COMM_WORLD, mode());
  Net reference = make_net();
  Net net = make_net();
  GradBucketer bucketer(comm, net->parameters(), config());
  const Batch first = make_batch(rank, 0, 0), second = make_batch(rank, 0, 1);

  reset_grads(reference, rank);
  backward(reference, first, rank);
  const auto local_first = grads_of(reference);
  backward(reference, second, rank);
  const auto want = world_average(grads_of(reference));

  reset_grads(net, rank);
  backward(net, first, rank);  // bucketer idle: plain local accumulation
  expect_grads_near(grads_of(net), local_first);
  bucketer.prepare_for_backward();
  backward(net, second, rank);
  bucketer.finish();
  expect_grads_near(grads_of(net), want);
  expect_grads_equal(grads_of(net), reduced_by_hand(grads_of(reference), bucketer.bucket_assignment()));
}

// The trainer's way: zero_grad() of the bucketer at each step, so autograd accumulates straight
// into the buckets (the .grad tensors stay the same views throughout) and the result is the
// by-hand reduction bit for bit, with micro-batches too.
TEST_P(GradBucketerTest, ZeroGradKeepsTheViewsAndAutogradAccumulatesIntoTheBuckets) {
  const int rank = world_rank();
  MpiCommunicator comm(MPI_COMM_WORLD, mode());
  Net reference = make_net();
  Net net = make_net();
  const auto params = net->parameters();
  GradBucketer bucketer(comm, params, config());
  expect_grads_are_bucket_views(bucketer, params);
  std::vector<const void*> addresses;
  for (const auto& p : params) addresses.push_back(p.grad().data_ptr());
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const int micro_batches = 1 + step % 2;
    reference->zero_grad(/*set_to_none=*/true);
    for (int m = 0; m < micro_batches; ++m) backward(reference, make_batch(rank, step, m), rank);
    const auto want = reduced_by_hand(grads_of(reference), bucketer.bucket_assignment());

    bucketer.zero_grad();
    for (const auto& p : params) EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
    for (int m = 0; m < micro_batches; ++m) {
      if (m == micro_batches - 1) bucketer.prepare_for_backward();
      backward(net, make_batch(rank, step, m), rank);
    }
    bucketer.finish();
    expect_grads_equal(grads_of(net), want);
    // The same tensors as at construction: nothing was replaced, nothing copied.
    for (size_t i = 0; i < params.size(); ++i) EXPECT_EQ(params[i].grad().data_ptr(), addresses[i]) << i;
    // Gradient clipping (in place, as the trainer's clip_grad_norm_) keeps the views as well.
    torch::nn::utils::clip_grad_norm_(params, /*max_norm=*/1e-3);
    expect_grads_are_bucket_views(bucketer, params);
  }
  // A gradient replaced behind the bucketer's back is pointed back at its bucket by zero_grad().
  net->in->bias.mutable_grad() = torch::ones_like(net->in->bias);
  bucketer.zero_grad();
  expect_grads_are_bucket_views(bucketer, params);
  EXPECT_EQ(net->in->bias.grad().abs().sum().item<float>(), 0.0f);
}

// A gradient that exists before construction is carried into the bucket, others start at zero.
TEST(GradBucketer, ConstructionMakesEveryGradientAViewAndKeepsExistingValues) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  Net net = make_net();
  const auto existing = torch::randn({8});
  net->in->bias.mutable_grad() = existing.clone();
  for (int64_t bytes : kBucketBytes) {
    SCOPED_TRACE("bucket_bytes " + std::to_string(bytes));
    GradBucketerConfig config;
    config.bucket_bytes = bytes;
    const auto params = net->parameters();
    GradBucketer bucketer(comm, params, config);
    expect_grads_are_bucket_views(bucketer, params);
    for (const auto& p : params) {
      if (p.is_same(net->in->bias)) {
        EXPECT_TRUE(torch::equal(p.grad(), existing));
      } else {
        EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    BucketSizesAndModes, GradBucketerTest,
    ::testing::Combine(::testing::ValuesIn(kBucketBytes),
                       ::testing::Values(AsyncMode::kThreadIfSupported, AsyncMode::kSynchronous)),
    [](const ::testing::TestParamInfo<std::tuple<int64_t, AsyncMode>>& info) {
      return "Bytes" + std::to_string(std::get<0>(info.param)) +
             (std::get<1>(info.param) == AsyncMode::kSynchronous ? "Synchronous" : "Thread");
    });

// Forwards to MpiCommunicator and records the async launches (their sizes, in call order).
class RecordingCommunicator : public Communicator {
 public:
  explicit RecordingCommunicator(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend() const override { return inner_.backend(); }
  c10::Device device() const override { return inner_.device(); }
  void all_reduce_sum(at::Tensor& tensor) override { inner_.all_reduce_sum(tensor); }
  std::unique_ptr<PendingCollective> all_reduce_async(at::Tensor tensor, ReduceOp op) override {
    launches.push_back(tensor.numel());
    ops.push_back(op);
    return inner_.all_reduce_async(std::move(tensor), op);
  }
  void broadcast(at::Tensor& tensor, int root) override { inner_.broadcast(tensor, root); }
  void barrier() override { inner_.barrier(); }
  double all_reduce_max(double value) override { return inner_.all_reduce_max(value); }
  double all_reduce_sum(double value) override { return inner_.all_reduce_sum(value); }

  std::vector<int64_t> launches;
  std::vector<ReduceOp> ops;

 private:
  Communicator& inner_;
};

// Reductions start during backward (that is the overlap), in bucket order on every rank. With
// one parameter per bucket the assignment is: Linear parameters first (reverse registration),
// then `sometimes` (used on rank 0 only), then `unused`. Every rank launches the Linear buckets
// from its hooks; the last two wait for finish() on the ranks where they never fire.
TEST(GradBucketer, BucketsLaunchDuringBackwardInIndexOrder) {
  const int rank = world_rank();
  MpiCommunicator mpi(MPI_COMM_WORLD);
  RecordingCommunicator comm(mpi);
  Net net = make_net();
  GradBucketerConfig config;
  config.bucket_bytes = 1;
  GradBucketer bucketer(comm, net->parameters(), config);
  const auto buckets = bucketer.bucket_assignment();
  const auto params = net->parameters();
  const int64_t n = static_cast<int64_t>(params.size());
  ASSERT_EQ(bucketer.num_buckets(), n);
  ASSERT_TRUE(params[0].is_same(net->unused));
  ASSERT_TRUE(params[1].is_same(net->sometimes));

  reset_grads(net, rank);
  bucketer.prepare_for_backward();
  backward(net, make_batch(rank, 4, 0), rank);
  // Rank 0 uses `sometimes`, so its bucket launches during backward too; `unused` never does.
  EXPECT_EQ(static_cast<int64_t>(comm.launches.size()), rank == 0 ? n - 1 : n - 2);
  bucketer.finish();
  std::vector<int64_t> want;
  for (const auto& bucket : buckets) want.push_back(params[bucket.front()].numel());
  EXPECT_EQ(comm.launches, want);
  // The averaging is the collective's: one kAvg per bucket, no division afterwards.
  EXPECT_EQ(comm.ops, std::vector<ReduceOp>(buckets.size(), ReduceOp::kAvg));
}

TEST(GradBucketer, EveryBucketSizeGivesTheSameGradients) {
  const int rank = world_rank();
  MpiCommunicator comm(MPI_COMM_WORLD);
  std::vector<std::vector<torch::Tensor>> results;
  for (int64_t bytes : kBucketBytes) {
    Net net = make_net();
    GradBucketerConfig config;
    config.bucket_bytes = bytes;
    GradBucketer bucketer(comm, net->parameters(), config);
    reset_grads(net, rank);
    bucketer.prepare_for_backward();
    backward(net, make_batch(rank, 3, 0), rank);
    bucketer.finish();
    results.push_back(grads_of(net));
  }
  // The same values summed in the same rank order: equal up to float32 round-off.
  for (size_t k = 1; k < results.size(); ++k) expect_grads_near(results[k], results[0]);
}

TEST(GradBucketer, BucketsCoverEveryParameterOnceInReverseOrder) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  Net net = make_net();
  const auto params = net->parameters();
  const int64_t n = static_cast<int64_t>(params.size());
  for (int64_t bytes : {int64_t{1}, int64_t{100}, int64_t{200}, int64_t{1} << 30}) {
    SCOPED_TRACE("bucket_bytes " + std::to_string(bytes));
    GradBucketerConfig config;
    config.bucket_bytes = bytes;
    GradBucketer bucketer(comm, params, config);
    const auto buckets = bucketer.bucket_assignment();
    EXPECT_EQ(static_cast<int64_t>(buckets.size()), bucketer.num_buckets());
    std::vector<int64_t> order;
    for (const auto& bucket : buckets) {
      ASSERT_FALSE(bucket.empty());
      int64_t total = 0;
      for (int64_t index : bucket) total += params[index].numel() * 4;  // float32
      // Within the limit, unless one parameter alone is larger than a bucket.
      EXPECT_TRUE(total <= bytes || bucket.size() == 1) << total << " bytes";
      order.insert(order.end(), bucket.begin(), bucket.end());
    }
    std::vector<int64_t> reverse;
    for (int64_t i = n - 1; i >= 0; --i) reverse.push_back(i);
    EXPECT_EQ(order, reverse);
  }
  GradBucketerConfig tiny, huge;
  tiny.bucket_bytes = 1;
  huge.bucket_bytes = 1ll << 30;
  EXPECT_EQ(GradBucketer(comm, params, tiny).num_buckets(), n);
  EXPECT_EQ(GradBucketer(comm, params, huge).num_buckets(), 1);
  // 100 bytes: some bucket holds several small parameters (biases), so it is a real middle case.
  GradBucketerConfig mid;
  mid.bucket_bytes = 100;
  const int64_t mid_buckets = GradBucketer(comm, params, mid).num_buckets();
  EXPECT_GT(mid_buckets, 1);
  EXPECT_LT(mid_buckets, n);
}

TEST(GradBucketer, IdleWithoutPrepareAndFinishNeedsPrepare) {
  const int rank = world_rank();
  MpiCommunicator comm(MPI_COMM_WORLD);
  Net reference = make_net();
  Net net = make_net();
  GradBucketer bucketer(comm, net->parameters(), GradBucketerConfig{});
  const Batch batch = make_batch(rank, 5, 0);
  reset_grads(reference, rank);
  backward(reference, batch, rank);
  reset_grads(net, rank);
  backward(net, batch, rank);
  // Local gradients, untouched by the bucketer.
  expect_grads_near(grads_of(net), grads_of(reference));
  EXPECT_THROW(bucketer.finish(), Error);
}

TEST(GradBucketer, FrozenParametersAreLeftAlone) {
  const int rank = world_rank();
  MpiCommunicator comm(MPI_COMM_WORLD);
  Net net = make_net();
  net->in->weight.set_requires_grad(false);
  const auto params = net->parameters();
  int64_t frozen = -1;
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].is_same(net->in->weight)) frozen = static_cast<int64_t>(i);
  ASSERT_GE(frozen, 0);
  GradBucketerConfig config;
  config.bucket_bytes = 100;
  GradBucketer bucketer(comm, params, config);
  for (const auto& bucket : bucketer.bucket_assignment())
    for (int64_t index : bucket) EXPECT_NE(index, frozen);
  reset_grads(net, rank);
  bucketer.prepare_for_backward();
  backward(net, make_batch(rank, 6, 0), rank);
  bucketer.finish();
  EXPECT_FALSE(net->in->weight.grad().defined());
  EXPECT_TRUE(net->in->bias.grad().defined());
}

// A bucketer destroyed with hooks still registered leaves a network that trains as usual.
TEST(GradBucketer, DestroyedBucketerLeavesNoActiveHooks) {
  const int rank = world_rank();
  MpiCommunicator comm(MPI_COMM_WORLD);
  Net reference = make_net();
  Net net = make_net();
  {
    GradBucketer bucketer(comm, net->parameters(), GradBucketerConfig{});
    bucketer.prepare_for_backward();  // never finished: must not leave a reduction behind
  }
  const Batch batch = make_batch(rank, 7, 0);
  reset_grads(reference, rank);
  backward(reference, batch, rank);
  reset_grads(net, rank);
  backward(net, batch, rank);
  expect_grads_near(grads_of(net), grads_of(reference));
}

}  // namespace
}  // namespace diffusion
