// Communicator: the small transport interface the trainer and sampler use (Marian's
// ICommunicator). MpiCommunicator (CPU tensors) and NcclCommunicator (CUDA tensors) implement
// it in their own files; nothing outside them includes mpi.h's collectives or nccl.h.
// A communicator wraps any MPI communicator, not only MPI_COMM_WORLD: distillation jobs run
// the training step on a slice of the ranks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace diffusion {

// A collective in flight; wait() blocks until the tensor holds the result and rethrows a
// failure. Destroying an unfinished handle waits for it.
// The reduction of an all-reduce. kAvg is the sum divided by the number of ranks, folded into
// the collective (NCCL: ncclAvg; MPI: the sum, then one division of the result before wait()
// returns), so a caller never divides afterwards. Floating-point tensors only for kAvg.
enum class ReduceOp { kSum, kAvg };

class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" | "nccl"
  // Where the tensors it reduces live (CPU for MPI, this rank's GPU for NCCL): the device the
  // trainer puts the model on.
  virtual c10::Device device() const = 0;

  // In place, contiguous float32/float64/int64 tensors on the backend's device.
  virtual void all_reduce_sum(at::Tensor& tensor) = 0;
  // Starts an all-reduce; collectives start in call order, which must be the same on every
  // rank. `tensor` must stay alive and untouched until wait() returns.
  virtual std::unique_ptr<PendingCollective> all_reduce_async(at::Tensor tensor, ReduceOp op) = 0;
  std::unique_ptr<PendingCollective> all_reduce_sum_async(at::Tensor tensor) {
    return all_reduce_async(std::move(tensor), ReduceOp::kSum);
  }
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;

  // Host-side control values (losses, flags, sizes), whatever the backend.
  virtual double all_reduce_max(double value) = 0;
  virtual double all_reduce_sum(double value) = 0;
};

}  // namespace diffusion
