// F32 -> F16 bits with round-to-nearest-even, as the CPU backend converts (inference/base/fp16.h):
// packHalf2x16's rounding is left to the implementation (lavapipe truncates), and a rounding that
// always goes one way biases every scale and cached K/V the same way.
uint F16Bits(float f) {
  const uint x = floatBitsToUint(f);
  const uint sign = (x >> 16) & 0x8000u;
  const uint e = (x >> 23) & 0xFFu;
  uint m = x & 0x7FFFFFu;
  if (e == 0xFFu) return sign | 0x7C00u | (m != 0u ? 0x200u : 0u);  // Inf, NaN
  const int exponent = int(e) - 127 + 15;
  if (exponent >= 31) return sign | 0x7C00u;  // beyond the largest half: Inf
  if (exponent <= 0) {                         // a subnormal half, or zero
    if (exponent < -10) return sign;
    m |= 0x800000u;
    const uint shift = uint(14 - exponent);
    uint h = m >> shift;
    const uint rest = m & ((1u << shift) - 1u);
    const uint halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (h & 1u) != 0u)) ++h;
    return sign | h;
  }
  uint h = sign | (uint(exponent) << 10) | (m >> 13);
  const uint rest = m & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0u)) ++h;  // a carry moves into the exponent
  return h;
}

float F16Round(float f) { return unpackHalf2x16(F16Bits(f)).x; }
