// CPU tensor kernels: dequantization, weight and activation quantization, dot products and the
// row-range matrix product of the forward pass, for every weight type the engine computes with.
//
// Numerics follow llama.cpp's CPU backend: weights are multiplied with activations quantized to
// the type ggml pairs with them (ActivationType) and the integer part of every (sub-)block dot
// product is exact. The float part has one order, the same under every ISA (scalar, AVX2,
// AVX-512) and every tiling, so a request's output depends neither on the CPU nor on its batch:
//
// Quantized weights, block by block (32 elements, or a 256-element super-block for the K-quants)
// from acc = +0, with isum the block's exact integer dot, fma(a, b, c) = a * b + c rounded once and
// every other operation rounded to float:
//   Q4_0, Q5_0, Q8_0:  acc = fma(float(isum), dw * da, acc)
//   Q4_1, Q5_1:        acc = fma(float(isum), dw * da, acc);  acc = fma(mw, sa, acc)
//                      (mw the weight block's min, sa the Q8_1 block's d * sum(q))
//   Q4_K, Q5_K:        t = float(isum) * dw;  t = fma(-float(msum), dmin, t);  acc = fma(t, da, acc)
//                      (isum = sum_j sc_j * dot_j and msum = sum_j m_j * sum(a)_j over sub-blocks j)
//   Q6_K:              acc = fma(float(isum), dw * da, acc)  (isum with the -32 offset applied)
// The result is acc.
// Float weights (F32, F16, BF16; elements widened to float exactly): 32 lanes, element i of the
// first n - n % 32 into lane i % 32 by acc_l = fma(w_i, x_i, acc_l) in increasing i, then each of
// the last n % 32 into lane (i - (n - n % 32)) % 16; then v_l = acc_l + acc_{l+16} (l < 16),
// u_l = v_l + v_{l+8} (l < 8), s_l = u_l + u_{l+4} (l < 4), and the result is
// (s_0 + s_2) + (s_1 + s_3).
//
// Each entry point picks a scalar, AVX2 or AVX-512 implementation at run time (ActiveIsa), so the
// binary runs on any x86-64. Thread safety: every function may be called concurrently from any
// thread; none allocates. SetIsaForTesting is the one exception: call it only while no kernel runs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "inference/base/tensor_type.h"

namespace airlock::inference::kernels {

// Dequantizes n elements (a whole number of blocks) of `type` at src into dst. Works for every
// weight type and for the activation types Q8_0, Q8_1 and Q8_K.
void DequantizeRow(TensorType type, const void* src, float* dst, int64_t n);

// Quantizes n floats (a whole number of blocks) to `type`, for synthetic model files and tests.
// Q4_0..Q8_0 follow ggml's reference quantizers; the K-quants use a small scale search (ggml's
// importance-free search gives slightly lower error, but any valid block computes identically).
void QuantizeRow(TensorType type, const float* src, void* dst, int64_t n);

// The activation format llama.cpp's CPU backend pairs with a weight type in dot products:
// F32->F32, F16->F16, BF16->BF16, Q4_0/Q5_0/Q8_0->Q8_0, Q4_1/Q5_1->Q8_1, Q4_K/Q5_K/Q6_K->Q8_K.
TensorType ActivationType(TensorType weight_type);

// Converts n floats into an activation row of `act_type`, bit-exactly as llama.cpp's x86 CPU
// backend does at run time: Q8_0/Q8_1 as its AVX quantize_row_q8_0/_q8_1 (x * 127/amax, rounded
// half to even; ggml's scalar *_ref rounds half away from zero with 1/d), Q8_K as
// quantize_row_q8_K_ref (nearest_int); F16/BF16 round to nearest even. The one deliberate
// difference: an all-zero Q8_K block gets zero bsums where ggml leaves them unwritten.
void QuantizeActivationRow(TensorType act_type, const float* x, void* dst, int64_t n);

// Dot product of one weight row and one activation row (both n elements), as ggml's vec_dot.
// The activation row has type ActivationType(weight_type) and comes from QuantizeActivationRow:
// its 8-bit quants never reach -128, which the AVX2 kernels rely on (sign trick of vpmaddubsw).
float VecDot(TensorType weight_type, int64_t n, const void* weight_row, const void* act_row);

// y[i * y_stride + r] = VecDot(weight row r, activation row i) for r in [row_begin, row_end),
// i in [0, m). Weight rows are w_row_bytes apart; activation rows x_row_bytes apart. Each output
// is bit-identical to the VecDot of the same pair, whatever the tiling and the ISA.
// This is the matmul the forward pass calls per thread (it splits rows across threads).
void MatMulRows(TensorType weight_type, int64_t n, const void* w, size_t w_row_bytes,
                int64_t row_begin, int64_t row_end, const void* x, size_t x_row_bytes, int64_t m,
                float* y, int64_t y_stride);

// Chooses the implementation; tests force kScalar to compare against the SIMD ones.
enum class Isa { kScalar, kAvx2, kAvx512 };
const char* IsaName(Isa isa);
// kAvx2 needs AVX2+FMA+F16C; kAvx512 needs AVX-512 F/BW/VL/DQ/VNNI as well.
bool IsaSupported(Isa isa);
Isa BestSupportedIsa();
// Process-wide; default is BestSupportedIsa(). Aborts for an ISA this CPU lacks.
void SetIsaForTesting(Isa isa);
Isa ActiveIsa();

}  // namespace airlock::inference::kernels
