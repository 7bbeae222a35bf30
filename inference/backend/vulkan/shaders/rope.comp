// RoPE in place on the first n_rot values of every head of every row, from a per-row table of
// cos/sin pairs computed on the host exactly as the CPU backend computes it (cpu::RopeCache), so
// both rotate by the same numbers; `precise` keeps the two products and their difference
// separately rounded, as on the CPU. One invocation per (pair, head, row).
#version 450

layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer CosSin { float cs[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint heads;
  uint head_dim;
  uint n_rot;
  uint row_stride;  // floats between rows
  uint neox;        // 1: pairs (i, i + n_rot / 2); 0: adjacent pairs (2i, 2i + 1)
} p;

void main() {
  const uint half_rot = p.n_rot / 2;
  const uint i = gl_GlobalInvocationID.x;
  const uint h = gl_GlobalInvocationID.y;
  const uint t = gl_GlobalInvocationID.z;
  if (i >= half_rot || h >= p.heads || t >= p.rows) return;
  const uint base = t * p.row_stride + h * p.head_dim;
  const uint a = base + (p.neox != 0 ? i : 2 * i);
  const uint b = base + (p.neox != 0 ? i + half_rot : 2 * i + 1);
  const float c = cs[t * p.n_rot + 2 * i];
  const float s = cs[t * p.n_rot + 2 * i + 1];
  const float x0 = x[a];
  const float x1 = x[b];
  precise float ra = x0 * c - x1 * s;
  precise float rb = x0 * s + x1 * c;
  x[a] = ra;
  x[b] = rb;
}
