// Products of Q5_1 weights (blocks of 24 bytes: scale, minimum, fifth bits,
// nibbles) against Q8_1 activations (the body: matmul_q32.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#define BLOCK_WORDS 12
#define HAS_MIN 1
#define HAS_HIGH 1
#define OFFSET 0
#define ACT_WORDS 18
#include "matmul_q32.glsl"
