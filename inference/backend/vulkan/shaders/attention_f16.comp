// Attention over an F16 KV cache (the body: attention.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#define KV_F16 1
#include "attention.glsl"
