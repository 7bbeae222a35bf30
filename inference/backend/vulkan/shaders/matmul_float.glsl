// The body of matmul_f32.comp, matmul_f16.comp (WEIGHT_F16 defined) and matmul_bf16.comp
// (WEIGHT_BF16): y[t * rows + r] (=, or += when accumulate) dot(weight row r, x row t) for m
// activation rows of cols floats. F16 (BF16) weights pair with activations rounded to F16 (BF16,
// to nearest even, NaN kept quiet), as the CPU backend (and ggml) pair them; products are summed
// in F32.
//
// A workgroup of 64 computes 8 weight rows for one activation row: 8 invocations per row take
// columns in turn, then a shared-memory tree adds their 8 partial sums. Each row's sum is formed
// in the same order whatever the batch holds.
#include "f16.glsl"
#ifdef WEIGHT_F16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#define WEIGHT_TYPE uint16_t
float Weight(uint16_t h) { return unpackHalf2x16(uint(h)).x; }
float Activation(float x) { return F16Round(x); }
#elif defined(WEIGHT_BF16)
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#define WEIGHT_TYPE uint16_t
float Weight(uint16_t h) { return uintBitsToFloat(uint(h) << 16); }
float Activation(float x) {
  const uint u = floatBitsToUint(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uintBitsToFloat((u | 0x400000u) & 0xFFFF0000u);
  return uintBitsToFloat((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}
#else
#define WEIGHT_TYPE float
float Weight(float w) { return w; }
float Activation(float x) { return x; }
#endif

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Wt { WEIGHT_TYPE w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint cols;
  uint rows;
  uint m;
  uint accumulate;  // 1: y += W x (the residual connection)
} p;

const uint kLanes = 8;  // invocations per row
shared float partial[64];

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint lane = lid % kLanes;
  const uint r = gl_WorkGroupID.x * (64 / kLanes) + lid / kLanes;
  const uint t = gl_WorkGroupID.y;
  float s = 0.0;
  if (r < p.rows && t < p.m) {
    const uint wb = r * p.cols;
    const uint xb = t * p.cols;
    for (uint i = lane; i < p.cols; i += kLanes) s = fma(Weight(w[wb + i]), Activation(x[xb + i]), s);
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
