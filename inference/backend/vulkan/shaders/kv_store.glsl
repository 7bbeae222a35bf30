// The body of kv_store.comp (F32) and kv_store_f16.comp (KV_F16 defined): writes each row's K
// and V into its sequence's KV block at its own position. The caches are laid out
// [block][layer][slot][kv_dim]. meta holds four uints per row: position, the block that holds
// that position, the slot in it, and the offset of the row's block table.
#include "f16.glsl"
#ifdef KV_F16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#define KV_TYPE uint16_t
uint16_t Store(float x) { return uint16_t(F16Bits(x)); }
#else
#define KV_TYPE float
float Store(float x) { return x; }
#endif

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer K { float k[]; };
layout(std430, binding = 1) readonly buffer V { float v[]; };
layout(std430, binding = 2) readonly buffer Meta { uint meta[]; };
layout(std430, binding = 3) writeonly buffer KCache { KV_TYPE kc[]; };
layout(std430, binding = 4) writeonly buffer VCache { KV_TYPE vc[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint kv_dim;
  uint layer;
  uint n_layer;
  uint block_tokens;
} p;

void main() {
  const uint j = gl_GlobalInvocationID.x;
  const uint t = gl_GlobalInvocationID.y;
  if (j >= p.kv_dim || t >= p.rows) return;
  const uint block = meta[4 * t + 1];
  const uint slot = meta[4 * t + 2];
  const uint dst = ((block * p.n_layer + p.layer) * p.block_tokens + slot) * p.kv_dim + j;
  kc[dst] = Store(k[t * p.kv_dim + j]);
  vc[dst] = Store(v[t * p.kv_dim + j]);
}
