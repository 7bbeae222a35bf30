// Products of Q5_0 weights (blocks of 22 bytes: scale, fifth bits, nibbles)
// against Q8_0 activations (the body: matmul_q32.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#define BLOCK_WORDS 11
#define HAS_MIN 0
#define HAS_HIGH 1
#define OFFSET 16
#define ACT_WORDS 17
#include "matmul_q32.glsl"
