// Counter-based randomness: every draw is a pure function of a key built from (seed, purpose,
// indices), so a stream does not depend on the rank count, the batch split or the thread that
// computes it. SplitMix64 (Steele et al. 2014) is the mixer; its output is fixed by its
// definition, unlike the std:: distributions, which differ between standard libraries.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace diffusion {

// Purposes keep streams of one seed apart (data order vs. flips vs. noise ...).
enum class RngPurpose : uint64_t {
  kEpochPermutation = 1,
  kFlip = 2,
  kTimestep = 3,
  kNoise = 4,
  kLabelDrop = 5,
  kToyData = 6,
  kSampleNoise = 7,
  kDropout = 8,
};

constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Key for (seed, purpose, a, b, ...): each part is mixed in turn, so keys of different
// tuples collide only with 64-bit-hash probability.
uint64_t stream_key(uint64_t seed, RngPurpose purpose, std::initializer_list<uint64_t> parts = {});

// A small sequential generator over one key (draw i is splitmix64(key + i·golden)).
class KeyedRng {
 public:
  explicit KeyedRng(uint64_t key) : state_(key) {}
  uint64_t next_u64() {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias (Lemire's multiply-and-reject).
  uint64_t below(uint64_t n);
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  // Standard normal (Box–Muller; the second value is discarded for simplicity of keying).
  double normal();
  // Two independent standard normals from one Box–Muller draw.
  std::pair<double, double> normal_pair();

 private:
  uint64_t state_;
};

// A uniformly random permutation of 0..n-1 (Fisher–Yates) determined by `key`.
std::vector<int64_t> keyed_permutation(int64_t n, uint64_t key);

}  // namespace diffusion
