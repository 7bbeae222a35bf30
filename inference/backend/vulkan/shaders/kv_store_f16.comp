// K/V store into an F16 cache (the body: kv_store.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#define KV_F16 1
#include "kv_store.glsl"
