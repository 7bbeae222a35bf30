// Products of BF16 weights (the body: matmul_float.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#define WEIGHT_BF16 1
#include "matmul_float.glsl"
