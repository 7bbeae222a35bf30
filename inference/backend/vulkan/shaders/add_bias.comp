// x[r * n + i] += b[i] for `rows` rows of n floats (the Q/K/V biases of qwen2, as the CPU's
// AddBias). Workgroups along x cover a row, along y the rows.
#version 450

layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };

layout(push_constant) uniform Push {
  uint n;
  uint rows;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x;
  const uint r = gl_WorkGroupID.y;
  if (i >= p.n || r >= p.rows) return;
  x[r * p.n + i] += b[i];
}
