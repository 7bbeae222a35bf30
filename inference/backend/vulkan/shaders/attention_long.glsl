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
#define ATTENTION_PUSH_EXTRA \
  uint chunks; /* chunks per row the scratch buffer holds (the context / kChunk, rounded up) */ \
  uint phase;
#include "attention_common.glsl"

layout(std430, binding = 5) buffer Out { float o[]; };
layout(std430, binding = 6) buffer Scratch { float scratch[]; };

const uint kChunk = 4096;
shared float scores[kChunk];

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
    const float m = GroupMax(local_max, lid);
    float local_sum = 0.0;
    for (uint pos = c0 + lid; pos < c1; pos += 64) local_sum += exp(scores[pos - c0] - m);
    const float sum = GroupSum(local_sum, lid);
    if (lid == 0) {
      scratch[stats + 2 * c] = m;
      scratch[stats + 2 * c + 1] = sum;
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
