// MpiCommunicator: the Communicator for CPU tensors over any MPI communicator (a slice of the
// ranks as well as MPI_COMM_WORLD). Async all-reduces run on a communication thread in FIFO order.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "core/comm/communicator.h"

namespace diffusion {

class MpiCommunicator : public Communicator {
 public:
  enum class AsyncMode {
    // A communication thread when MPI provides MPI_THREAD_MULTIPLE, else synchronous.
    kThreadIfSupported,
    // all_reduce_async does the reduction before it returns (tests, debugging).
    kSynchronous,
  };

  // Collective over `comm`: every rank of it constructs (and destroys) together. `comm` is not
  // owned and must outlive this object; its traffic is kept apart from the caller's own by two
  // private duplicates (one for the communication thread, one for the blocking calls).
  explicit MpiCommunicator(MPI_Comm comm, AsyncMode mode = AsyncMode::kThreadIfSupported);
  // Finishes every queued reduction, stops the thread and frees the duplicates; never throws.
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string backend() const override { return "mpi"; }
  c10::Device device() const override { return c10::Device(c10::kCPU); }

  void all_reduce_sum(at::Tensor& tensor) override;
  // kAvg: MPI_SUM, then wait() divides the result by size() once (on the caller's thread), which
  // is bit-identical to dividing the summed tensor afterwards.
  std::unique_ptr<PendingCollective> all_reduce_async(at::Tensor tensor, ReduceOp op) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void barrier() override;

  double all_reduce_max(double value) override;
  double all_reduce_sum(double value) override;

  // True when async reductions run on the communication thread (overlap with computation).
  bool async_on_thread() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffusion
