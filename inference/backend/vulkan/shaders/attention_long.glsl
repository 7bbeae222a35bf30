// The body of attention_long.comp (F32 KV) and attention_long_f16.comp (F16 KV, KV_F16 defined):
// attention.glsl's causal attention for rows whose sequence holds more than kChunk positions (that
// shader's shared memory holds the scores of kChunk), split over chunks of kChunk positions, in
// three dispatches chosen by p.phase (flash-decoding's split, without any barrier in a loop):
//   0, a workgroup per (head, row, chunk): the chunk's score maximum m_c and sum of exp(s - m_c);
//   1, the same grid: m and sum over every chunk of the row (in chunk order), then the chunk's
//      part of the output, sum_p Round(exp(s_p - m) / sum) v_p in position order;
//   2, a workgroup per (head, row): the chunks' parts added in chunk order.
// The scratch buffer holds, for p.rows rows: (m_c, sum_c) per (row, head, chunk), then the parts.
// Rows of at most kChunk positions are attention.glsl's, and this skips them.
#include "f16.glsl"
#ifdef KV_F16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#define KV_TYPE uint16_t
float Kv(uint16_t h) { return unpackHalf2x16(uint(h)).x; }
float Round(float x) { return F16Round(x); }
#else
#define KV_TYPE float
float Kv(float x) { return x; }
float Round(float x) { return x; }
#endif

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KCache { KV_TYPE kc[]; };
layout(std430, binding = 2) readonly buffer VCache { KV_TYPE vc[]; };
layout(std430, binding = 3) readonly buffer Meta { uint meta[]; };
layout(std430, binding = 4) readonly buffer Blocks { uint blocks[]; };
layout(std430, binding = 5) buffer Out { float o[]; };
layout(std430, binding = 6) buffer Scratch { float scratch[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint layer;
  uint n_layer;
  uint block_tokens;
  float scale;
  uint chunks;  // chunks per row the scratch buffer holds (the context / kChunk, rounded up)
  uint phase;
} p;

const uint kChunk = 4096;
shared float scores[kChunk];
shared float red[64];

uint KvBase(uint table, uint pos, uint kvh, uint kv_dim) {
  const uint block = blocks[table + pos / p.block_tokens];
  return ((block * p.n_layer + p.layer) * p.block_tokens + pos % p.block_tokens) * kv_dim + kvh * p.head_dim;
}

float Score(uint qb, uint table, uint pos, uint kvh, uint kv_dim) {
  const uint kb = KvBase(table, pos, kvh, kv_dim);
  float d = 0.0;
  for (uint i = 0; i < p.head_dim; ++i) d = fma(Round(q[qb + i]), Kv(kc[kb + i]), d);
  return d * p.scale;
}

void main() {
  const uint h = gl_WorkGroupID.x;
  const uint t = gl_WorkGroupID.y;
  const uint c = gl_WorkGroupID.z;
  if (h >= p.n_head || t >= p.rows) return;
  const uint n_kv = meta[4 * t] + 1;
  const uint used = (n_kv + kChunk - 1) / kChunk;  // chunks this row has
  // Uniform over the workgroup: rows attention.glsl takes, and chunks past the row's end.
  if (n_kv <= kChunk || c >= used) return;
  const uint lid = gl_LocalInvocationID.x;
  const uint kv_dim = p.n_head_kv * p.head_dim;
  const uint kvh = h / (p.n_head / p.n_head_kv);
  const uint table = meta[4 * t + 3];
  const uint qb = (t * p.n_head + h) * p.head_dim;
  const uint stats = ((t * p.n_head + h) * p.chunks) * 2;                          // (m_c, sum_c) pairs
  const uint parts = p.rows * p.n_head * p.chunks * 2 + (t * p.n_head + h) * p.chunks * p.head_dim;
  const uint c0 = c * kChunk, c1 = min(n_kv, c0 + kChunk);

  if (p.phase == 2) {
    for (uint d = lid; d < p.head_dim; d += 64) {
      float acc = 0.0;
      for (uint k = 0; k < used; ++k) acc += scratch[parts + k * p.head_dim + d];
      o[qb + d] = acc;
    }
    return;
  }
  if (p.phase == 0) {
    float local_max = -3.402823466e38;
    for (uint pos = c0 + lid; pos < c1; pos += 64) {
      const float s = Score(qb, table, pos, kvh, kv_dim);
      scores[pos - c0] = s;
      local_max = max(local_max, s);
    }
    red[lid] = local_max;
    barrier();
    for (uint k = 32; k > 0; k >>= 1) {
      if (lid < k) red[lid] = max(red[lid], red[lid + k]);
      barrier();
    }
    const float m = red[0];
    barrier();
    float local_sum = 0.0;
    for (uint pos = c0 + lid; pos < c1; pos += 64) local_sum += exp(scores[pos - c0] - m);
    red[lid] = local_sum;
    barrier();
    for (uint k = 32; k > 0; k >>= 1) {
      if (lid < k) red[lid] += red[lid + k];
      barrier();
    }
    if (lid == 0) {
      scratch[stats + 2 * c] = m;
      scratch[stats + 2 * c + 1] = red[0];
    }
    return;
  }
  // Phase 1: the row's maximum and sum from every chunk's, then this chunk's part.
  float m = -3.402823466e38;
  for (uint k = 0; k < used; ++k) m = max(m, scratch[stats + 2 * k]);
  float sum = 0.0;
  for (uint k = 0; k < used; ++k) sum += scratch[stats + 2 * k + 1] * exp(scratch[stats + 2 * k] - m);
  const float inv = 1.0 / sum;
  for (uint pos = c0 + lid; pos < c1; pos += 64) scores[pos - c0] = exp(Score(qb, table, pos, kvh, kv_dim) - m);
  barrier();
  for (uint d = lid; d < p.head_dim; d += 64) {
    float acc = 0.0;
    for (uint pos = c0; pos < c1; ++pos) acc = fma(Round(scores[pos - c0] * inv), Kv(vc[KvBase(table, pos, kvh, kv_dim) + d]), acc);
    scratch[parts + c * p.head_dim + d] = acc;
  }
}
