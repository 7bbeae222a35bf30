// The sampler's PRNG: xoshiro256** seeded through splitmix64, written out so that a seed gives the
// same stream with every compiler and standard library (std:: distributions do not promise that).
//
// Thread-safety: a value type with no shared state; one thread uses an instance at a time.
#pragma once

#include <array>
#include <cstdint>

namespace airlock::inference {

// Steele, Lea and Flood's splitmix64: one 64-bit step of a Weyl sequence passed through a mixer.
// Advances `state` and returns the next output.
inline uint64_t SplitMix64(uint64_t& state) {
  state += 0x9e3779b97f4a7c15ULL;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Blackman and Vigna's xoshiro256**: 256 bits of state, period 2^256 - 1, passes BigCrush.
class SamplingRng {
 public:
  // Expands a 64-bit seed into the 256-bit state with splitmix64 (the authors' recommendation);
  // the result is never the all-zero state.
  explicit SamplingRng(uint64_t seed) { Seed(seed); }

  // For known-answer tests: starts from a raw state, which must not be all zero.
  static SamplingRng FromState(const std::array<uint64_t, 4>& state) {
    SamplingRng rng(0);
    rng.state_ = state;
    return rng;
  }

  void Seed(uint64_t seed) {
    uint64_t sm = seed;
    for (uint64_t& word : state_) word = SplitMix64(sm);
  }

  uint64_t Next() {
    const uint64_t result = RotateLeft(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = RotateLeft(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits: exact in a double, so identical everywhere.
  double NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t RotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  std::array<uint64_t, 4> state_{};
};

}  // namespace airlock::inference
