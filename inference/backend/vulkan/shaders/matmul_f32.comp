// Products of F32 weights (the body: matmul_float.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "matmul_float.glsl"
