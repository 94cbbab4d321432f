// GradBucketer: averages gradients over the ranks of a Communicator in buckets (~25 MB by
// default) whose all-reduce starts while backward is still running, as PyTorch's DDP reducer
// and Horovod's fusion buffer do. Parameters are assigned to buckets in reverse registration
// order (roughly the order backward produces their gradients); buckets are launched strictly in
// index order, so every rank issues the same collectives in the same order whatever order its
// hooks fire in. See grad_bucketer.cpp for the threading.
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
  // `params` are the model's parameters in registration order (the same on every rank).
  GradBucketer(Communicator& comm, std::vector<at::Tensor> params, const GradBucketerConfig& config);
  ~GradBucketer();
  GradBucketer(const GradBucketer&) = delete;
  GradBucketer& operator=(const GradBucketer&) = delete;

  // Call before the backward pass whose gradients should be reduced (the last micro-batch of
  // a step). Earlier micro-batches accumulate into .grad as usual with the bucketer idle.
  void prepare_for_backward();
  // After backward: launches the buckets whose hooks did not all fire (unused parameters count
  // as zero), waits for every reduction and writes the rank average into each .grad.
  void finish();

  int64_t num_buckets() const;
  // Parameter indices of each bucket, in launch order (for tests and logs).
  std::vector<std::vector<int64_t>> bucket_assignment() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffusion
