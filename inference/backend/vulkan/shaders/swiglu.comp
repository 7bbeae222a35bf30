// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g), over `count` floats.
#version 450

layout(local_size_x = 256) in;

layout(std430, binding = 0) buffer Gate { float gate[]; };
layout(std430, binding = 1) readonly buffer Up { float up[]; };

layout(push_constant) uniform Push {
  uint count;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256;
  if (i >= p.count) return;
  const float g = gate[i];
  gate[i] = (g / (1.0 + exp(-g))) * up[i];
}
