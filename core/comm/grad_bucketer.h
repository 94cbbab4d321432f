// GradBucketer: averages gradients over the ranks of a Communicator in buckets (~25 MB by
// default) whose all-reduce starts while backward is still running, as PyTorch's DDP reducer
// (with gradient_as_bucket_view) and Horovod's fusion buffer do. Each parameter's .grad is a view
// into its bucket's flat buffer, so autograd accumulates straight into the bucket and the
// reduced average lands in .grad without a copy either way. Parameters are assigned to buckets in
// reverse registration order (roughly the order backward produces their gradients); buckets are
// launched strictly in index order, so every rank issues the same collectives in the same order
// whatever order its hooks fire in. See grad_bucketer.cpp for the threading.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/comm/communicator.h"

namespace diffusion {

struct GradBucketerConfig {
  int64_t bucket_bytes = 25ll << 20;
};

class GradBucketer {
 public:
  // `params` are the model's parameters in registration order (the same on every rank). From
  // here on each trainable parameter's .grad is a view into a bucket (an existing .grad is copied
  // in, otherwise it starts at zero): reset gradients with zero_grad() below, not with an
  // optimiser's zero_grad(), which would set them to undefined and cost a copy per parameter.
  GradBucketer(Communicator& comm, std::vector<at::Tensor> params, const GradBucketerConfig& config);
  ~GradBucketer();
  GradBucketer(const GradBucketer&) = delete;
  GradBucketer& operator=(const GradBucketer&) = delete;

  // Zeroes every gradient in place (one fill per bucket) and points any .grad that no longer
  // aliases its bucket back at it. Call at the start of a step.
  void zero_grad();
  // Call before the backward pass whose gradients should be reduced (the last micro-batch of
  // a step). Earlier micro-batches accumulate into .grad (the bucket) with the bucketer idle.
  void prepare_for_backward();
  // After backward: launches the buckets whose hooks did not all fire (an unused parameter
  // contributes its current .grad, zero after zero_grad()), waits for every reduction and
  // leaves the rank average in each .grad.
  void finish();

  int64_t num_buckets() const;
  // Parameter indices of each bucket, in launch order (for tests and logs).
  std::vector<std::vector<int64_t>> bucket_assignment() const;
  // The flat buffer of bucket `index` (for tests: every .grad of the bucket is a view into it).
  at::Tensor bucket_buffer(int64_t index) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffusion
