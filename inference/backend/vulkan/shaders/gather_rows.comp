// out row i = x row index[i], rows of n floats (the rows whose logits a step wants).
#version 450

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Index { uint index[]; };
layout(std430, binding = 2) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint n;
} p;

void main() {
  const uint j = gl_GlobalInvocationID.x;
  const uint i = gl_GlobalInvocationID.y;
  if (j >= p.n || i >= p.rows) return;
  o[i * p.n + j] = x[index[i] * p.n + j];
}
