// Declarations of the SIMD variants of ops.h's KV-cache loops; ops.cc picks one at run time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace airlock::inference::cpu::avx2 {
float DotF32(const float* a, const float* b, int64_t n);
float DotF16(const uint16_t* a, const uint16_t* b, int64_t n);
void AxpyF32(float a, const float* x, float* y, int64_t n);
void AxpyF16(float a, const uint16_t* x, float* y, int64_t n);
void F32ToF16Row(const float* src, uint16_t* dst, int64_t n);
void F16ToF32Row(const uint16_t* src, float* dst, int64_t n);
void DotF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const uint16_t* const* q, int32_t n_q,
                int64_t hd, float* const* scores);
void DotF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* q, int32_t n_q, int64_t hd,
                float* const* scores);
void AxpyF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q,
                 int64_t hd, float* const* y);
void AxpyF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q, int64_t hd,
                 float* const* y);
}  // namespace airlock::inference::cpu::avx2
