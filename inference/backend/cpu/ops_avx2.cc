// AVX2 + FMA + F16C versions of the attention inner loops (Q.K dots and P.V accumulation over the
// KV cache). Compiled with -mavx2 -mfma -mf16c and only called when the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "inference/backend/cpu/ops_simd.h"

namespace airlock::inference::cpu::avx2 {
namespace {

float HorizontalSum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

float DotF32(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum = std::fma(a[i], b[i], sum);
  return sum;
}

float DotF16(const uint16_t* a, const uint16_t* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  auto load = [](const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(load(a + i), load(b + i), acc0);
    acc1 = _mm256_fmadd_ps(load(a + i + 8), load(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(load(a + i), load(b + i), acc0);
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum = std::fma(_cvtsh_ss(a[i]), _cvtsh_ss(b[i]), sum);
  return sum;
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

void AxpyF16(float a, const uint16_t* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 vx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, vx, _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] = std::fma(a, _cvtsh_ss(x[i]), y[i]);
}

void F32ToF16Row(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

void F16ToF32Row(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

// The *Rows functions repeat the arithmetic of DotF16/DotF32/AxpyF16/AxpyF32 above operation for
// operation (the same lanes, the same accumulators, the same horizontal sum, the same scalar tail),
// so every result is bit-identical to calling those per position; they only read each row once
// for all heads and keep y in registers.

namespace {

__m256 LoadF16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
__m256 LoadF32(const float* p) { return _mm256_loadu_ps(p); }
float ScalarF16(uint16_t h) { return _cvtsh_ss(h); }
float ScalarF32(float x) { return x; }

// Heads per pass: two accumulators each must stay in the 16 ymm registers with the row's values.
constexpr int32_t kHeadsPerPass = 4;

template <typename T, __m256 (*kLoad)(const T*), float (*kScalar)(T)>
void DotRows(const T* rows, size_t stride, int32_t n_pos, const T* const* q, int32_t n_q, int64_t n,
             float* const* scores) {
  for (int32_t j0 = 0; j0 < n_q; j0 += kHeadsPerPass) {
    const int32_t m = std::min(kHeadsPerPass, n_q - j0);
    for (int32_t p = 0; p < n_pos; ++p) {
      const T* a = rows + p * stride;
      __m256 acc0[kHeadsPerPass], acc1[kHeadsPerPass];
      for (int32_t j = 0; j < m; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) {
        const __m256 a0 = kLoad(a + i), a1 = kLoad(a + i + 8);
        for (int32_t j = 0; j < m; ++j) {
          acc0[j] = _mm256_fmadd_ps(a0, kLoad(q[j0 + j] + i), acc0[j]);
          acc1[j] = _mm256_fmadd_ps(a1, kLoad(q[j0 + j] + i + 8), acc1[j]);
        }
      }
      for (; i + 8 <= n; i += 8) {
        const __m256 a0 = kLoad(a + i);
        for (int32_t j = 0; j < m; ++j) acc0[j] = _mm256_fmadd_ps(a0, kLoad(q[j0 + j] + i), acc0[j]);
      }
      for (int32_t j = 0; j < m; ++j) {
        float sum = HorizontalSum(_mm256_add_ps(acc0[j], acc1[j]));
        for (int64_t k = i; k < n; ++k) sum = std::fma(kScalar(a[k]), kScalar(q[j0 + j][k]), sum);
        scores[j0 + j][p] = sum;
      }
    }
  }
}

// y[j] chunk by chunk of 64 values (8 registers), every position in order for each chunk.
template <typename T, __m256 (*kLoad)(const T*), float (*kScalar)(T)>
void AxpyRows(const T* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q, int64_t n,
              float* const* y) {
  constexpr int kChunk = 8;  // registers of y
  const int64_t vec_end = n / 8 * 8;
  for (int32_t j = 0; j < n_q; ++j) {
    float* yj = y[j];
    const float* wj = w[j];
    for (int64_t c = 0; c < vec_end; c += 8 * kChunk) {
      const int regs = static_cast<int>(std::min<int64_t>(kChunk, (vec_end - c) / 8));
      __m256 acc[kChunk];
      for (int r = 0; r < regs; ++r) acc[r] = _mm256_loadu_ps(yj + c + 8 * r);
      for (int32_t p = 0; p < n_pos; ++p) {
        const __m256 va = _mm256_set1_ps(wj[p]);
        const T* x = rows + p * stride + c;
        for (int r = 0; r < regs; ++r) acc[r] = _mm256_fmadd_ps(va, kLoad(x + 8 * r), acc[r]);
      }
      for (int r = 0; r < regs; ++r) _mm256_storeu_ps(yj + c + 8 * r, acc[r]);
    }
    for (int64_t i = vec_end; i < n; ++i) {
      for (int32_t p = 0; p < n_pos; ++p) yj[i] = std::fma(wj[p], kScalar(rows[p * stride + i]), yj[i]);
    }
  }
}

}  // namespace

void DotF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const uint16_t* const* q, int32_t n_q,
                int64_t hd, float* const* scores) {
  DotRows<uint16_t, LoadF16, ScalarF16>(rows, stride, n_pos, q, n_q, hd, scores);
}

void DotF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* q, int32_t n_q, int64_t hd,
                float* const* scores) {
  DotRows<float, LoadF32, ScalarF32>(rows, stride, n_pos, q, n_q, hd, scores);
}

void AxpyF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q,
                 int64_t hd, float* const* y) {
  AxpyRows<uint16_t, LoadF16, ScalarF16>(rows, stride, n_pos, w, n_q, hd, y);
}

void AxpyF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q, int64_t hd,
                 float* const* y) {
  AxpyRows<float, LoadF32, ScalarF32>(rows, stride, n_pos, w, n_q, hd, y);
}

}  // namespace airlock::inference::cpu::avx2
