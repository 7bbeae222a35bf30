// Products of Q4_1 weights (blocks of 20 bytes: scale, minimum, nibbles)
// against Q8_1 activations (the body: matmul_q32.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#define BLOCK_WORDS 10
#define HAS_MIN 1
#define HAS_HIGH 0
#define OFFSET 0
#define ACT_WORDS 18
#include "matmul_q32.glsl"
