// TEMPORARY stand-in until the comm branch lands (same API).
#pragma once
#include <mpi.h>
#include <c10/core/Device.h>
#include <string>
namespace diffusion {
enum class DeviceKind { kAuto, kCpu, kCuda };
DeviceKind parse_device_kind(const std::string& name);
struct DeviceRequest { DeviceKind kind = DeviceKind::kAuto; bool share_gpus = false; };
struct RankDevice { c10::Device device{c10::kCPU}; int local_rank = 0; int local_size = 1; std::string description; };
RankDevice select_device(MPI_Comm comm, const DeviceRequest& request);
}
