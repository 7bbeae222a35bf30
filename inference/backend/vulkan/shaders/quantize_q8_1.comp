// Activation rows of floats to Q8_1 blocks as the CPU backend quantises them (kernels'
// QuantizeActQ8_1): per block of 32, d = amax / 127, q = round-half-even(x * 127 / amax), and
// s = d * sum(q); d and s are stored as F16. One invocation per block; a block is 18 16-bit words
// (scale, sum, then the quants two by two, little-endian).
#version 450
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#extension GL_GOOGLE_include_directive : require
#include "f16.glsl"

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Q { uint16_t q[]; };

layout(push_constant) uniform Push {
  uint blocks;  // blocks in all rows together (rows * cols / 32)
} p;

void main() {
  const uint b = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64;
  if (b >= p.blocks) return;
  const uint xb = b * 32;
  float amax = 0.0;
  for (uint j = 0; j < 32; ++j) amax = max(amax, abs(x[xb + j]));
  const float d = amax / 127.0;
  const float id = amax != 0.0 ? 127.0 / amax : 0.0;
  int sum = 0;
  for (uint j = 0; j < 16; ++j) {
    const int lo = int(roundEven(x[xb + 2 * j] * id));
    const int hi = int(roundEven(x[xb + 2 * j + 1] * id));
    sum += lo + hi;
    q[b * 18 + 2 + j] = uint16_t((uint(lo) & 0xFFu) | ((uint(hi) & 0xFFu) << 8));
  }
  q[b * 18] = uint16_t(F16Bits(d));
  q[b * 18 + 1] = uint16_t(F16Bits(float(sum) * d));
}
