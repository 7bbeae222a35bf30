// The body of matmul_q4_1.comp, matmul_q5_0.comp and matmul_q5_1.comp: y[t * rows + r] (=, or +=
// when accumulate) dot(weight row r, activation row t) for weights in blocks of 32 against the
// CPU backend's activation format for them (Q8_0 for Q5_0, Q8_1 for Q4_1 and Q5_1), with the
// CPU's numerics per block: the integer dot of the quants (less OFFSET) and the activation quants
// is exact, then s = fma(float(dot), dw * da, s), and for a block with a minimum (HAS_MIN)
// s = fma(mw, sa, s), sa being the activation block's d * sum(quants). A workgroup of 64 computes
// 8 weight rows for one activation row: 8 invocations per row take blocks in turn, then a
// shared-memory tree adds their partial sums.
//
// Defined by the including shader: BLOCK_WORDS (the weight block in 16-bit words), HAS_MIN (an
// F16 minimum after the scale), HAS_HIGH (32 fifth bits, two words, after those), OFFSET (what
// the unsigned quant is less: 16 for Q5_0, 0 with a minimum), ACT_WORDS (17 for Q8_0, 18 for
// Q8_1: scale, [sum], quants two by two). A block's nibbles: element j < 16 is the low nibble of
// byte j, element j + 16 its high nibble; its fifth bit is bit j of the 32-bit high-bit word.
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

const uint kLanes = 8;  // invocations per row
const uint kQs = 1 + HAS_MIN + 2 * HAS_HIGH;  // first word of the nibbles
const uint kActQs = ACT_WORDS - 16;           // first word of the activation quants

int Low(uint word) { return int(word << 24) >> 24; }
int High(uint word) { return int(word << 16) >> 24; }

// Quant of element e whose nibble is at `shift` of word `word`, with its fifth bit from `qh`.
int Quant(uint word, uint shift, uint qh, uint e) {
  return int(((word >> shift) & 0xFu) | (((qh >> e) & 1u) << 4)) - OFFSET;
}

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint lane = lid % kLanes;
  const uint r = gl_WorkGroupID.x * (64 / kLanes) + lid / kLanes;
  const uint t = gl_WorkGroupID.y;
  float s = 0.0;
  if (r < p.rows && t < p.m) {
    for (uint b = lane; b < p.blocks; b += kLanes) {
      const uint wb = (r * p.blocks + b) * BLOCK_WORDS;
      const uint ab = (t * p.blocks + b) * ACT_WORDS;
#if HAS_HIGH
      const uint qh = uint(w[wb + 1 + HAS_MIN]) | (uint(w[wb + 2 + HAS_MIN]) << 16);
#else
      const uint qh = 0u;
#endif
      int dot = 0;
      for (uint k = 0; k < 8; ++k) {
        const uint wq = uint(w[wb + kQs + k]);      // bytes 2k, 2k + 1: elements 2k, 2k + 1, 2k + 16, 2k + 17
        const uint low = uint(a[ab + kActQs + k]);  // activation elements 2k, 2k + 1
        const uint high = uint(a[ab + kActQs + 8 + k]);  // activation elements 2k + 16, 2k + 17
        dot += Quant(wq, 0, qh, 2 * k) * Low(low) + Quant(wq, 8, qh, 2 * k + 1) * High(low) +
               Quant(wq, 4, qh, 2 * k + 16) * Low(high) + Quant(wq, 12, qh, 2 * k + 17) * High(high);
      }
      const float dw = unpackHalf2x16(uint(w[wb])).x;
      const float da = unpackHalf2x16(uint(a[ab])).x;
      s = fma(float(dot), dw * da, s);
#if HAS_MIN
      s = fma(unpackHalf2x16(uint(w[wb + 1])).x, unpackHalf2x16(uint(a[ab + 1])).x, s);
#endif
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
