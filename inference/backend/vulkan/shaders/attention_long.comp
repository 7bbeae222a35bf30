// Attention over more than 4,096 positions, F32 KV cache (the body: attention_long.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "attention_long.glsl"
