// y[t * rows + r] (=, or += when accumulate) dot(weight row r, activation row t) for Q6_K weights
// against Q8_K activations, with the CPU's numerics (kernels' Q6_K products): per super-block of
// 256, isum = sum_j scale_j * ((q - 32) . a)_j is exact (16 sub-blocks of 16, signed scales),
// then s += float(isum) * (d * ad) (fused). A workgroup of 64 computes 8 weight rows for one
// activation row: 8 invocations per row take super-blocks in turn, then a shared-memory tree adds
// their partial sums.
//
// A Q6_K block is 210 bytes, so the weights are read as 16-bit words (105 a block): 128 bytes of
// low nibbles (ql), 64 bytes of high bit pairs (qh), 16 int8 scales, d (F16). Element
// 128h + 32u + l (u < 4, l < 32) takes the low (u < 2) or high nibble of ql[64h + 32(u % 2) + l]
// and bits 2u, 2u + 1 of qh[32h + l]. A Q8_K block is 73 words: d (F32), 256 int8 quants, bsums.
#version 450
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Wt { uint16_t w[]; };
layout(std430, binding = 1) readonly buffer A { uint a[]; };
layout(std430, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint blocks;      // super-blocks per row (columns / 256)
  uint rows;        // weight rows
  uint m;           // activation rows
  uint accumulate;  // 1: y += (the residual connection)
} p;

shared float partial[64];

const uint kLanes = 8;  // invocations per row

uint WeightByte(uint wb, uint i) { return (uint(w[wb + i / 2]) >> (8 * (i % 2))) & 0xFFu; }

int ActQuant(uint ab, uint e) { return bitfieldExtract(int(a[ab + 1 + e / 4]), int(8 * (e % 4)), 8); }

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint lane = lid % kLanes;
  const uint r = gl_WorkGroupID.x * (64 / kLanes) + lid / kLanes;
  const uint t = gl_WorkGroupID.y;
  float s = 0.0;
  if (r < p.rows && t < p.m) {
    for (uint b = lane; b < p.blocks; b += kLanes) {
      const uint wb = (r * p.blocks + b) * 105;
      const uint ab = (t * p.blocks + b) * 73;
      int isum = 0;
      for (uint j = 0; j < 16; ++j) {  // sub-block j: elements 16j .. 16j + 15
        const uint h = j / 8;
        const uint u = (j % 8) / 2;
        const uint l0 = 16 * (j % 2);
        int dot = 0;
        for (uint l = l0; l < l0 + 16; ++l) {
          const uint low_byte = WeightByte(wb, 64 * h + 32 * (u % 2) + l);
          const uint low = u < 2 ? (low_byte & 0xFu) : (low_byte >> 4);
          const uint high = (WeightByte(wb, 128 + 32 * h + l) >> (2 * u)) & 3u;
          dot += (int(low | (high << 4)) - 32) * ActQuant(ab, 128 * h + 32 * u + l);
        }
        const int scale = bitfieldExtract(int(WeightByte(wb, 192 + j)), 0, 8);
        isum += scale * dot;
      }
      const float d = unpackHalf2x16(uint(w[wb + 104])).x;
      const float ad = uintBitsToFloat(a[ab]);
      s = fma(float(isum), d * ad, s);
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
