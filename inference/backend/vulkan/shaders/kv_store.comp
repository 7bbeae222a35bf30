// K/V store into an F32 cache (the body: kv_store.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "kv_store.glsl"
