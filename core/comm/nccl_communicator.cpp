// NcclCommunicator: NCCL all-reduce and broadcast of CUDA tensors on a stream of its own, so
// reductions overlap with the compute on torch's stream; host values go over MPI. Set up from an
// MPI communicator: rank 0 creates the unique id, MPI_Bcast hands it to the others.
//
// Stream ordering: a collective must see the tensor as torch's current stream left it, so our
// stream first waits on an event recorded there; afterwards either the current stream waits on
// our completion event (synchronous calls) or the handle's wait() blocks the host on it (async).
// The handle keeps the tensor alive until then, so the caching allocator cannot hand its memory
// to someone else while NCCL still writes into it.
//
// Failure: the communicator is non-blocking (config.blocking = 0), so no NCCL call can block the
// host on a peer. Every host-side wait (a handle's wait(), barrier(), setup, teardown) polls the
// CUDA event or stream together with ncclCommGetAsyncError, and on an asynchronous error, or
// when the optional timeout has passed, aborts the communicator (ncclCommAbort) and throws. The
// error then reaches run_main, whose abort_job takes the whole job down: a dead or stuck peer
// ends the job instead of hanging it. Each poll loop is also a CollectiveScope, so the collective
// watchdog names the stuck rank before that timeout (communicator_factory gives NCCL a later one).
#include "core/comm/nccl_communicator.h"

#ifdef DIFFUSION_WITH_NCCL

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/base/check.h"
#include "core/base/cuda_check.h"
#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"

namespace diffusion {
namespace {

using Clock = std::chrono::steady_clock;

// Between two polls of a wait: short against a collective, long against a syscall.
constexpr auto kPollInterval = std::chrono::microseconds(50);

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

const char* op_name(ReduceOp op) { return op == ReduceOp::kAvg ? "avg" : "sum"; }

}  // namespace

struct NcclCommunicator::Impl {
  MPI_Comm host_comm = MPI_COMM_NULL;  // private duplicate: host values and barrier
  int rank = 0;
  int size = 1;
  int device = -1;
  double timeout_s = 0;       // 0: waits have no time limit
  ncclComm_t nccl = nullptr;  // nullptr once aborted
  cudaStream_t stream = nullptr;

  // Runs on every exit, also when the constructor throws half way; never throws.
  ~Impl() {
    if (nccl != nullptr) {
      try {
        // Our queued work first, then Finalize (flushes and reaches global quiescence without
        // blocking), then Destroy frees what is left locally. Without a timeout a dead peer
        // keeps this waiting; a job normally gets here after its failure aborted the comm.
        if (stream != nullptr) wait_for("teardown", "NCCL teardown", [&] { return cudaStreamQuery(stream); });
        settle("ncclCommFinalize", ncclCommFinalize(nccl));
        const ncclResult_t rc = ncclCommDestroy(nccl);
        nccl = nullptr;
        if (rc != ncclSuccess) log_rank("[comm] ncclCommDestroy: {}", ncclGetErrorString(rc));
      } catch (const std::exception& e) {
        log_rank("{}", e.what());  // wait_for/settle aborted the communicator already
        abort();
      }
    }
    if (stream != nullptr && cudaStreamDestroy(stream) != cudaSuccess) cudaGetLastError();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && host_comm != MPI_COMM_NULL) MPI_Comm_free(&host_comm);
  }

  void abort() {
    if (nccl == nullptr) return;
    const ncclResult_t rc = ncclCommAbort(nccl);
    nccl = nullptr;
    if (rc != ncclSuccess) log_rank("[comm] ncclCommAbort: {}", ncclGetErrorString(rc));
  }

  std::string where() const {
    return fmt::format("rank {} of {} (cuda:{}, host {})", rank, size, device, host_name());
  }

  void require_alive(const char* op) const {
    if (nccl == nullptr)
      throw Error(fmt::format("[comm] NcclCommunicator::{} on {}: the NCCL communicator was "
                              "aborted after an earlier failure",
                              op, where()));
  }

  // Aborts and throws with NCCL's text for `rc` and its last error message.
  [[noreturn]] void fail(const std::string& what, ncclResult_t rc) {
    const std::string last = ncclGetLastError(nccl);  // before the abort frees the communicator
    abort();
    throw Error(fmt::format("[comm] NCCL {} failed on {}: {} ({}); the NCCL communicator was "
                            "aborted",
                            what, where(), ncclGetErrorString(rc), last));
  }

  [[noreturn]] void time_out(const std::string& what, Clock::time_point start) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    abort();
    throw Error(fmt::format("[comm] NCCL {} on {} did not finish in {:.1f} s (timeout {} s): a "
                            "peer is dead or stuck; the NCCL communicator was aborted",
                            what, where(), elapsed, timeout_s));
  }

  bool timed_out(Clock::time_point start) const {
    return timeout_s > 0 && std::chrono::duration<double>(Clock::now() - start).count() > timeout_s;
  }

  // Throws (after aborting) when NCCL has recorded an asynchronous error.
  void check_async(const std::string& what) {
    require_alive(what.c_str());
    ncclResult_t state = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(nccl, &state);
    if (rc != ncclSuccess) fail(what + " (ncclCommGetAsyncError)", rc);
    if (state != ncclSuccess && state != ncclInProgress) fail(what, state);
  }

  // The result of an NCCL call on this non-blocking communicator: ncclInProgress means "under
  // way", and the next call may only come once the state has left it.
  void settle(const std::string& what, ncclResult_t rc) {
    if (rc == ncclInProgress) {
      CollectiveScope scope("NCCL call", host_comm);
      const Clock::time_point start = Clock::now();
      for (;;) {
        require_alive(what.c_str());
        const ncclResult_t query = ncclCommGetAsyncError(nccl, &rc);
        if (query != ncclSuccess) fail(what + " (ncclCommGetAsyncError)", query);
        if (rc != ncclInProgress) break;
        if (timed_out(start)) time_out(what, start);
        std::this_thread::sleep_for(kPollInterval);
      }
    }
    if (rc != ncclSuccess) fail(what, rc);
  }

  // Polls `query` (cudaEventQuery or cudaStreamQuery) until the work is done, watching NCCL's
  // asynchronous errors and the timeout; `scope_name` is what the collective watchdog calls it.
  template <typename Query>
  void wait_for(const std::string& what, const char* scope_name, Query&& query) {
    CollectiveScope scope(scope_name, host_comm);
    const Clock::time_point start = Clock::now();
    for (;;) {
      const cudaError_t rc = query();
      if (rc == cudaSuccess) return;
      if (rc != cudaErrorNotReady) {
        cudaGetLastError();
        abort();
        throw Error(fmt::format("[comm] NCCL {} on {}: CUDA error while waiting: {}; the NCCL "
                                "communicator was aborted",
                                what, where(), cudaGetErrorString(rc)));
      }
      check_async(what);
      if (timed_out(start)) time_out(what, start);
      std::this_thread::sleep_for(kPollInterval);
    }
  }

  ncclDataType_t checked_type(const at::Tensor& tensor, const char* op, ReduceOp reduce = ReduceOp::kSum) const {
    require_alive(op);
    if (!tensor.defined()) throw Error(fmt::format("[comm] NcclCommunicator::{}: undefined tensor", op));
    if (!tensor.is_cuda() || tensor.get_device() != device)
      throw Error(fmt::format("[comm] NcclCommunicator::{}: tensor on {}, expected cuda:{}", op,
                              tensor.device().str(), device));
    if (!tensor.is_contiguous())
      throw Error(fmt::format("[comm] NcclCommunicator::{}: tensor is not contiguous", op));
    if (reduce == ReduceOp::kAvg && !c10::isFloatingType(tensor.scalar_type()))
      throw Error(fmt::format("[comm] NcclCommunicator::{}: an average needs a floating-point "
                              "tensor, got {}",
                              op, c10::toString(tensor.scalar_type())));
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

  // An async all-reduce in flight. It refers to the communicator's state, so it must be finished
  // (waited or destroyed) before the communicator is destroyed, as GradBucketer does.
  class Pending : public PendingCollective {
   public:
    Pending(Impl* comm, std::string what, at::Tensor tensor, std::unique_ptr<CudaEvent> done)
        : comm_(comm), what_(std::move(what)), tensor_(std::move(tensor)), done_(std::move(done)) {}
    ~Pending() override {
      // The contract: destroying an unfinished handle waits (the tensor must not be freed while
      // NCCL writes into it). Never throws.
      if (finished_) return;
      try {
        wait();
      } catch (const std::exception& e) {
        log_rank("[comm] unobserved failure of an NCCL all-reduce: {}", e.what());
      }
    }
    void wait() override {
      if (finished_) return;
      // The async all-reduces are GradBucketer's buckets (its only user).
      comm_->wait_for(what_, "gradient all-reduce", [&] { return cudaEventQuery(done_->get()); });
      finished_ = true;
    }

   private:
    Impl* comm_;
    std::string what_;
    at::Tensor tensor_;
    std::unique_ptr<CudaEvent> done_;
    bool finished_ = false;
  };
};

namespace {

// NCCL takes one rank of a communicator per GPU: two ranks on one GPU fail its init with
// "Duplicate GPU detected" (seen on a one-GPU machine with 2 ranks and --share-gpus). Every rank
// sees every rank's GPU UUID, so all reach the same verdict and throw together, before NCCL.
void refuse_ranks_sharing_a_gpu(MPI_Comm comm, int device, int rank, int size) {
  // A failed query is agreed too: a rank that threw alone would leave the others in the gather.
  cudaDeviceProp props{};
  agree_or_throw(comm, capture_error([&] { CUDA_CHECK(cudaGetDeviceProperties(&props, device)); }),
                 "[comm] NcclCommunicator: reading the GPU's UUID");
  std::vector<char> uuids(static_cast<size_t>(16 * size));
  MPI_CHECK(MPI_Allgather(props.uuid.bytes, 16, MPI_BYTE, uuids.data(), 16, MPI_BYTE, comm));
  const auto uuid_of = [&](int r) { return std::string(uuids.data() + 16 * r, 16); };
  std::vector<int> same;  // the ranks on this rank's GPU, this one included
  for (int r = 0; r < size; ++r)
    if (uuid_of(r) == uuid_of(rank)) same.push_back(r);
  // Each sharing rank names its host and GPU; agree_or_throw shows every rank the lowest one's.
  std::string error;
  if (same.size() > 1)
    error = fmt::format(
        "ranks {} of the {} ranks of this communicator are on one GPU (cuda:{} on host {}, {}); "
        "NCCL needs a GPU of its own for each rank, so ranks that share GPUs (--share-gpus) cannot "
        "reduce with it: start at most one rank per GPU, or use --device cpu",
        fmt::join(same, ", "), size, device, host_name(), props.name);
  agree_or_throw(comm, error, "[comm] NcclCommunicator");
}

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm comm, int device, double timeout_s)
    : impl_(std::make_unique<Impl>()) {
  if (comm == MPI_COMM_NULL) throw Error("[comm] NcclCommunicator: MPI_COMM_NULL given");
  if (timeout_s < 0) throw Error(fmt::format("[comm] NcclCommunicator: timeout {} s is negative", timeout_s));
  Impl& s = *impl_;
  s.timeout_s = timeout_s;
  MPI_CHECK(MPI_Comm_rank(comm, &s.rank));
  MPI_CHECK(MPI_Comm_size(comm, &s.size));
  MPI_CHECK(MPI_Comm_dup(comm, &s.host_comm));
  MPI_CHECK(MPI_Comm_set_errhandler(s.host_comm, MPI_ERRORS_RETURN));
  CollectiveScope scope("NCCL setup", s.host_comm);

  // Every rank checks its device first and all agree before any NCCL call: a rank that threw
  // alone would leave the others waiting for it inside the NCCL setup.
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
                            "(rank {} of {} on host {}) sees {} CUDA device(s) and was asked for "
                            "device {}",
                            s.rank, s.size, host_name(), device_count, device));
  if (!all_usable)
    throw Error(fmt::format("[comm] NcclCommunicator needs a CUDA device on every rank: another "
                            "rank of this communicator has none usable (this is rank {} of {})",
                            s.rank, s.size));
  s.device = device;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  refuse_ranks_sharing_a_gpu(s.host_comm, device, s.rank, s.size);

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
  // Non-blocking: the init returns at once and its state is polled, within the timeout.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  s.settle("ncclCommInitRankConfig",
           ncclCommInitRankConfig(&s.nccl, s.size, setup.id, s.rank, &config));
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
c10::Device NcclCommunicator::device() const {
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(impl_->device));
}

void NcclCommunicator::all_reduce_sum(at::Tensor& tensor) {
  const ncclDataType_t type = impl_->checked_type(tensor, "all_reduce_sum");
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(impl_->device));
  cudaStream_t current = impl_->after_current_stream();
  impl_->settle("all_reduce (sum)",
                ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                              type, ncclSum, impl_->nccl, impl_->stream));
  std::unique_ptr<CudaEvent> done = impl_->record_done();
  CUDA_CHECK(cudaStreamWaitEvent(current, done->get(), 0));
}

std::unique_ptr<PendingCollective> NcclCommunicator::all_reduce_async(at::Tensor tensor, ReduceOp op) {
  const ncclDataType_t type = impl_->checked_type(tensor, "all_reduce_async", op);
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(impl_->device));
  impl_->after_current_stream();
  std::string what = fmt::format("all_reduce ({}, {} elements)", op_name(op), tensor.numel());
  impl_->settle(what, ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(),
                                    static_cast<size_t>(tensor.numel()), type,
                                    op == ReduceOp::kAvg ? ncclAvg : ncclSum, impl_->nccl,
                                    impl_->stream));
  return std::make_unique<Impl::Pending>(impl_.get(), std::move(what), std::move(tensor),
                                       impl_->record_done());
}

void NcclCommunicator::broadcast(at::Tensor& tensor, int root) {
  const ncclDataType_t type = impl_->checked_type(tensor, "broadcast");
  if (root < 0 || root >= impl_->size)
    throw Error(fmt::format("[comm] NcclCommunicator::broadcast: root {} outside 0..{}", root,
                            impl_->size - 1));
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(impl_->device));
  cudaStream_t current = impl_->after_current_stream();
  impl_->settle("broadcast",
                ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                              type, root, impl_->nccl, impl_->stream));
  std::unique_ptr<CudaEvent> done = impl_->record_done();
  CUDA_CHECK(cudaStreamWaitEvent(current, done->get(), 0));
}

void NcclCommunicator::barrier() {
  impl_->require_alive("barrier");
  CollectiveScope scope("barrier", impl_->host_comm);
  impl_->wait_for("barrier", "barrier", [&] { return cudaStreamQuery(impl_->stream); });
  MPI_CHECK(MPI_Barrier(impl_->host_comm));
}

double NcclCommunicator::all_reduce_max(double value) {
  CollectiveScope scope("host value all-reduce", impl_->host_comm);
  return mpi_all_reduce_scalar(value, MPI_MAX, impl_->host_comm);
}

double NcclCommunicator::all_reduce_sum(double value) {
  CollectiveScope scope("host value all-reduce", impl_->host_comm);
  return mpi_all_reduce_scalar(value, MPI_SUM, impl_->host_comm);
}

}  // namespace diffusion

#endif  // DIFFUSION_WITH_NCCL
