// Device selection (see device.h): the local rank from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED),
// the GPU count from the CUDA runtime, and every verdict agreed over the communicator.
#include "core/comm/device.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/comm/agreement.h"
#include "core/comm/collective_watchdog.h"
#ifdef DIFFUSION_WITH_CUDA
#include "core/comm/cuda_runtime.h"
#endif

namespace diffusion {
namespace {

// The ranks of `comm` that share this node's memory, freed on every exit.
class NodeComm {
 public:
  NodeComm(MPI_Comm comm, int rank) {
    MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &comm_));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~NodeComm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  NodeComm(const NodeComm&) = delete;
  NodeComm& operator=(const NodeComm&) = delete;
  MPI_Comm get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

int visible_gpus() {
#ifdef DIFFUSION_WITH_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

std::string visible_devices_setting() {
  const char* value = std::getenv("CUDA_VISIBLE_DEVICES");
  return value != nullptr ? fmt::format("CUDA_VISIBLE_DEVICES=\"{}\"", value) : "CUDA_VISIBLE_DEVICES unset";
}

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace

DeviceKind parse_device_kind(const std::string& text) {
  if (text == "auto") return DeviceKind::kAuto;
  if (text == "cpu") return DeviceKind::kCpu;
  if (text == "cuda") return DeviceKind::kCuda;
  throw Error(fmt::format("--device: '{}' is not a device; expected auto, cpu or cuda", text));
}

std::string device_kind_name(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kAuto:
      return "auto";
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kCuda:
      return "cuda";
  }
  return "?";
}

RankDevice select_device(MPI_Comm comm, const DeviceRequest& request) {
  if (comm == MPI_COMM_NULL) throw Error("[device] select_device: MPI_COMM_NULL given");
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_CHECK(MPI_Comm_size(comm, &size));
  const NodeComm node(comm, rank);
  const std::string host = host_name();
  RankDevice result;
  result.local_rank = node.rank();
  result.local_size = node.size();

  // CPU or CUDA, the same on every rank: auto takes CUDA only when no rank would be left out.
  const int gpus = visible_gpus();
  int fewest_gpus = 0;
  {
    CollectiveScope scope("device selection", comm);
    MPI_CHECK(MPI_Allreduce(&gpus, &fewest_gpus, 1, MPI_INT, MPI_MIN, comm));
  }
  const bool use_cuda =
      request.kind == DeviceKind::kCuda || (request.kind == DeviceKind::kAuto && fewest_gpus >= 1);
  if (!use_cuda) {
    result.description = fmt::format("[device] rank {} of {} on host {} (local rank {} of {}): cpu, "
                                     "{} intra-op threads (--device {})",
                                     rank, size, host, result.local_rank, result.local_size,
                                     at::get_num_threads(), device_kind_name(request.kind));
    log_rank("{}", result.description);
    return result;
  }

  std::string error;
  if (gpus == 0) {
#ifdef DIFFUSION_WITH_CUDA
    const char* build = "";
#else
    const char* build = "; this build has no CUDA support";
#endif
    error = fmt::format("--device {} needs a CUDA device, but rank {} on host {} sees {} CUDA "
                        "device(s) ({}{})",
                        device_kind_name(request.kind), rank, host, gpus, visible_devices_setting(), build);
  }
  agree_or_throw(comm, error, "[device] choosing a CUDA device");

#ifdef DIFFUSION_WITH_CUDA
  // GPU local_rank; with fewer visible GPUs than ranks on the node (say each rank sees only its
  // own through CUDA_VISIBLE_DEVICES) local_rank mod the count. Whether two ranks really land on
  // one GPU is decided below by the GPUs' UUIDs, which do not depend on what each rank sees.
  const int index = result.local_size <= gpus ? result.local_rank : result.local_rank % gpus;
  CudaDeviceInfo info;
  agree_or_throw(comm, capture_error([&] { info = use_cuda_device(index); }),
                 fmt::format("[device] opening GPU {} on host {}", index, host));

  std::vector<char> uuids(static_cast<size_t>(16 * result.local_size));
  info.uuid.resize(16);
  {
    CollectiveScope scope("device selection", node.get());
    MPI_CHECK(MPI_Allgather(info.uuid.data(), 16, MPI_BYTE, uuids.data(), 16, MPI_BYTE, node.get()));
  }
  std::vector<int> sharing;  // local ranks on this rank's GPU, this one included
  for (int r = 0; r < result.local_size; ++r)
    if (std::string(uuids.data() + 16 * r, 16) == info.uuid) sharing.push_back(r);
  error.clear();
  if (sharing.size() > 1 && !request.share_gpus)
    error = fmt::format("rank {} on host {}: local ranks {} of the {} ranks on this node would "
                        "share GPU {} ({}); each rank sees {} CUDA device(s) ({}). Start at most "
                        "one rank per GPU, or allow ranks to share GPUs",
                        rank, host, fmt::join(sharing, ", "), result.local_size, index, info.name,
                        gpus, visible_devices_setting());
  agree_or_throw(comm, error, "[device] assigning GPUs");

  result.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  result.gpu_shared_by = static_cast<int>(sharing.size());
  result.description = fmt::format("[device] rank {} of {} on host {} (local rank {} of {}): cuda:{} "
                                   "{}, {:.1f} GiB total, {:.1f} GiB free{}",
                                   rank, size, host, result.local_rank, result.local_size, index,
                                   info.name, info.total_bytes / kGiB, info.free_bytes / kGiB,
                                   sharing.size() > 1 ? fmt::format(" (shared by {} ranks)", sharing.size()) : "");
  log_rank("{}", result.description);
#endif
  return result;
}

}  // namespace diffusion
