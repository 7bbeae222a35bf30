// Attention over an F32 KV cache (the body: attention.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "attention.glsl"
