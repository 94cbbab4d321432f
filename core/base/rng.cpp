// Keyed, platform-independent random draws.
#include "core/base/rng.h"

#include <cmath>
#include <numeric>

namespace diffusion {

uint64_t stream_key(uint64_t seed, RngPurpose purpose, std::initializer_list<uint64_t> parts) {
  uint64_t key = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(purpose)));
  for (uint64_t part : parts) key = splitmix64(key ^ splitmix64(part + 0x632BE59BD9B4E019ull));
  return key;
}

uint64_t KeyedRng::below(uint64_t n) {
  if (n <= 1) return 0;
  // 128-bit product: the high word is uniform in [0, n) once the low word clears the threshold.
  uint64_t x = next_u64();
  __uint128_t m = static_cast<__uint128_t>(x) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      x = next_u64();
      m = static_cast<__uint128_t>(x) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

double KeyedRng::normal() {
  double u1 = uniform();
  const double u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

std::pair<double, double> KeyedRng::normal_pair() {
  double u1 = uniform();
  const double u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  const double r = std::sqrt(-2.0 * std::log(u1));
  return {r * std::cos(2.0 * M_PI * u2), r * std::sin(2.0 * M_PI * u2)};
}

std::vector<int64_t> keyed_permutation(int64_t n, uint64_t key) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  KeyedRng rng(key);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

}  // namespace diffusion
