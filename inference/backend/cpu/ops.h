// Element-wise and per-row operations of the CPU forward pass (norms, RoPE, softmax, SwiGLU),
// written to reproduce ggml's float semantics (accumulation precision and operation order)
// wherever that decides the last bits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace airlock::inference::cpu {

// y = x / sqrt(mean(x^2) + eps) * weight. The sum of squares is accumulated in double, as ggml.
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);

// Fills cos_sin[2*i], cos_sin[2*i+1] with cos/sin of pair i's angle at `pos` (n_rot/2 pairs).
// The angle is pos * base^(-2i/n_rot) * freq_scale / freq_factors[i], with the per-pair factor
// built by repeated multiplication exactly as ggml builds its RoPE cache. Both are scaled by
// `attn_factor` (LongRoPE's rope.scaling.attn_factor; 1 otherwise, which changes nothing).
void RopeCache(int32_t pos, int32_t n_rot, float freq_base, float freq_scale,
               const float* freq_factors, float* cos_sin, float attn_factor = 1.0f);

// Rotates the first n_rot values of one head in place: adjacent pairs (llama) or halves (neox).
void ApplyRope(float* head, int32_t n_rot, const float* cos_sin, bool neox);

// p[i] = softmax(s * scale)[i] over n values; sum accumulated in double.
void ScaledSoftmax(float* s, int64_t n, float scale);

// out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x).
void SwiGlu(const float* gate, const float* up, float* out, int64_t n);

// out[i] = gelu(gate[i]) * up[i], GELU's tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) x (1 +
// 0.044715 x^2))) as llama.cpp's CPU backend evaluates it: 0 for x <= -10, x for x >= 10, and in
// between on x rounded to F16, the result rounded to F16 (ggml's table of every F16 value). The
// F16 detour is up to ~1e-3 from a float GELU; it is what makes Gemma 2's logits match llama.cpp's.
void GeGlu(const float* gate, const float* up, float* out, int64_t n);

// F16 <-> F32 for row buffers (table-driven decode, round-to-nearest-even encode).
void F16ToF32Row(const uint16_t* src, float* dst, int64_t n);
void F32ToF16Row(const float* src, uint16_t* dst, int64_t n);

// Dot products used by attention over the KV cache.
float DotF32(const float* a, const float* b, int64_t n);
float DotF16(const uint16_t* a, const uint16_t* b, int64_t n);  // both F16, accumulated in float
// y[i] += a * x[i]
void AxpyF32(float a, const float* x, float* y, int64_t n);
void AxpyF16(float a, const uint16_t* x, float* y, int64_t n);

// The attention loops over cached positions, for `n_q` query heads that share one KV head, over
// `n_pos` positions whose rows lie `stride` elements apart (one KV block). Each result is exactly
// what the single-row function gives, position by position, in the same order:
//   scores[j][p] = Dot*(rows + p * stride, q[j], hd)
//   for p in order: Axpy*(w[j][p], rows + p * stride, y[j], hd)
// but each row is read once for all heads and y stays in registers across positions.
void DotF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const uint16_t* const* q, int32_t n_q,
                int64_t hd, float* const* scores);
void DotF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* q, int32_t n_q, int64_t hd,
                float* const* scores);
void AxpyF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q,
                 int64_t hd, float* const* y);
void AxpyF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q, int64_t hd,
                 float* const* y);

// Tests compare the SIMD variants with the scalar ones; call only while no forward pass runs.
void ForceScalarOpsForTesting(bool scalar);

}  // namespace airlock::inference::cpu
