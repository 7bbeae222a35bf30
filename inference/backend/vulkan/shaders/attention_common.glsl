// What attention.glsl and attention_long.glsl share: the KV cache's element type (F16 when KV_F16
// is defined: q and the probabilities are then rounded to F16, as ggml and the CPU backend do),
// the bindings 0-4 (queries, K and V caches, row metadata, block tables), the push constants
// (ATTENTION_PUSH_EXTRA, when defined, adds fields at the end), where a position's K/V row lies,
// a position's score, and the workgroup reductions.
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
#ifndef ATTENTION_PUSH_EXTRA
#define ATTENTION_PUSH_EXTRA
#endif

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KCache { KV_TYPE kc[]; };
layout(std430, binding = 2) readonly buffer VCache { KV_TYPE vc[]; };
layout(std430, binding = 3) readonly buffer Meta { uint meta[]; };
layout(std430, binding = 4) readonly buffer Blocks { uint blocks[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint layer;
  uint n_layer;
  uint block_tokens;
  float scale;
  ATTENTION_PUSH_EXTRA
} p;

shared float red[64];

uint KvBase(uint table, uint pos, uint kvh, uint kv_dim) {
  const uint block = blocks[table + pos / p.block_tokens];
  return ((block * p.n_layer + p.layer) * p.block_tokens + pos % p.block_tokens) * kv_dim + kvh * p.head_dim;
}

// (q . k_pos) * scale for the query at qb.
float Score(uint qb, uint table, uint pos, uint kvh, uint kv_dim) {
  const uint kb = KvBase(table, pos, kvh, kv_dim);
  float d = 0.0;
  for (uint i = 0; i < p.head_dim; ++i) d = fma(Round(q[qb + i]), Kv(kc[kb + i]), d);
  return d * p.scale;
}

// The maximum / sum of x over the workgroup's 64 invocations, in a fixed tree order. Call from
// uniform control flow (they hold barriers).
float GroupMax(float x, uint lid) {
  red[lid] = x;
  barrier();
  for (uint k = 32; k > 0; k >>= 1) {
    if (lid < k) red[lid] = max(red[lid], red[lid + k]);
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}
float GroupSum(float x, uint lid) {
  red[lid] = x;
  barrier();
  for (uint k = 32; k > 0; k >>= 1) {
    if (lid < k) red[lid] += red[lid + k];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}
