// y[t * rows + r] (=, or += when accumulate) dot(weight row r, activation row t) for Q4_0 weights
// against Q8_0 activations (the CPU backend's activation format for them), with the CPU's
// numerics: per block of 32 the integer dot of (q - 8) and the activation quants is exact, then
// float(dot) * (dw * da) is summed over the blocks. A workgroup of 64 computes 8 weight rows for
// one activation row: 8 invocations per row take blocks in turn, then a shared-memory tree adds
// their partial sums.
//
// Blocks are 18 bytes (f16 scale, 16 bytes of nibbles: element j < 16 is the low nibble of byte
// j, element j + 16 its high nibble), so the buffers are read as 16-bit words; an activation block
// is 17 words (scale, then the quants two by two, little-endian).
#version 450
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Wt { uint16_t w[]; };
layout(std430, binding = 1) readonly buffer A { uint16_t a[]; };
layout(std430, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint blocks;      // blocks per row (columns / 32)
  uint rows;        // weight rows
  uint m;           // activation rows
  uint accumulate;  // 1: y += (the residual connection)
} p;

shared float partial[64];

int Low(uint word) { return int(word << 24) >> 24; }
int High(uint word) { return int(word << 16) >> 24; }
int Nibble(uint word, uint shift) { return int((word >> shift) & 0xFu) - 8; }

const uint kLanes = 8;  // invocations per row

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint lane = lid % kLanes;
  const uint r = gl_WorkGroupID.x * (64 / kLanes) + lid / kLanes;
  const uint t = gl_WorkGroupID.y;
  float s = 0.0;
  if (r < p.rows && t < p.m) {
    for (uint b = lane; b < p.blocks; b += kLanes) {
      const uint wb = (r * p.blocks + b) * 9;
      const uint ab = (t * p.blocks + b) * 17;
      int dot = 0;
      for (uint k = 0; k < 8; ++k) {
        const uint wq = uint(w[wb + 1 + k]);       // bytes 2k, 2k + 1: elements 2k, 2k + 1, 2k + 16, 2k + 17
        const uint low = uint(a[ab + 1 + k]);      // activation elements 2k, 2k + 1
        const uint high = uint(a[ab + 9 + k]);     // activation elements 2k + 16, 2k + 17
        dot += Nibble(wq, 0) * Low(low) + Nibble(wq, 8) * High(low) + Nibble(wq, 4) * Low(high) +
               Nibble(wq, 12) * High(high);
      }
      const float dw = unpackHalf2x16(uint(w[wb])).x;
      const float da = unpackHalf2x16(uint(a[ab])).x;
      s = fma(float(dot), dw * da, s);
    }
  }
  partial[lid] = s;
  barrier();
  for (uint k = kLanes / 2; k > 0; k >>= 1) {
    if (lane < k) partial[lid] += partial[lid + k];
    barrier();
  }
  if (lane == 0 && r < p.rows && t < p.m) {
    const uint o = t * p.rows + r;
    y[o] = p.accumulate != 0 ? y[o] + partial[lid] : partial[lid];
  }
}
