// MpiCommunicator: CPU tensors over MPI. The async all-reduce is a FIFO of blocking
// MPI_Allreduce calls run by one communication thread, so reductions overlap with backward.
//
// Why two duplicated communicators: MPI matches collectives on a communicator by their order,
// and two threads of one process must never be inside collectives on the same communicator at
// the same time (the MPI standard's rule for threads). The communication thread therefore owns
// `async_comm` alone and runs its queue strictly in submission order (which the caller keeps
// identical on every rank); the blocking calls (host values, barrier, broadcast, the synchronous
// all-reduce) go through `sync_comm` from the caller's thread. Both streams of collectives are then ordered
// independently and identically on every rank, so host-control collectives stay correct while
// async work is queued, without draining the queue first. Duplicates also keep our traffic away
// from whatever else the owner of the wrapped communicator sends on it.
//
// Without MPI_THREAD_MULTIPLE a second thread may not call MPI at all; then there is no thread
// and all_reduce_async does the reduction before it returns (correct, without overlap).
//
// Averages: MPI has no average reduction, so kAvg is MPI_SUM and the handle's wait() divides
// the result by the number of ranks, once, on the caller's thread (the communication thread
// runs no tensor kernels, which would start a second OpenMP team beside the caller's).
#include "core/comm/mpi_communicator.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/comm/collective_watchdog.h"

namespace diffusion {
namespace {

struct MpiElement {
  MPI_Datatype type;
  size_t bytes;
};

// Validates a tensor argument and maps its dtype: the interface promises float32, float64 and
// int64 only (MPI has no reduction for half types), and averages of floating types only.
MpiElement checked_element(const at::Tensor& tensor, const char* op, ReduceOp reduce = ReduceOp::kSum) {
  if (!tensor.defined()) throw Error(fmt::format("[comm] MpiCommunicator::{}: undefined tensor", op));
  if (!tensor.device().is_cpu())
    throw Error(fmt::format("[comm] MpiCommunicator::{}: tensor on {}, expected a CPU tensor", op,
                            tensor.device().str()));
  if (!tensor.is_contiguous())
    throw Error(fmt::format("[comm] MpiCommunicator::{}: tensor is not contiguous", op));
  if (reduce == ReduceOp::kAvg && !c10::isFloatingType(tensor.scalar_type()))
    throw Error(fmt::format("[comm] MpiCommunicator::{}: an average needs a floating-point "
                            "tensor, got {}",
                            op, c10::toString(tensor.scalar_type())));
  switch (tensor.scalar_type()) {
    case at::kFloat:
      return {MPI_FLOAT, sizeof(float)};
    case at::kDouble:
      return {MPI_DOUBLE, sizeof(double)};
    case at::kLong:
      return {MPI_INT64_T, sizeof(int64_t)};
    default:
      throw Error(fmt::format("[comm] MpiCommunicator::{}: dtype {} is not supported "
                              "(float32, float64, int64)",
                              op, c10::toString(tensor.scalar_type())));
  }
}

// MPI counts are int; a larger tensor goes in chunks (each rank cuts at the same offsets).
constexpr int64_t kMaxChunk = std::numeric_limits<int>::max();

void all_reduce_in_place(const at::Tensor& tensor, MpiElement element, MPI_Op op, MPI_Comm comm) {
  char* data = static_cast<char*>(tensor.data_ptr());
  const int64_t count = tensor.numel();
  for (int64_t done = 0; done < count;) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - done));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + done * static_cast<int64_t>(element.bytes), n,
                            element.type, op, comm));
    done += n;
  }
}

// One queued reduction; shared by the queue and the caller's handle.
struct AsyncJob {
  at::Tensor tensor;
  MpiElement element{};
  int divisor = 1;  // kAvg: the number of ranks, applied by the handle's wait(); else 1
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::exception_ptr error;

  void complete(std::exception_ptr failure) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      error = std::move(failure);
      done = true;
    }
    done_cv.notify_all();
  }
};

class MpiPending : public PendingCollective {
 public:
  explicit MpiPending(std::shared_ptr<AsyncJob> job) : job_(std::move(job)) {}
  ~MpiPending() override {
    // The contract: destroying an unfinished handle waits; a destructor must not throw, so an
    // unobserved failure is logged instead.
    std::exception_ptr error = block();
    if (error && !observed_) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        log_rank("[comm] unobserved async all-reduce failure: {}", e.what());
      } catch (...) {
        log_rank("[comm] unobserved async all-reduce failure");
      }
    }
  }
  void wait() override {
    std::exception_ptr error = block();
    observed_ = true;
    if (error) std::rethrow_exception(error);
    if (job_->divisor != 1 && !divided_) {
      job_->tensor.div_(job_->divisor);
      divided_ = true;
    }
  }

 private:
  std::exception_ptr block() {
    std::unique_lock<std::mutex> lock(job_->mutex);
    job_->done_cv.wait(lock, [&] { return job_->done; });
    return job_->error;
  }

  std::shared_ptr<AsyncJob> job_;
  bool observed_ = false;
  bool divided_ = false;  // a second wait() must not divide again
};

void log_current_exception(const char* where) {
  try {
    throw;
  } catch (const std::exception& e) {
    log_rank("[comm] {}: {}", where, e.what());
  } catch (...) {
    log_rank("[comm] {}: unknown error", where);
  }
}

}  // namespace

struct MpiCommunicator::Impl {
  MPI_Comm sync_comm = MPI_COMM_NULL;   // caller's thread only
  MPI_Comm async_comm = MPI_COMM_NULL;  // communication thread only (or the caller, when synchronous)
  int rank = 0;
  int size = 1;
  bool use_thread = false;

  std::mutex mutex;  // guards queue, stopping, failure
  std::condition_variable queue_cv;
  std::deque<std::shared_ptr<AsyncJob>> queue;
  bool stopping = false;
  // The first failure of the thread. After it this rank's sequence of collectives no longer
  // matches the other ranks', so every later job fails with it instead of risking a hang.
  std::exception_ptr failure;
  std::thread thread;

  void run_queue() {
    for (;;) {
      std::shared_ptr<AsyncJob> job;
      std::exception_ptr earlier_failure;
      {
        std::unique_lock<std::mutex> lock(mutex);
        // Queued work is finished even when stopping: the other ranks run the same collectives.
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        job = std::move(queue.front());
        queue.pop_front();
        earlier_failure = failure;
      }
      if (earlier_failure) {
        job->complete(earlier_failure);
        continue;
      }
      try {
        // The async all-reduces are GradBucketer's buckets (its only user).
        CollectiveScope scope("gradient all-reduce", async_comm);
        all_reduce_in_place(job->tensor, job->element, MPI_SUM, async_comm);
        job->complete(nullptr);
      } catch (...) {
        std::exception_ptr error = std::current_exception();
        {
          std::lock_guard<std::mutex> lock(mutex);
          failure = error;
        }
        job->complete(error);
      }
    }
  }
};

MpiCommunicator::MpiCommunicator(MPI_Comm comm, AsyncMode mode) : impl_(std::make_unique<Impl>()) {
  if (comm == MPI_COMM_NULL) throw Error("[comm] MpiCommunicator: MPI_COMM_NULL given");
  MPI_CHECK(MPI_Comm_rank(comm, &impl_->rank));
  MPI_CHECK(MPI_Comm_size(comm, &impl_->size));
  {
    CollectiveScope scope("communicator setup", comm);
    MPI_CHECK(MPI_Comm_dup(comm, &impl_->sync_comm));
    MPI_CHECK(MPI_Comm_dup(comm, &impl_->async_comm));
  }
  // Errors on our duplicates come back as codes so MPI_CHECK can name the call and rank.
  MPI_CHECK(MPI_Comm_set_errhandler(impl_->sync_comm, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_set_errhandler(impl_->async_comm, MPI_ERRORS_RETURN));

  int provided = MPI_THREAD_SINGLE;
  MPI_CHECK(MPI_Query_thread(&provided));
  impl_->use_thread = mode == AsyncMode::kThreadIfSupported && provided == MPI_THREAD_MULTIPLE;
  if (impl_->use_thread) impl_->thread = std::thread([impl = impl_.get()] { impl->run_queue(); });
}

MpiCommunicator::~MpiCommunicator() {
  if (impl_->thread.joinable()) {
    {
      std::lock_guard<std::mutex> lock(impl_->mutex);
      impl_->stopping = true;
    }
    impl_->queue_cv.notify_all();
    impl_->thread.join();
  }
  // Freeing a communicator after MPI_Finalize is an error; by then MPI has released it anyway.
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  try {
    MPI_CHECK(MPI_Comm_free(&impl_->async_comm));
    MPI_CHECK(MPI_Comm_free(&impl_->sync_comm));
  } catch (...) {
    log_current_exception("freeing the communicator");
  }
}

int MpiCommunicator::rank() const { return impl_->rank; }
int MpiCommunicator::size() const { return impl_->size; }
bool MpiCommunicator::async_on_thread() const { return impl_->use_thread; }

void MpiCommunicator::all_reduce_sum(at::Tensor& tensor) {
  const MpiElement element = checked_element(tensor, "all_reduce_sum");
  CollectiveScope scope("tensor all-reduce", impl_->sync_comm);
  all_reduce_in_place(tensor, element, MPI_SUM, impl_->sync_comm);
}

std::unique_ptr<PendingCollective> MpiCommunicator::all_reduce_async(at::Tensor tensor, ReduceOp op) {
  auto job = std::make_shared<AsyncJob>();
  job->element = checked_element(tensor, "all_reduce_async", op);
  job->divisor = op == ReduceOp::kAvg ? impl_->size : 1;
  job->tensor = std::move(tensor);
  if (!impl_->use_thread) {
    // Synchronous fallback: async_comm is still the one that carries these reductions, so the
    // order of collectives per communicator is the same as with the thread.
    CollectiveScope scope("gradient all-reduce", impl_->async_comm);
    all_reduce_in_place(job->tensor, job->element, MPI_SUM, impl_->async_comm);
    job->complete(nullptr);
    return std::make_unique<MpiPending>(std::move(job));
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->queue.push_back(job);
  }
  impl_->queue_cv.notify_one();
  return std::make_unique<MpiPending>(std::move(job));
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  const MpiElement element = checked_element(tensor, "broadcast");
  if (root < 0 || root >= impl_->size)
    throw Error(fmt::format("[comm] MpiCommunicator::broadcast: root {} outside 0..{}", root,
                            impl_->size - 1));
  CollectiveScope scope("broadcast", impl_->sync_comm);
  char* data = static_cast<char*>(tensor.data_ptr());
  const int64_t count = tensor.numel();
  for (int64_t done = 0; done < count;) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - done));
    MPI_CHECK(MPI_Bcast(data + done * static_cast<int64_t>(element.bytes), n, element.type, root,
                        impl_->sync_comm));
    done += n;
  }
}

void MpiCommunicator::barrier() {
  CollectiveScope scope("barrier", impl_->sync_comm);
  MPI_CHECK(MPI_Barrier(impl_->sync_comm));
}

// The scope is here rather than in mpi_all_reduce_scalar: core/base knows no watchdog.
double MpiCommunicator::all_reduce_max(double value) {
  CollectiveScope scope("host value all-reduce", impl_->sync_comm);
  return mpi_all_reduce_scalar(value, MPI_MAX, impl_->sync_comm);
}

double MpiCommunicator::all_reduce_sum(double value) {
  CollectiveScope scope("host value all-reduce", impl_->sync_comm);
  return mpi_all_reduce_scalar(value, MPI_SUM, impl_->sync_comm);
}

}  // namespace diffusion
