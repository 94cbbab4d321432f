// Test helper for tests/diffusers_compare_test.py: applies our core ddpm_step to inputs written by
// Python, so single DDPM steps can be compared with diffusers' DDPMScheduler on the same x_t,
// network output and noise. Usage: ddpm_step_probe CASES.h5. Every group of the file is one
// case: float32 datasets `xt`, `output`, `noise` [n, ...] and int64 attributes T (linear
// schedule), steps (leading spacing, S = T for the plain chain), timestep (an original
// timestep among the visited ones), prediction (0 eps, 1 x0, 2 v), variance (0 fixed-large,
// 1 fixed-small) and clip (0/1). Writes our x_{t-1} as dataset `ours` into each group.
// A group with int64 attributes seed, count, draws and dim instead is a request for the
// sampler's keyed noise: it gets `noise` float32 [draws, count, dim], row [k][i] being draw k
// of sample i (what the sampler adds at its noisy steps), so that diffusers' stochastic
// schedulers can be fed the same noise.
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/base/h5.h"
#include "core/base/rng.h"
#include "core/diffusion/keyed_noise.h"
#include "core/diffusion/samplers.h"
#include "core/diffusion/schedule.h"
#include "core/diffusion/spacing.h"

namespace diffusion {
namespace {

int64_t int_attribute(hid_t group, const char* name) {
  H5Attribute a(H5_CHECK(H5Aopen(group, name, H5P_DEFAULT)));
  int64_t value = 0;
  H5_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, &value));
  return value;
}

at::Tensor read_tensor(hid_t group, const char* name) {
  H5DataSet d(H5_CHECK(H5Dopen2(group, name, H5P_DEFAULT)));
  H5DataSpace space(H5_CHECK(H5Dget_space(d.get())));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  auto t = torch::empty(std::vector<int64_t>(dims.begin(), dims.end()), torch::kFloat32);
  H5_CHECK(H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr<float>()));
  return t;
}

void write_tensor(hid_t group, const char* name, const at::Tensor& t) {
  const auto c = t.contiguous();
  std::vector<hsize_t> dims(c.sizes().begin(), c.sizes().end());
  H5DataSpace space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  H5DataSet d(H5_CHECK(
      H5Dcreate2(group, name, H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
  H5_CHECK(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.data_ptr<float>()));
}

void run(const std::string& path) {
  h5_silence_errors();
  H5File file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  if (!file.valid()) throw Error(path + ": cannot open");
  hsize_t count = 0;
  H5_CHECK(H5Gget_num_objs(file.get(), &count));
  for (hsize_t k = 0; k < count; ++k) {
    char name[256];
    H5Gget_objname_by_idx(file.get(), k, name, sizeof(name));
    H5Group g(H5_CHECK(H5Gopen2(file.get(), name, H5P_DEFAULT)));
    if (H5_CHECK(H5Aexists(g.get(), "draws")) > 0) {
      const auto seed = static_cast<uint64_t>(int_attribute(g.get(), "seed"));
      const int64_t n = int_attribute(g.get(), "count"), draws = int_attribute(g.get(), "draws");
      std::vector<at::Tensor> rows;  // [count, dim] each
      for (int64_t k = 0; k < draws; ++k) {
        std::vector<uint64_t> keys;
        for (int64_t i = 0; i < n; ++i)
          keys.push_back(stream_key(seed, RngPurpose::kSampleNoise, {static_cast<uint64_t>(i), static_cast<uint64_t>(k)}));
        rows.push_back(keyed_normal(keys, {int_attribute(g.get(), "dim")}, at::kCPU));
      }
      write_tensor(g.get(), "noise", torch::stack(rows));
      continue;
    }
    const int64_t T = int_attribute(g.get(), "T"), S = int_attribute(g.get(), "steps");
    const int64_t timestep = int_attribute(g.get(), "timestep");
    const auto prediction = static_cast<Prediction>(int_attribute(g.get(), "prediction"));
    const auto variance = int_attribute(g.get(), "variance") == 0 ? VarianceKind::kFixedLarge : VarianceKind::kFixedSmall;
    const bool clip = int_attribute(g.get(), "clip") != 0;
    // The sampler's DDPM: the ancestral chain on the schedule respaced to the visited steps.
    auto visited = timestep_spacing(TimestepSpacing::kLeading, T, S);
    std::reverse(visited.begin(), visited.end());  // ascending
    const auto at = std::find(visited.begin(), visited.end(), timestep);
    if (at == visited.end()) throw Error(std::string(name) + ": timestep is not visited");
    const NoiseSchedule schedule = NoiseSchedule::from_config({ScheduleKind::kLinear, T}).respaced(visited);
    const auto out = ddpm_step(schedule, at - visited.begin(), read_tensor(g.get(), "xt"), read_tensor(g.get(), "output"),
                               prediction, variance, clip, read_tensor(g.get(), "noise"));
    write_tensor(g.get(), "ours", out);
  }
}

}  // namespace
}  // namespace diffusion

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: ddpm_step_probe CASES.h5\n");
    return 2;
  }
  try {
    diffusion::run(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm_step_probe: %s\n", e.what());
    return 1;
  }
  return 0;
}
