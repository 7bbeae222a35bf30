// Exact scalar conversions between float and the 16-bit float formats stored in GGUF (F16, BF16).
// Rounding is IEEE round-to-nearest-even, as the F16C instructions and ggml do, so that values we
// write and values we read agree bit for bit with llama.cpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace airlock {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float v = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exponent == 31) return BitsToFloat(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  return BitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t F32ToF16(float f) {
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf stays inf; NaN stays a (quiet) NaN
    if (magnitude == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  }
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (magnitude < 0x38800000u) {  // below the smallest normal half: subnormal (or zero)
    // Scaling by 2^24 is exact; nearbyint rounds half to even in the default rounding mode.
    const uint32_t m = static_cast<uint32_t>(std::nearbyint(BitsToFloat(magnitude) * 16777216.0f));
    return static_cast<uint16_t>(sign | m);
  }
  magnitude += 0xfffu + ((magnitude >> 13) & 1u);  // round to nearest, ties to even
  magnitude -= 0x38000000u;                        // rebias exponent 127 -> 15
  return static_cast<uint16_t>(sign | (magnitude >> 13));
}

inline float Bf16ToF32(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }

inline uint16_t F32ToBf16(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 64u);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace airlock
