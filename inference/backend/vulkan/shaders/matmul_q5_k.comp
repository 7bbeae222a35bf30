// y[t * rows + r] (=, or += when accumulate) dot(weight row r, activation row t) for Q5_K weights
// against Q8_K activations, with the CPU's numerics (kernels' Q5_K products, as Q4_K's with a
// fifth bit): per super-block of 256 the integer sums are exact,
//   isum = sum_j scale_j * (q . a)_j,  msum = sum_j min_j * (bsum_2j + bsum_2j+1),
// then t = float(isum) * d - float(msum) * dmin (fused) and s += t * ad (fused). A workgroup of
// 64 computes 8 weight rows for one activation row: 8 invocations per row take super-blocks in
// turn, then a shared-memory tree adds their partial sums.
//
// A Q5_K block is 44 words: d and dmin (F16), 12 bytes of 6-bit scales and mins (as Q4_K), 32
// bytes of high bits, 128 bytes of nibbles. Element 64g + l (l < 32) is the low nibble of byte
// 32g + l plus 16 times bit 2g of high-bit byte l; element 64g + 32 + l its high nibble plus 16
// times bit 2g + 1. A Q8_K block is 73 words: d (F32), 256 int8 quants, 16 int16 bsums.
#version 450

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Wt { uint w[]; };
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

uint ScaleByte(uint wb, uint i) { return (w[wb + 1 + i / 4] >> (8 * (i % 4))) & 0xFFu; }

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint lane = lid % kLanes;
  const uint r = gl_WorkGroupID.x * (64 / kLanes) + lid / kLanes;
  const uint t = gl_WorkGroupID.y;
  float s = 0.0;
  if (r < p.rows && t < p.m) {
    for (uint b = lane; b < p.blocks; b += kLanes) {
      const uint wb = (r * p.blocks + b) * 44;
      const uint ab = (t * p.blocks + b) * 73;
      int isum = 0;
      int msum = 0;
      for (uint j = 0; j < 8; ++j) {
        uint sc, mn;
        if (j < 4) {
          sc = ScaleByte(wb, j) & 63u;
          mn = ScaleByte(wb, j + 4) & 63u;
        } else {
          sc = (ScaleByte(wb, j + 4) & 0xFu) | ((ScaleByte(wb, j - 4) >> 6) << 4);
          mn = (ScaleByte(wb, j + 4) >> 4) | ((ScaleByte(wb, j) >> 6) << 4);
        }
        // Sub-block j: the low (j even) or high (j odd) nibbles of bytes 32 * (j / 2) ..., and bit
        // j of the high-bit bytes.
        const uint shift = 4 * (j % 2);
        int dot = 0;
        for (uint l = 0; l < 8; ++l) {
          const uint qw = w[wb + 12 + 8 * (j / 2) + l];
          const uint hw = w[wb + 4 + l];
          const int aw = int(a[ab + 1 + 8 * j + l]);
          for (uint k = 0; k < 4; ++k) {
            const uint q = ((qw >> (8 * k + shift)) & 0xFu) | (((hw >> (8 * k + j)) & 1u) << 4);
            dot += int(q) * bitfieldExtract(aw, int(8 * k), 8);
          }
        }
        isum += int(sc) * dot;
        const int bsums = int(a[ab + 65 + j]);
        msum += int(mn) * (bitfieldExtract(bsums, 0, 16) + bitfieldExtract(bsums, 16, 16));
      }
      const vec2 dm = unpackHalf2x16(w[wb]);
      const float ad = uintBitsToFloat(a[ab]);
      precise float v = float(isum) * dm.x;
      v = fma(-float(msum), dm.y, v);
      s = fma(v, ad, s);
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
