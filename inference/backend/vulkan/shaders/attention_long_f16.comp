// Attention over more than 4,096 positions, F16 KV cache (the body: attention_long.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#define KV_F16 1
#include "attention_long.glsl"
