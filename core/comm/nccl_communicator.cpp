// NcclCommunicator: NCCL all-reduce and broadcast of CUDA tensors on a stream of its own, so
// reductions overlap with the compute on torch's stream; host values go over MPI. Set up from an
// MPI communicator: rank 0 creates the unique id, MPI_Bcast hands it to the others.
//
// Stream ordering: a collective must see the tensor as torch's current stream left it, so our
// stream first waits on an event recorded there; afterwards either the current stream waits on
// our completion event (synchronous calls) or the handle's wait() blocks the host on it (async).
// The handle keeps the tensor alive until then, so the caching allocator cannot hand its memory
// to someone else while NCCL still writes into it.
#include "core/comm/nccl_communicator.h"

#ifdef DIFFUSION_WITH_NCCL

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>

#include "core/base/cuda_check.h"
#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"

namespace diffusion {
namespace {

// The device events of one collective. Destroying an event whose work is pending is allowed
// (CUDA releases it once complete), so the destructor never has to wait.
class CudaEvent {
 public:
  CudaEvent() { CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~CudaEvent() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class NcclPending : public PendingCollective {
 public:
  NcclPending(at::Tensor tensor, std::unique_ptr<CudaEvent> done)
      : tensor_(std::move(tensor)), done_(std::move(done)) {}
  ~NcclPending() override {
    // The contract: destroying an unfinished handle waits (the tensor must not be freed while
    // NCCL writes into it). Never throws.
    if (!finished_ && cudaEventSynchronize(done_->get()) != cudaSuccess) {
      cudaGetLastError();
      log_rank("[comm] NCCL all-reduce failed while its handle was destroyed");
    }
  }
  void wait() override {
    CUDA_CHECK(cudaEventSynchronize(done_->get()));
    finished_ = true;
  }

 private:
  at::Tensor tensor_;
  std::unique_ptr<CudaEvent> done_;
  bool finished_ = false;
};

}  // namespace

struct NcclCommunicator::Impl {
  MPI_Comm host_comm = MPI_COMM_NULL;  // private duplicate: host values and barrier
  int rank = 0;
  int size = 1;
  int device = -1;
  ncclComm_t nccl = nullptr;
  cudaStream_t stream = nullptr;

  // Runs on every exit, also when the constructor throws half way; never throws.
  ~Impl() {
    if (stream != nullptr && cudaStreamSynchronize(stream) != cudaSuccess) cudaGetLastError();
    if (nccl != nullptr) {
      ncclResult_t rc = ncclCommDestroy(nccl);
      if (rc != ncclSuccess) log_rank("[comm] ncclCommDestroy: {}", ncclGetErrorString(rc));
    }
    if (stream != nullptr && cudaStreamDestroy(stream) != cudaSuccess) cudaGetLastError();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && host_comm != MPI_COMM_NULL) MPI_Comm_free(&host_comm);
  }

  ncclDataType_t checked_type(const at::Tensor& tensor, const char* op) const {
    if (!tensor.defined()) throw Error(fmt::format("[comm] NcclCommunicator::{}: undefined tensor", op));
    if (!tensor.is_cuda() || tensor.get_device() != device)
      throw Error(fmt::format("[comm] NcclCommunicator::{}: tensor on {}, expected cuda:{}", op,
                              tensor.device().str(), device));
    if (!tensor.is_contiguous())
      throw Error(fmt::format("[comm] NcclCommunicator::{}: tensor is not contiguous", op));
    switch (tensor.scalar_type()) {
      case at::kFloat:
        return ncclFloat32;
      case at::kDouble:
        return ncclFloat64;
      case at::kLong:
        return ncclInt64;
      case at::kHalf:
        return ncclFloat16;
      case at::kBFloat16:
        return ncclBfloat16;
      default:
        throw Error(fmt::format("[comm] NcclCommunicator::{}: dtype {} is not supported "
                                "(float32, float64, int64, float16, bfloat16)",
                                op, c10::toString(tensor.scalar_type())));
    }
  }

  // Makes our stream wait for the work queued so far on torch's current stream.
  cudaStream_t after_current_stream() const {
    cudaStream_t current = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
    CudaEvent ready;
    CUDA_CHECK(cudaEventRecord(ready.get(), current));
    CUDA_CHECK(cudaStreamWaitEvent(stream, ready.get(), 0));
    return current;
  }

  std::unique_ptr<CudaEvent> record_done() const {
    auto done = std::make_unique<CudaEvent>();
    CUDA_CHECK(cudaEventRecord(done->get(), stream));
    return done;
  }
};

NcclCommunicator::NcclCommunicator(MPI_Comm comm, int device) : impl_(std::make_unique<Impl>()) {
  if (comm == MPI_COMM_NULL) throw Error("[comm] NcclCommunicator: MPI_COMM_NULL given");
  Impl& s = *impl_;
  MPI_CHECK(MPI_Comm_rank(comm, &s.rank));
  MPI_CHECK(MPI_Comm_size(comm, &s.size));
  MPI_CHECK(MPI_Comm_dup(comm, &s.host_comm));
  MPI_CHECK(MPI_Comm_set_errhandler(s.host_comm, MPI_ERRORS_RETURN));

  // Every rank checks its device first and all agree before any NCCL call: a rank that threw
  // alone would leave the others waiting for it inside ncclCommInitRank.
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess) {
    device_count = 0;
    cudaGetLastError();  // "no driver / no device" is an answer here, not a failure
  }
  if (device < 0 && device_count > 0) CUDA_CHECK(cudaGetDevice(&device));
  const int usable = device >= 0 && device < device_count ? 1 : 0;
  int all_usable = 0;
  MPI_CHECK(MPI_Allreduce(&usable, &all_usable, 1, MPI_INT, MPI_MIN, s.host_comm));
  if (!usable)
    throw Error(fmt::format("[comm] NcclCommunicator needs a CUDA device on every rank: this rank "
                            "(rank {} of {}) sees {} CUDA device(s) and was asked for device {}",
                            s.rank, s.size, device_count, device));
  if (!all_usable)
    throw Error(fmt::format("[comm] NcclCommunicator needs a CUDA device on every rank: another "
                            "rank of this communicator has none usable (this is rank {} of {})",
                            s.rank, s.size));
  s.device = device;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));

  // Rank 0 sends a status with the id, so that its failure to make one fails every rank.
  struct {
    int ok;
    ncclUniqueId id;
  } setup{};
  if (s.rank == 0) {
    ncclResult_t rc = ncclGetUniqueId(&setup.id);
    setup.ok = rc == ncclSuccess ? 1 : 0;
    if (!setup.ok) {
      MPI_CHECK(MPI_Bcast(&setup, static_cast<int>(sizeof(setup)), MPI_BYTE, 0, s.host_comm));
      NCCL_CHECK(rc);
    }
  }
  MPI_CHECK(MPI_Bcast(&setup, static_cast<int>(sizeof(setup)), MPI_BYTE, 0, s.host_comm));
  if (!setup.ok) throw Error("[comm] NcclCommunicator: rank 0 failed to create the NCCL unique id");
  NCCL_CHECK(ncclCommInitRank(&s.nccl, s.size, setup.id, s.rank));
  // Non-blocking: our stream must not synchronise with the legacy default stream.
  CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
}

NcclCommunicator::~NcclCommunicator() {
  // ncclCommDestroy and cudaStreamDestroy act on the current device: select ours meanwhile,
  // with raw calls because a destructor must not throw.
  int previous = -1;
  const bool switched = impl_->device >= 0 && cudaGetDevice(&previous) == cudaSuccess &&
                        cudaSetDevice(impl_->device) == cudaSuccess;
  impl_.reset();
  if (switched) cudaSetDevice(previous);
  cudaGetLastError();
}

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
int NcclCommunicator::device() const { return impl_->device; }

void NcclCommunicator::all_reduce_sum(at::Tensor& tensor) {
  const ncclDataType_t type = impl_->checked_type(tensor, "all_reduce_sum");
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(impl_->device));
  cudaStream_t current = impl_->after_current_stream();
  NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                           type, ncclSum, impl_->nccl, impl_->stream));
  std::unique_ptr<CudaEvent> done = impl_->record_done();
  CUDA_CHECK(cudaStreamWaitEvent(current, done->get(), 0));
}

std::unique_ptr<PendingCollective> NcclCommunicator::all_reduce_sum_async(at::Tensor tensor) {
  const ncclDataType_t type = impl_->checked_type(tensor, "all_reduce_sum_async");
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(impl_->device));
  impl_->after_current_stream();
  NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                           type, ncclSum, impl_->nccl, impl_->stream));
  return std::make_unique<NcclPending>(std::move(tensor), impl_->record_done());
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  const ncclDataType_t type = impl_->checked_type(tensor, "broadcast");
  if (root < 0 || root >= impl_->size)
    throw Error(fmt::format("[comm] NcclCommunicator::broadcast: root {} outside 0..{}", root,
                            impl_->size - 1));
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(impl_->device));
  cudaStream_t current = impl_->after_current_stream();
  NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                           type, root, impl_->nccl, impl_->stream));
  std::unique_ptr<CudaEvent> done = impl_->record_done();
  CUDA_CHECK(cudaStreamWaitEvent(current, done->get(), 0));
}

void NcclCommunicator::barrier() {
  CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
  MPI_CHECK(MPI_Barrier(impl_->host_comm));
}

double NcclCommunicator::all_reduce_max(double value) {
  return mpi_all_reduce_scalar(value, MPI_MAX, impl_->host_comm);
}

double NcclCommunicator::all_reduce_sum(double value) {
  return mpi_all_reduce_scalar(value, MPI_SUM, impl_->host_comm);
}

}  // namespace diffusion

#endif  // DIFFUSION_WITH_NCCL
