// AVX2 + FMA + F16C versions of the attention inner loops (Q.K dots and P.V accumulation over the
// KV cache). Compiled with -mavx2 -mfma -mf16c and only called when the CPU has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

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

// Rows of type T against M queries of type Q (Q = float: F16 queries converted once, below). M is
// a constant so that the accumulators live in registers (with a run-time count the compiler kept
// them on the stack and cleared them with `rep stos` at every position).
template <typename T, __m256 (*kLoad)(const T*), float (*kScalar)(T), typename Q, __m256 (*kLoadQ)(const Q*),
          float (*kScalarQ)(Q), int M>
void DotRowsPass(const T* rows, size_t stride, int32_t n_pos, const Q* const* q, int64_t n, float* const* scores) {
  for (int32_t p = 0; p < n_pos; ++p) {
    const T* a = rows + p * stride;
    __m256 acc0[M], acc1[M];
    for (int j = 0; j < M; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m256 a0 = kLoad(a + i), a1 = kLoad(a + i + 8);
      for (int j = 0; j < M; ++j) {
        acc0[j] = _mm256_fmadd_ps(a0, kLoadQ(q[j] + i), acc0[j]);
        acc1[j] = _mm256_fmadd_ps(a1, kLoadQ(q[j] + i + 8), acc1[j]);
      }
    }
    for (; i + 8 <= n; i += 8) {
      const __m256 a0 = kLoad(a + i);
      for (int j = 0; j < M; ++j) acc0[j] = _mm256_fmadd_ps(a0, kLoadQ(q[j] + i), acc0[j]);
    }
    for (int j = 0; j < M; ++j) {
      float sum = HorizontalSum(_mm256_add_ps(acc0[j], acc1[j]));
      for (int64_t k = i; k < n; ++k) sum = std::fma(kScalar(a[k]), kScalarQ(q[j][k]), sum);
      scores[j][p] = sum;
    }
  }
}

template <typename T, __m256 (*kLoad)(const T*), float (*kScalar)(T), typename Q, __m256 (*kLoadQ)(const Q*),
          float (*kScalarQ)(Q)>
void DotRowsHeads(const T* rows, size_t stride, int32_t n_pos, const Q* const* q, int32_t m, int64_t n,
                  float* const* scores) {
  switch (m) {
    case 4: DotRowsPass<T, kLoad, kScalar, Q, kLoadQ, kScalarQ, 4>(rows, stride, n_pos, q, n, scores); break;
    case 3: DotRowsPass<T, kLoad, kScalar, Q, kLoadQ, kScalarQ, 3>(rows, stride, n_pos, q, n, scores); break;
    case 2: DotRowsPass<T, kLoad, kScalar, Q, kLoadQ, kScalarQ, 2>(rows, stride, n_pos, q, n, scores); break;
    default: DotRowsPass<T, kLoad, kScalar, Q, kLoadQ, kScalarQ, 1>(rows, stride, n_pos, q, n, scores); break;
  }
}

// F16 queries up to this length are converted to F32 once per call (exactly: every F16 value is a
// float), instead of once per position and head.
constexpr int64_t kMaxConvertedQuery = 256;

template <typename T, __m256 (*kLoad)(const T*), float (*kScalar)(T)>
void DotRows(const T* rows, size_t stride, int32_t n_pos, const T* const* q, int32_t n_q, int64_t n,
             float* const* scores) {
  for (int32_t j0 = 0; j0 < n_q; j0 += kHeadsPerPass) {
    const int32_t m = std::min(kHeadsPerPass, n_q - j0);
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (n <= kMaxConvertedQuery) {
        alignas(32) float converted[kHeadsPerPass][kMaxConvertedQuery];
        const float* qf[kHeadsPerPass];
        for (int32_t j = 0; j < m; ++j) {
          F16ToF32Row(q[j0 + j], converted[j], n);
          qf[j] = converted[j];
        }
        DotRowsHeads<T, kLoad, kScalar, float, LoadF32, ScalarF32>(rows, stride, n_pos, qf, m, n, scores + j0);
        continue;
      }
    }
    DotRowsHeads<T, kLoad, kScalar, T, kLoad, kScalar>(rows, stride, n_pos, q + j0, m, n, scores + j0);
  }
}

// M heads' y over R registers (8 R values from `c`), every position in order: each row's values
// are loaded (and converted) once for the M heads.
template <typename T, __m256 (*kLoad)(const T*), int M, int R>
void AxpyGroup(const T* rows, size_t stride, int32_t n_pos, const float* const* w, int64_t c, float* const* y) {
  __m256 acc[M][R];
  for (int j = 0; j < M; ++j) {
    for (int r = 0; r < R; ++r) acc[j][r] = _mm256_loadu_ps(y[j] + c + 8 * r);
  }
  for (int32_t p = 0; p < n_pos; ++p) {
    const T* x = rows + p * stride + c;
    __m256 v[R];
    for (int r = 0; r < R; ++r) v[r] = kLoad(x + 8 * r);
    for (int j = 0; j < M; ++j) {
      const __m256 va = _mm256_set1_ps(w[j][p]);
      for (int r = 0; r < R; ++r) acc[j][r] = _mm256_fmadd_ps(va, v[r], acc[j][r]);
    }
  }
  for (int j = 0; j < M; ++j) {
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(y[j] + c + 8 * r, acc[j][r]);
  }
}

template <typename T, __m256 (*kLoad)(const T*), int M>
void AxpyHeads(const T* rows, size_t stride, int32_t n_pos, const float* const* w, int64_t vec_end, float* const* y) {
  int64_t c = 0;
  for (; c + 16 <= vec_end; c += 16) AxpyGroup<T, kLoad, M, 2>(rows, stride, n_pos, w, c, y);
  if (c < vec_end) AxpyGroup<T, kLoad, M, 1>(rows, stride, n_pos, w, c, y);
}

// Up to four heads at a time, 16 values of each y in registers: y[j][i] = fma(w[j][p], row_p[i],
// y[j][i]) for every position p in order, as AxpyF16/AxpyF32 per position.
template <typename T, __m256 (*kLoad)(const T*), float (*kScalar)(T)>
void AxpyRows(const T* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q, int64_t n,
              float* const* y) {
  const int64_t vec_end = n / 8 * 8;
  for (int32_t j0 = 0; j0 < n_q; j0 += kHeadsPerPass) {
    switch (std::min(kHeadsPerPass, n_q - j0)) {
      case 4: AxpyHeads<T, kLoad, 4>(rows, stride, n_pos, w + j0, vec_end, y + j0); break;
      case 3: AxpyHeads<T, kLoad, 3>(rows, stride, n_pos, w + j0, vec_end, y + j0); break;
      case 2: AxpyHeads<T, kLoad, 2>(rows, stride, n_pos, w + j0, vec_end, y + j0); break;
      default: AxpyHeads<T, kLoad, 1>(rows, stride, n_pos, w + j0, vec_end, y + j0); break;
    }
  }
  for (int32_t j = 0; j < n_q; ++j) {
    for (int64_t i = vec_end; i < n; ++i) {
      for (int32_t p = 0; p < n_pos; ++p) y[j][i] = std::fma(w[j][p], kScalar(rows[p * stride + i]), y[j][i]);
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
