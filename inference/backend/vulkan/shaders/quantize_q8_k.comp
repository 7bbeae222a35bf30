// Activation rows of floats to Q8_K super-blocks as the CPU backend quantises them for K-quant
// weights (kernels' QuantizeActQ8_K): per block of 256, the signed value of largest magnitude (the
// first one on ties) maps to -127, q = min(127, round-half-even(x * -127 / max)), d = 1 / that
// scale (F32), and bsums[j] = the sum of quants 16j .. 16j + 15. An all-zero block is all zero.
// One invocation per block; a block is 73 words: d, the quants four to a word, the bsums two to
// a word (little-endian).
#version 450

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Q { uint q[]; };

layout(push_constant) uniform Push {
  uint blocks;  // blocks in all rows together (rows * cols / 256)
} p;

void main() {
  const uint b = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64;
  if (b >= p.blocks) return;
  const uint xb = b * 256;
  const uint qb = b * 73;
  float amax = 0.0;
  float signed_max = 0.0;
  for (uint j = 0; j < 256; ++j) {
    const float v = x[xb + j];
    if (abs(v) > amax) {
      amax = abs(v);
      signed_max = v;
    }
  }
  if (amax == 0.0) {
    for (uint j = 0; j < 73; ++j) q[qb + j] = 0u;
    return;
  }
  precise const float iscale = -127.0 / signed_max;
  q[qb] = floatBitsToUint(1.0 / iscale);
  int sums[16];
  for (uint g = 0; g < 16; ++g) sums[g] = 0;
  for (uint w = 0; w < 64; ++w) {
    uint word = 0u;
    for (uint k = 0; k < 4; ++k) {
      precise const float scaled = iscale * x[xb + 4 * w + k];
      const int v = min(int(roundEven(scaled)), 127);
      sums[w / 4] += v;
      word |= (uint(v) & 0xFFu) << (8 * k);
    }
    q[qb + 1 + w] = word;
  }
  for (uint g = 0; g < 8; ++g) {
    q[qb + 65 + g] = (uint(sums[2 * g]) & 0xFFFFu) | ((uint(sums[2 * g + 1]) & 0xFFFFu) << 16);
  }
}
