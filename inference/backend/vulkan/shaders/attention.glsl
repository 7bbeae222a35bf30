// The body of attention.comp (F32 KV) and attention_f16.comp (F16 KV, KV_F16 defined): causal
// attention of one query head of one row over its own sequence's positions 0..pos, read through
// the sequence's block table: scores = (q . k_p) * scale, softmax, out = sum_p w_p v_p. With an
// F16 cache, q and the probabilities are rounded to F16 first, as ggml (and the CPU backend) do.
// One workgroup per (head, row); the scores live in shared memory (at most 4096 positions: longer
// rows are left to attention_long.glsl).
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
layout(std430, binding = 5) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint layer;
  uint n_layer;
  uint block_tokens;
  float scale;
} p;

const uint kMaxPositions = 4096;
shared float scores[kMaxPositions];
shared float red[64];

uint KvBase(uint table, uint pos, uint kvh, uint kv_dim) {
  const uint block = blocks[table + pos / p.block_tokens];
  return ((block * p.n_layer + p.layer) * p.block_tokens + pos % p.block_tokens) * kv_dim + kvh * p.head_dim;
}

void main() {
  const uint h = gl_WorkGroupID.x;
  const uint t = gl_WorkGroupID.y;
  if (h >= p.n_head || t >= p.rows) return;
  const uint lid = gl_LocalInvocationID.x;
  const uint kv_dim = p.n_head_kv * p.head_dim;
  const uint kvh = h / (p.n_head / p.n_head_kv);
  const uint n_kv = meta[4 * t] + 1;
  if (n_kv > kMaxPositions) return;  // attention_long.glsl's (uniform over the workgroup)
  const uint table = meta[4 * t + 3];
  const uint qb = (t * p.n_head + h) * p.head_dim;

  float local_max = -3.402823466e38;
  for (uint pos = lid; pos < n_kv; pos += 64) {
    const uint kb = KvBase(table, pos, kvh, kv_dim);
    float d = 0.0;
    for (uint i = 0; i < p.head_dim; ++i) d = fma(Round(q[qb + i]), Kv(kc[kb + i]), d);
    const float s = d * p.scale;
    scores[pos] = s;
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
  for (uint pos = lid; pos < n_kv; pos += 64) {
    const float e = exp(scores[pos] - m);
    scores[pos] = e;
    local_sum += e;
  }
  red[lid] = local_sum;
  barrier();
  for (uint k = 32; k > 0; k >>= 1) {
    if (lid < k) red[lid] += red[lid + k];
    barrier();
  }
  const float inv = 1.0 / red[0];
  for (uint d = lid; d < p.head_dim; d += 64) {
    float acc = 0.0;
    for (uint pos = 0; pos < n_kv; ++pos) acc = fma(Round(scores[pos] * inv), Kv(vc[KvBase(table, pos, kvh, kv_dim) + d]), acc);
    o[qb + d] = acc;
  }
}
