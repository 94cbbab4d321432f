// TEMPORARY stand-in until the comm branch lands.
#include "core/comm/device.h"
#include "core/base/error.h"
namespace diffusion {
DeviceKind parse_device_kind(const std::string& name) {
  if (name == "auto") return DeviceKind::kAuto;
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "cuda") return DeviceKind::kCuda;
  throw Error("option --device: expected auto, cpu or cuda, got '" + name + "'");
}
RankDevice select_device(MPI_Comm, const DeviceRequest& request) {
  if (request.kind == DeviceKind::kCuda) throw Error("--device cuda: no CUDA device");
  return {};
}
}
