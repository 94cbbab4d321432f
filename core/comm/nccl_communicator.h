// NcclCommunicator: the Communicator for CUDA tensors (NCCL), set up over an MPI communicator
// (rank 0 makes the NCCL id, MPI broadcasts it). nccl.h stays inside nccl_communicator.cpp.
// Built only with DIFFUSION_WITH_NCCL; make_communicator (communicator_factory.h) picks it.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "core/comm/communicator.h"

namespace diffusion {

class NcclCommunicator : public Communicator {
 public:
  // Collective over `comm` (not owned; every rank constructs together). `device` is this rank's
  // CUDA device, -1 for the current one. Throws diffusion::Error on every rank when any rank has
  // no usable CUDA device, instead of leaving the others waiting in NCCL's setup.
  // `timeout_s` (0 = none) bounds every host-side wait (setup, wait(), barrier()): past it the
  // NCCL communicator is aborted and the wait throws, naming the collective, rank and time.
  // An asynchronous NCCL error (a peer died) does the same at once.
  explicit NcclCommunicator(MPI_Comm comm, int device = -1, double timeout_s = 0);
  // Waits for this communicator's stream, then ncclCommFinalize + ncclCommDestroy (abort on a
  // failure) and stream destroy; never throws.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string backend() const override { return "nccl"; }

  // Tensors are contiguous CUDA tensors on this communicator's device. The collectives run on
  // the communicator's own stream after the work already queued on the current torch stream;
  // the synchronous ones then make the current stream wait for them (the host does not block).
  // An NCCL communicator is not thread-safe: calls must not overlap in time.
  void all_reduce_sum(at::Tensor& tensor) override;
  // wait() blocks the host until the reduction has finished on the device (polling, see the
  // constructor). kAvg is ncclAvg. Handles must be finished before the communicator goes.
  std::unique_ptr<PendingCollective> all_reduce_async(at::Tensor tensor, ReduceOp op) override;
  void broadcast(at::Tensor& tensor, int root) override;
  // Waits for this communicator's stream, then an MPI barrier.
  void barrier() override;

  // Host values travel over MPI (a private duplicate of `comm`).
  double all_reduce_max(double value) override;
  double all_reduce_sum(double value) override;

  c10::Device device() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffusion
