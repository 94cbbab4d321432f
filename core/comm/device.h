// Device selection for one rank: `--device auto|cpu|cuda` parsed, then every rank of a
// communicator agrees on CPU or CUDA and each takes the GPU of its local rank on its node
// (MPI's shared-memory split), within what CUDA_VISIBLE_DEVICES leaves visible.
#pragma once

#include <c10/core/Device.h>
#include <mpi.h>

#include <string>

namespace diffusion {

enum class DeviceKind { kAuto, kCpu, kCuda };

// "auto" | "cpu" | "cuda"; anything else is an Error naming --device and the accepted values.
DeviceKind parse_device_kind(const std::string& text);
std::string device_kind_name(DeviceKind kind);

struct DeviceRequest {
  DeviceKind kind = DeviceKind::kAuto;
  // Let several ranks of a node use one GPU (otherwise more ranks on a node than GPUs is an error).
  bool share_gpus = false;
};

struct RankDevice {
  c10::Device device{c10::kCPU};
  int local_rank = 0;  // rank among the ranks of `comm` on this node
  int local_size = 1;  // ranks of `comm` on this node
  int gpu_shared_by = 1;  // ranks of this node on this rank's GPU (by UUID), this one included
  std::string description;  // the line select_device logged: host, rank, device, memory
};

// Collective over `comm`: every rank calls it together. kAuto is CUDA when every rank sees at
// least one GPU, else CPU on every rank (ranks never mix devices). A CUDA rank takes GPU
// local_rank (local_rank mod the count when the ranks of a node see fewer GPUs than they are,
// e.g. one each through CUDA_VISIBLE_DEVICES) and makes it the current device. Errors are agreed
// (every rank throws, none hangs): cuda without a GPU, or two ranks of a node on one GPU without
// share_gpus; their text names the host, the rank, the device count and CUDA_VISIBLE_DEVICES.
// Each rank logs one line describing its choice.
RankDevice select_device(MPI_Comm comm, const DeviceRequest& request);

}  // namespace diffusion
