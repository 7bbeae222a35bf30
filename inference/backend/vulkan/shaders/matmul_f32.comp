// y[t * rows + r] (=, or += when accumulate) dot(weight row r, x row t) for F32 weights (rows x
// cols) and m activation rows of cols floats. One workgroup per (row, activation row); invocations
// take columns in turn, then a shared-memory tree sums their partial sums.
#version 450

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer Wt { float w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint cols;
  uint rows;
  uint m;
  uint accumulate;  // 1: y += W x (the residual connection)
} p;

shared float partial[64];

void main() {
  const uint r = gl_WorkGroupID.x;
  const uint t = gl_WorkGroupID.y;
  if (r >= p.rows || t >= p.m) return;
  const uint lid = gl_LocalInvocationID.x;
  const uint wb = r * p.cols;
  const uint xb = t * p.cols;
  float s = 0.0;
  for (uint i = lid; i < p.cols; i += 64) s = fma(w[wb + i], x[xb + i], s);
  partial[lid] = s;
  barrier();
  for (uint k = 32; k > 0; k >>= 1) {
    if (lid < k) partial[lid] += partial[lid + k];
    barrier();
  }
  if (lid == 0) {
    const uint o = t * p.rows + r;
    y[o] = p.accumulate != 0 ? y[o] + partial[0] : partial[0];
  }
}
