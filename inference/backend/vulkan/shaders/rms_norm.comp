// RMSNorm of `rows` rows of n floats: y = (x * scale) * w, scale = 1 / sqrt(mean(x^2) + eps).
// One workgroup per row; the sum of squares is reduced in shared memory.
#version 450

layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint n;     // elements per row
  uint rows;
  float eps;
} p;

shared float partial[256];

void main() {
  const uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
  if (row >= p.rows) return;  // uniform per workgroup: barriers below stay in uniform control flow
  const uint lid = gl_LocalInvocationID.x;
  const uint base = row * p.n;
  float s = 0.0;
  for (uint i = lid; i < p.n; i += 256) {
    const float v = x[base + i];
    s = fma(v, v, s);
  }
  partial[lid] = s;
  barrier();
  for (uint k = 128; k > 0; k >>= 1) {
    if (lid < k) partial[lid] += partial[lid + k];
    barrier();
  }
  const float scale = 1.0 / sqrt(partial[0] / float(p.n) + p.eps);
  for (uint i = lid; i < p.n; i += 256) y[base + i] = (x[base + i] * scale) * w[i];
}
