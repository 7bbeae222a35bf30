// exp(x) for x <= 0, the only range a max-shifted softmax needs, written with plain IEEE-754
// arithmetic so that probabilities (and hence sampled tokens) do not depend on the platform's libm,
// and so that GCC can vectorise the loops that call it.
//
// Thread-safety: pure functions; callable from any thread.
#pragma once

#include <bit>
#include <cstdint>

namespace airlock::inference {

// Below this exp(x) is under FLT_MIN; such probabilities are flushed to zero on purpose (they are
// at least 2^-126 times smaller than the most likely token's and cannot be drawn in practice).
inline constexpr float kSoftmaxExpFloor = -87.0f;

// exp(x) for x <= 0 (including -inf), within 4 ulp; exactly 1 for x == 0 (or -0) and 0 for
// x < kSoftmaxExpFloor. x must not be NaN. Cody-Waite reduction x = n*ln2 + r with |r| <= ln2/2,
// then a degree-7 Taylor polynomial for exp(r) (truncation error < 6e-9 relative).
//
// Every data-dependent choice is an integer select on the bit patterns: GCC will not if-convert a
// float select or a float-to-int conversion under the default -ftrapping-math, and a branch in the
// body stops the loops that call this from vectorising.
inline float SoftmaxExp(float x) {
  // Clang contracts a*b+c into an FMA by default on targets that have one, which would change the
  // last bits from one machine to another; GCC in ISO mode (-std=c++20) already does not contract.
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
  // For x <= 0 the bit pattern grows with |x|, so "x < floor" is an unsigned comparison (-inf
  // included).
  constexpr uint32_t kFloorBits = std::bit_cast<uint32_t>(kSoftmaxExpFloor);
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t below = bits > kFloorBits ? ~0u : 0u;
  const float clamped = std::bit_cast<float>((below & kFloorBits) | (~below & bits));
  constexpr float kLog2e = 1.44269504088896341f;
  // Adding 1.5*2^23 rounds x*log2(e) to an integer n (default rounding mode) and leaves n in the
  // low mantissa bits, read back below without a float-to-int conversion.
  constexpr float kRoundMagic = 12582912.0f;
  const float shifted = clamped * kLog2e + kRoundMagic;
  const float n = shifted - kRoundMagic;  // in [-126, 0]
  // ln2 split so that n * kLn2Hi is exact for |n| < 2^9.
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.428606765330187e-06f;
  const float r = (clamped - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n from its exponent bits; n >= -126 keeps it a normal number.
  const uint32_t exponent =
      std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRoundMagic) + 127u;
  const float scale = std::bit_cast<float>(exponent << 23);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(p * scale) & ~below);
}

}  // namespace airlock::inference
