// The keyed standard-normal stream as portable, header-only code that CPU and CUDA compile
// alike (torch-free), so both give the same float32 values bit for bit.
//
// Value j of a row with key `key` is the KeyedRng stream of core/base/rng.h read in pairs:
// draw d = mix(key + (d+1)·γ) (what KeyedRng(key).next_u64() yields as its d-th value), pair p
// takes draws 2p and 2p+1 as u1, u2 = (x >> 11)·2^-53 (u1 clamped to >= 1e-300) and gives the
// Box–Muller values z0 = r cos(2π u2), z1 = r sin(2π u2), r = √(-2 ln u1); element 2p is z0,
// element 2p+1 is z1 (an odd-length row drops its last z1). libm's and CUDA's log/sin/cos are
// each accurate to an ulp or so but not identical, so ln and sincos(2π u) are evaluated here with
// only +, −, ×, ÷ and √ (IEEE-exact on both) in a fixed order: the callers compile this without
// floating-point contraction (-ffp-contract=off on the host, -fmad=false under nvcc).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define DIFFUSION_HOST_DEVICE __host__ __device__
#else
#define DIFFUSION_HOST_DEVICE
#endif

namespace diffusion {
namespace keyed_normal_detail {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

DIFFUSION_HOST_DEVICE inline uint64_t double_bits(double x) {
#ifdef __CUDA_ARCH__
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

DIFFUSION_HOST_DEVICE inline double bits_double(uint64_t bits) {
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

}  // namespace keyed_normal_detail

// Draw d of the stream with key `key`: SplitMix64's output function on key + (d+1)·γ, equal to
// the (d+1)-th KeyedRng(key).next_u64().
DIFFUSION_HOST_DEVICE inline uint64_t keyed_draw(uint64_t key, uint64_t d) {
  uint64_t z = key + (d + 1) * keyed_normal_detail::kGolden;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Natural logarithm of a positive, normal (not subnormal) double to ~1e-16 relative.
// x = m·2^e with m in [√½, √2) (exponent read from the bits), ln x = e·ln 2 + 2 atanh(s),
// s = (m-1)/(m+1), |s| <= 0.1716, so the odd series in s converges by s^25 to far below an ulp.
// ln 2 is split (fdlibm's ln2_hi has trailing zero bits, so e·ln2_hi is exact).
DIFFUSION_HOST_DEVICE inline double portable_log(double x) {
  const uint64_t bits = keyed_normal_detail::double_bits(x);
  int64_t e = static_cast<int64_t>((bits >> 52) & 0x7FF) - 1023;
  double m = keyed_normal_detail::bits_double((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
  const bool high = m >= 0x1.6a09e667f3bcdp+0;  // √2
  m = high ? m * 0.5 : m;                       // exact
  e += high ? 1 : 0;
  const double s = (m - 1.0) / (m + 1.0);  // m - 1 is exact (Sterbenz)
  const double w = s * s;
  double p = 0x1.47ae147ae147bp-5;  // 1/25
  p = p * w + 0x1.642c8590b2164p-5;  // 1/23
  p = p * w + 0x1.8618618618618p-5;  // 1/21
  p = p * w + 0x1.af286bca1af28p-5;  // 1/19
  p = p * w + 0x1.e1e1e1e1e1e1ep-5;  // 1/17
  p = p * w + 0x1.1111111111111p-4;  // 1/15
  p = p * w + 0x1.3b13b13b13b14p-4;  // 1/13
  p = p * w + 0x1.745d1745d1746p-4;  // 1/11
  p = p * w + 0x1.c71c71c71c71cp-4;  // 1/9
  p = p * w + 0x1.2492492492492p-3;  // 1/7
  p = p * w + 0x1.999999999999ap-3;  // 1/5
  p = p * w + 0x1.5555555555555p-2;  // 1/3
  const double log_m = 2.0 * (s + s * (w * p));
  const double ed = static_cast<double>(e);
  return ed * 0x1.62e42fee00000p-1 + (log_m + ed * 0x1.a39ef35793c76p-33);  // ln2_hi, ln2_lo
}

// sin(2πu) and cos(2πu) for u in [0, 1] to ~1e-16 (relative, also near the zeros, because the
// reduction is done on u exactly rather than on a rounded 2πu). Octant k = ⌊8u⌋ and f = 8u - k
// are exact; 2πu = q·π/2 + b with b = f·π/4 (k even, q = k/2) or b = -(1-f)·π/4 (k odd,
// q = (k+1)/2), so |b| <= π/4, where the Taylor series end at b^19 and b^20 below an ulp. The
// quadrant q then swaps and signs sin b, cos b without branches.
DIFFUSION_HOST_DEVICE inline void portable_sincos_2pi(double u, double* sin_out, double* cos_out) {
  const double v = 8.0 * u;  // exact
  const int k = static_cast<int>(v);
  const int odd = k & 1;
  const double g = (v - static_cast<double>(k)) - static_cast<double>(odd);  // f or f - 1, exact
  const int q = (k + odd) >> 1;
  const double b = g * 0x1.921fb54442d18p-1;  // π/4
  const double z = b * b;
  double ps = -0x1.2f49b46814157p-57;  // -1/19!
  ps = ps * z + 0x1.952c77030ad4ap-49;  // 1/17!
  ps = ps * z - 0x1.ae7f3e733b81fp-41;  // 1/15!
  ps = ps * z + 0x1.6124613a86d09p-33;  // 1/13!
  ps = ps * z - 0x1.ae64567f544e4p-26;  // 1/11!
  ps = ps * z + 0x1.71de3a556c734p-19;  // 1/9!
  ps = ps * z - 0x1.a01a01a01a01ap-13;  // 1/7!
  ps = ps * z + 0x1.1111111111111p-7;   // 1/5!
  ps = ps * z - 0x1.5555555555555p-3;   // 1/3!
  const double sin_b = b + b * (z * ps);
  double pc = 0x1.e542ba4020225p-62;    // 1/20!
  pc = pc * z - 0x1.6827863b97d97p-53;  // 1/18!
  pc = pc * z + 0x1.ae7f3e733b81fp-45;  // 1/16!
  pc = pc * z - 0x1.93974a8c07c9dp-37;  // 1/14!
  pc = pc * z + 0x1.1eed8eff8d898p-29;  // 1/12!
  pc = pc * z - 0x1.27e4fb7789f5cp-22;  // 1/10!
  pc = pc * z + 0x1.a01a01a01a01ap-16;  // 1/8!
  pc = pc * z - 0x1.6c16c16c16c17p-10;  // 1/6!
  pc = pc * z + 0x1.5555555555555p-5;   // 1/4!
  const double cos_b = (1.0 - 0.5 * z) + (z * z) * pc;
  // sin(qπ/2 + b), cos(qπ/2 + b): odd q swaps sin b and cos b; sin is negative for q = 2, 3,
  // cos for q = 1, 2 (q = 4 is q = 0). Multiplying by ±1 is exact.
  const bool swap = (q & 1) != 0;
  const double s = swap ? cos_b : sin_b;
  const double c = swap ? sin_b : cos_b;
  *sin_out = ((q & 2) != 0 ? -1.0 : 1.0) * s;
  *cos_out = (((q + 1) & 2) != 0 ? -1.0 : 1.0) * c;
}

// Pair p of the stream with key `key` in double: z0 = r cos(2π u2), z1 = r sin(2π u2).
DIFFUSION_HOST_DEVICE inline void keyed_normal_pair_double(uint64_t key, uint64_t p, double* z0, double* z1) {
  double u1 = static_cast<double>(keyed_draw(key, 2 * p) >> 11) * 0x1.0p-53;
  const double u2 = static_cast<double>(keyed_draw(key, 2 * p + 1) >> 11) * 0x1.0p-53;
  u1 = u1 < 1e-300 ? 1e-300 : u1;
  const double r = sqrt(-2.0 * portable_log(u1));  // IEEE-rounded on both
  double s, c;
  portable_sincos_2pi(u2, &s, &c);
  *z0 = r * c;
  *z1 = r * s;
}

// The same pair rounded to float32 (round to nearest on both sides).
DIFFUSION_HOST_DEVICE inline void keyed_normal_pair(uint64_t key, uint64_t p, float* z0, float* z1) {
  double d0, d1;
  keyed_normal_pair_double(key, p, &d0, &d1);
  *z0 = static_cast<float>(d0);
  *z1 = static_cast<float>(d1);
}

}  // namespace diffusion
