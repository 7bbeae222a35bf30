// AVX2 + FMA + F16C kernels: activation quantizers (bit-exact with the scalar reference), and tiled
// dot products / matrix products for every weight type.
//
// Compiled with -mavx2 -mfma -mf16c and reached only through Avx2Kernels() when the CPU has them.
// Everything here has internal linkage and calls no inline function from a shared header, so no
// AVX2 code can be picked by the linker for a baseline caller.
//
// Tiling: a tile computes R weight rows x C activation rows, loading each weight block once for
// the C activation rows and each activation block once for the R weight rows. Every (row, column)
// pair owns its accumulator (a lane) and sees the float sequence quants.h defines whatever R and C
// are, so VecDot (the 1x1 tile), MatMulRows and the other ISAs agree bit for bit.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "inference/kernels/block_formats.h"
#include "inference/kernels/kernel_table.h"
#include "inference/kernels/tile_driver.h"

namespace airlock::inference::kernels::internal {
namespace {

// --- Scalar helpers (F16C, so no dependency on fp16.h's inline functions) ---

float HalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return _cvtsh_ss(h);
}

uint16_t FloatToHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 64u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

__m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
__m128i Load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// Starts loading the same bytes of the next tile's rows (`ahead` bytes on) into L2. In a
// matrix-vector product each tile reads a few short rows (2-4 KB for a 4096-wide quantized row),
// too short for the hardware prefetcher to get ahead of the loads on its own; this doubled the
// decode bandwidth of Q8_0 and Q4_0. L2 rather than L1, because a tile ahead can be more than L1
// holds when rows are long.
template <int kBytes>
void PrefetchAhead(const uint8_t* p, size_t ahead) {
  for (int off = 0; off < kBytes; off += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + ahead + off), _MM_HINT_T1);
  }
}

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

int32_t HorizontalSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

__m256 Abs(__m256 v) {
  return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

// Packs four vectors of eight int32 (elements 0-7, 8-15, 16-23, 24-31, all within int8) into 32
// int8 in element order.
__m256i PackInt32ToInt8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // per lane: a0-3 b0-3 | a4-7 b4-7
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i bytes = _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// --- Activation quantizers ---

// One 32-value block as llama.cpp's AVX quantize_row_q8_0: d = amax / 127, q = x * (127 / amax)
// rounded half to even.
// Returns sum(q); *d_out gets the unrounded d.
int32_t QuantizeQ8Block(const float* x, int8_t* qs, float* d_out) {
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    amax = _mm256_max_ps(amax, Abs(v[k]));
  }
  const float max_abs = HorizontalMax(amax);
  const float d = max_abs / 127.0f;
  const float id = max_abs != 0.0f ? 127.0f / max_abs : 0.0f;
  const __m256 idv = _mm256_set1_ps(id);
  __m256i q[4];
  __m256i sum = _mm256_setzero_si256();
  for (int k = 0; k < 4; ++k) {
    q[k] = _mm256_cvttps_epi32(
        _mm256_round_ps(_mm256_mul_ps(v[k], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    sum = _mm256_add_epi32(sum, q[k]);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), PackInt32ToInt8(q[0], q[1], q[2], q[3]));
  *d_out = d;
  return HorizontalSumI32(sum);
}

void QuantizeActQ8_0(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    float d;
    QuantizeQ8Block(x + b * kQK, blocks[b].qs, &d);
    blocks[b].d = FloatToHalf(d);
  }
}

void QuantizeActQ8_1(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ8_1*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    float d;
    const int32_t sum = QuantizeQ8Block(x + b * kQK, blocks[b].qs, &d);
    blocks[b].d = FloatToHalf(d);
    blocks[b].s = FloatToHalf(static_cast<float>(sum) * d);
  }
}

// Sum of 16 int8 (one Q8_K bsum).
int16_t SumOf16(__m128i q) {
  return static_cast<int16_t>(
      HorizontalSumI32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(q), _mm256_set1_epi16(1))));
}

void QuantizeActQ8_K(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ8_K*>(dst);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const float* xb = x + b * kQKK;
    BlockQ8_K& out = blocks[b];
    __m256 amax_v = _mm256_setzero_ps();
    for (int k = 0; k < kQKK; k += 8) amax_v = _mm256_max_ps(amax_v, Abs(_mm256_loadu_ps(xb + k)));
    const float amax = HorizontalMax(amax_v);
    if (amax == 0.0f) {
      std::memset(&out, 0, sizeof out);
      continue;
    }
    // The reference keeps the first element whose magnitude is the maximum, with its sign.
    const __m256 amax_b = _mm256_set1_ps(amax);
    float max = 0.0f;
    for (int k = 0; k < kQKK; k += 8) {
      const int mask =
          _mm256_movemask_ps(_mm256_cmp_ps(Abs(_mm256_loadu_ps(xb + k)), amax_b, _CMP_EQ_OQ));
      if (mask != 0) {
        max = xb[k + __builtin_ctz(static_cast<unsigned>(mask))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 iscale_v = _mm256_set1_ps(iscale);
    const __m256i limit = _mm256_set1_epi32(127);
    for (int k = 0; k < kQKK; k += 32) {
      __m256i q[4];
      for (int j = 0; j < 4; ++j) {
        // cvtps rounds half to even under the default MXCSR, as ggml's nearest_int.
        q[j] = _mm256_min_epi32(
            _mm256_cvtps_epi32(_mm256_mul_ps(iscale_v, _mm256_loadu_ps(xb + k + 8 * j))), limit);
      }
      const __m256i packed = PackInt32ToInt8(q[0], q[1], q[2], q[3]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.qs + k), packed);
      out.bsums[k / 16] = SumOf16(_mm256_castsi256_si128(packed));
      out.bsums[k / 16 + 1] = SumOf16(_mm256_extracti128_si256(packed, 1));
    }
    out.d = 1.0f / iscale;
  }
}

void StoreHalfBits(void* dst, int64_t i, uint16_t h) {
  std::memcpy(static_cast<uint8_t*>(dst) + 2 * i, &h, sizeof h);
}

void QuantizeActF16(const float* x, void* dst, int64_t n) {
  auto* h = static_cast<uint8_t*>(dst);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 2 * i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) StoreHalfBits(dst, i, FloatToHalf(x[i]));
}

void QuantizeActBf16(const float* x, void* dst, int64_t n) {
  auto* h = static_cast<uint8_t*>(dst);
  int64_t i = 0;
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(0x7f800000);
  for (; i + 16 <= n; i += 16) {
    __m256i r[2];
    for (int k = 0; k < 2; ++k) {
      const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(x + i + 8 * k));
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      const __m256i rounded = _mm256_srli_epi32(
          _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
      const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
      const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
      r[k] = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
    }
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + 2 * i), packed);
  }
  for (; i < n; ++i) StoreHalfBits(dst, i, FloatToBf16(x[i]));
}

// --- Tiled matrix products ---

// Kernels follow the contract in tile_driver.h.

// --- Float weights ---

// F32 / F16 / BF16 rows: Load8 widens 8 elements at an index to floats, LoadTail the last 1-7
// (through a zero-padded copy, so n need not be a multiple of 8).
struct F32Elems {
  static constexpr size_t kSize = 4;
  static __m256 Load8(const uint8_t* p, int64_t i) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + i);
  }
  static __m256 LoadTail(const uint8_t* p, int64_t i, int64_t count) {
    float buf[8] = {};
    std::memcpy(buf, p + i * kSize, static_cast<size_t>(count) * kSize);
    return _mm256_loadu_ps(buf);
  }
};

struct F16Elems {
  static constexpr size_t kSize = 2;
  static __m256 Load8(const uint8_t* p, int64_t i) {
    return _mm256_cvtph_ps(Load128(p + i * kSize));
  }
  static __m256 LoadTail(const uint8_t* p, int64_t i, int64_t count) {
    uint16_t buf[8] = {};
    std::memcpy(buf, p + i * kSize, static_cast<size_t>(count) * kSize);
    return _mm256_cvtph_ps(Load128(buf));
  }
};

struct Bf16Elems {
  static constexpr size_t kSize = 2;
  static __m256 Widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static __m256 Load8(const uint8_t* p, int64_t i) { return Widen(Load128(p + i * kSize)); }
  static __m256 LoadTail(const uint8_t* p, int64_t i, int64_t count) {
    uint16_t buf[8] = {};
    std::memcpy(buf, p + i * kSize, static_cast<size_t>(count) * kSize);
    return Widen(Load128(buf));
  }
};

// quants.h's 32 lanes as four ymm per output (lanes 0-7, 8-15, 16-23, 24-31), so that the sums
// are those of the AVX-512 kernel and the scalar reference: the last n % 32 elements go to lanes
// 0-15, and the lanes are added in the same tree.
template <class E>
struct FloatKernel {
  // Four accumulators per output: at most twelve in a tile, beside one weight and the activations.
  static constexpr int kRows = 1;
  static constexpr int kCols = 3;
  static constexpr int kDecodeRows = 3;

  static __m256 Load(const uint8_t* p, int64_t i, int64_t n) {
    return i + 8 <= n ? E::Load8(p, i) : (i < n ? E::LoadTail(p, i, n - i) : _mm256_setzero_ps());
  }

  template <int R, int C>
  static void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, float* y,
                   int64_t ys) {
    __m256 acc[R][C][4];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        for (int k = 0; k < 4; ++k) acc[r][c][k] = _mm256_setzero_ps();
      }
    }
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      for (int k = 0; k < 4; ++k) {
        __m256 xv[C];
        for (int c = 0; c < C; ++c) xv[c] = E::Load8(x + c * xs, i + 8 * k);
        for (int r = 0; r < R; ++r) {
          const __m256 wv = E::Load8(w + r * ws, i + 8 * k);
          for (int c = 0; c < C; ++c) acc[r][c][k] = _mm256_fmadd_ps(wv, xv[c], acc[r][c][k]);
        }
      }
    }
    // The tail, 16 elements at a time into lanes 0-15 (zero padding adds exactly nothing).
    for (; i < n; i += 16) {
      for (int c = 0; c < C; ++c) {
        for (int k = 0; k < 2; ++k) {
          const __m256 xv = Load(x + c * xs, i + 8 * k, n);
          for (int r = 0; r < R; ++r) {
            acc[r][c][k] = _mm256_fmadd_ps(Load(w + r * ws, i + 8 * k, n), xv, acc[r][c][k]);
          }
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        const __m256 v_lo = _mm256_add_ps(acc[r][c][0], acc[r][c][2]);
        const __m256 v_hi = _mm256_add_ps(acc[r][c][1], acc[r][c][3]);
        y[c * ys + r] = HorizontalSum(_mm256_add_ps(v_lo, v_hi));
      }
    }
  }
};

// --- Per-block float steps ---
//
// The quantized kernels reduce every (weight row, activation row) pair's integer sums per block
// and then apply quants.h's float step to four pairs at once in the lanes of an xmm: the tile's
// activation rows when it has several (C > 1), its weight rows in a matrix-vector product (C == 1).

// Lane k of the result: the sum of v_k's 32-bit lanes. Unpacks and adds.
__m128i SumLanesOf4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(v0, v1), _mm256_unpackhi_epi32(v0, v1));
  const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(v2, v3), _mm256_unpackhi_epi32(v2, v3));
  const __m256i u = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
  return _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}

// The lane layout of an R x C tile: kVecs xmm of four pairs each.
template <int R, int C>
struct PairLanes {
  static_assert(C <= 4 && (C > 1 || R <= 4));
  static constexpr bool kRowLanes = C == 1;
  static constexpr int kVecs = kRowLanes ? 1 : R;

  // Integer sums s[r][c] reduced into the layout.
  static void Reduce(const __m256i (&s)[R][C], __m128i (&out)[kVecs]) {
    const __m256i zero = _mm256_setzero_si256();
    if constexpr (kRowLanes) {
      out[0] = SumLanesOf4(s[0][0], R > 1 ? s[1 % R][0] : zero, R > 2 ? s[2 % R][0] : zero,
                           R > 3 ? s[3 % R][0] : zero);
    } else {
      for (int r = 0; r < R; ++r) {
        out[r] = SumLanesOf4(s[r][0], s[r][1 % C], C > 2 ? s[r][2 % C] : zero,
                             C > 3 ? s[r][3 % C] : zero);
      }
    }
  }
  // A per-row value (v[r]) and a per-column value (v[c]) in the layout.
  static void Rows(const float (&v)[R], __m128 (&out)[kVecs]) {
    if constexpr (kRowLanes) {
      out[0] = _mm_setr_ps(v[0], R > 1 ? v[1 % R] : 0.0f, R > 2 ? v[2 % R] : 0.0f,
                           R > 3 ? v[3 % R] : 0.0f);
    } else {
      for (int r = 0; r < R; ++r) out[r] = _mm_set1_ps(v[r]);
    }
  }
  static void Cols(const float (&v)[C], __m128 (&out)[kVecs]) {
    if constexpr (kRowLanes) {
      out[0] = _mm_set1_ps(v[0]);
    } else {
      const __m128 cols = _mm_setr_ps(v[0], v[1 % C], C > 2 ? v[2 % C] : 0.0f,
                                      C > 3 ? v[3 % C] : 0.0f);
      for (int r = 0; r < R; ++r) out[r] = cols;
    }
  }
  static void Store(const __m128 (&acc)[kVecs], float* y, int64_t ys) {
    for (int k = 0; k < kVecs; ++k) {
      alignas(16) float out[4];
      _mm_store_ps(out, acc[k]);
      if constexpr (kRowLanes) {
        for (int r = 0; r < R; ++r) y[r] = out[r];
      } else {
        for (int c = 0; c < C; ++c) y[c * ys + k] = out[c];
      }
    }
  }
};

// --- 32-element quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) ---

// Expands 32 bits to 32 bytes: 0xFF where the bit is set.
__m256i BitsToBytes(uint32_t bits) {
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int32_t>(bits)),
                          _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                             0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// Nibbles of a 16-byte Q4 block in element order (low nibbles are elements 0-15).
__m256i Nibbles32(const uint8_t* qs) {
  const __m128i q = Load128(qs);
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Weight decoders: Values() gives the 32 quants as int8 (signed types, offset removed) or uint8
// (types with a min, used as is); Scale()/Min() the block's floats.
struct Q4_0Weights {
  static constexpr size_t kBytes = sizeof(BlockQ4_0);
  static constexpr bool kSigned = true;
  static constexpr bool kHasMin = false;
  static __m256i Values(const uint8_t* b) {
    return _mm256_sub_epi8(Nibbles32(b + 2), _mm256_set1_epi8(8));
  }
  static float Scale(const uint8_t* b) { return HalfAt(b); }
  static float Min(const uint8_t*) { return 0.0f; }
};

struct Q4_1Weights {
  static constexpr size_t kBytes = sizeof(BlockQ4_1);
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = true;
  static __m256i Values(const uint8_t* b) { return Nibbles32(b + 4); }
  static float Scale(const uint8_t* b) { return HalfAt(b); }
  static float Min(const uint8_t* b) { return HalfAt(b + 2); }
};

struct Q5_0Weights {
  static constexpr size_t kBytes = sizeof(BlockQ5_0);
  static constexpr bool kSigned = true;
  static constexpr bool kHasMin = false;
  static __m256i Values(const uint8_t* b) {
    uint32_t qh;
    std::memcpy(&qh, b + 2, sizeof qh);
    const __m256i high = _mm256_and_si256(BitsToBytes(qh), _mm256_set1_epi8(0x10));
    return _mm256_sub_epi8(_mm256_or_si256(Nibbles32(b + 6), high), _mm256_set1_epi8(16));
  }
  static float Scale(const uint8_t* b) { return HalfAt(b); }
  static float Min(const uint8_t*) { return 0.0f; }
};

struct Q5_1Weights {
  static constexpr size_t kBytes = sizeof(BlockQ5_1);
  static constexpr bool kSigned = false;
  static constexpr bool kHasMin = true;
  static __m256i Values(const uint8_t* b) {
    uint32_t qh;
    std::memcpy(&qh, b + 4, sizeof qh);
    const __m256i high = _mm256_and_si256(BitsToBytes(qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(Nibbles32(b + 8), high);
  }
  static float Scale(const uint8_t* b) { return HalfAt(b); }
  static float Min(const uint8_t* b) { return HalfAt(b + 2); }
};

struct Q8_0Weights {
  static constexpr size_t kBytes = sizeof(BlockQ8_0);
  static constexpr bool kSigned = true;
  static constexpr bool kHasMin = false;
  static __m256i Values(const uint8_t* b) { return Load256(b + 2); }
  static float Scale(const uint8_t* b) { return HalfAt(b); }
  static float Min(const uint8_t*) { return 0.0f; }
};

// Activation blocks: Q8_0 (d, qs) and Q8_1 (d, s, qs).
struct Q8_0Acts {
  static constexpr size_t kBytes = sizeof(BlockQ8_0);
  static constexpr size_t kQsOffset = 2;
  static float Sum(const uint8_t*) { return 0.0f; }
};

struct Q8_1Acts {
  static constexpr size_t kBytes = sizeof(BlockQ8_1);
  static constexpr size_t kQsOffset = 4;
  static float Sum(const uint8_t* b) { return HalfAt(b + 2); }
};

template <class W, class A>
struct Q32Kernel {
  static constexpr int kRows = 2;
  static constexpr int kCols = 4;
  static constexpr int kDecodeRows = 4;

  template <int R, int C>
  static void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, float* y,
                   int64_t ys) {
    using L = PairLanes<R, C>;
    const __m256i ones = _mm256_set1_epi16(1);
    __m128 acc[L::kVecs];
    for (int k = 0; k < L::kVecs; ++k) acc[k] = _mm_setzero_ps();
    for (int64_t b = 0; b < n / kQK; ++b) {
      __m256i wq[R], wabs[R];
      float wd[R], wm[R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * ws + b * W::kBytes;
        PrefetchAhead<W::kBytes>(blk, R * ws);
        wq[r] = W::Values(blk);
        // Signed weights use |w| * sign(a, w) so that maddubs (unsigned x signed) applies;
        // |w| <= 128 and |a| <= 127 keep its int16 pair sums below saturation.
        if constexpr (W::kSigned) wabs[r] = _mm256_sign_epi8(wq[r], wq[r]);
        wd[r] = W::Scale(blk);
        wm[r] = W::Min(blk);
      }
      __m256i p[R][C];
      float ad[C], as[C];
      for (int c = 0; c < C; ++c) {
        const uint8_t* ablk = x + c * xs + b * A::kBytes;
        const __m256i a = Load256(ablk + A::kQsOffset);
        ad[c] = HalfAt(ablk);
        as[c] = A::Sum(ablk);
        for (int r = 0; r < R; ++r) {
          __m256i p16;
          if constexpr (W::kSigned) {
            p16 = _mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(a, wq[r]));
          } else {
            p16 = _mm256_maddubs_epi16(wq[r], a);
          }
          p[r][c] = _mm256_madd_epi16(p16, ones);
        }
      }
      __m128i isum[L::kVecs];
      __m128 dw[L::kVecs], da[L::kVecs];
      L::Reduce(p, isum);
      L::Rows(wd, dw);
      L::Cols(ad, da);
      for (int k = 0; k < L::kVecs; ++k) {
        acc[k] = _mm_fmadd_ps(_mm_cvtepi32_ps(isum[k]), _mm_mul_ps(dw[k], da[k]), acc[k]);
      }
      if constexpr (W::kHasMin) {
        __m128 mw[L::kVecs], sa[L::kVecs];
        L::Rows(wm, mw);
        L::Cols(as, sa);
        for (int k = 0; k < L::kVecs; ++k) acc[k] = _mm_fmadd_ps(mw[k], sa[k], acc[k]);
      }
    }
    L::Store(acc, y, ys);
  }
};

// --- K-quants (Q4_K, Q5_K, Q6_K) against Q8_K ---

// Byte offsets of fields whose address we take: a pointer to a packed uint16/int16 member would
// claim an alignment it lacks.
constexpr size_t kQ8KBsumsOffset = offsetof(BlockQ8_K, bsums);
constexpr size_t kQ6KScaleOffset = offsetof(BlockQ6_K, d);

// Unpacks the 6-bit scales and mins of a Q4_K/Q5_K super-block (12 bytes at p) into 16 bytes:
// scales 0-7 then mins 0-7. Reads 16 bytes (the block continues past the 12).
__m128i UnpackScalesMins(const uint8_t* p) {
  const __m128i raw = Load128(p);                     // dwords: u0 u1 u2 (x)
  const __m128i lows = _mm_shuffle_epi32(raw, 0x98);  // u0 u2 u1 u2
  const __m128i tops = _mm_shuffle_epi32(raw, 0x40);  // u0 u0 u0 u1
  const __m128i low_bits =
      _mm_and_si128(_mm_srlv_epi32(lows, _mm_setr_epi32(0, 0, 0, 4)),
                    _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  const __m128i high_bits =
      _mm_and_si128(_mm_srli_epi32(tops, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(low_bits, high_bits);
}

// int16 lanes all equal to byte `index` of a broadcast 16-byte table.
__m256i BroadcastByteAsInt16(__m256i table, int index) {
  return _mm256_shuffle_epi8(table, _mm256_set1_epi16(static_cast<int16_t>(0x8000 | index)));
}

// Nibble / fifth-bit extraction for 64 elements of a Q4_K/Q5_K super-block (chunk g, elements
// 64g .. 64g+63): low nibbles are sub-block 2g, high nibbles sub-block 2g+1.
template <int kShift>
__m256i HighBitToBit4(__m256i qh) {
  // Moves bit kShift of every byte to bit 4 (shifts stay within each byte for the bits kept).
  if constexpr (kShift <= 4) {
    return _mm256_and_si256(_mm256_slli_epi16(qh, 4 - kShift), _mm256_set1_epi8(0x10));
  } else {
    return _mm256_and_si256(_mm256_srli_epi16(qh, kShift - 4), _mm256_set1_epi8(0x10));
  }
}

template <bool kFifthBit>
struct KQuantWeights {
  static constexpr size_t kBytes = kFifthBit ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  static constexpr size_t kQsOffset = kFifthBit ? 48 : 16;

  template <int g>
  static void Chunk(const uint8_t* b, __m256i* lo, __m256i* hi) {
    const __m256i q = Load256(b + kQsOffset + 32 * g);
    const __m256i mask = _mm256_set1_epi8(0x0F);
    *lo = _mm256_and_si256(q, mask);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
    if constexpr (kFifthBit) {
      const __m256i qh = Load256(b + 16);
      *lo = _mm256_or_si256(*lo, HighBitToBit4<2 * g>(qh));
      *hi = _mm256_or_si256(*hi, HighBitToBit4<2 * g + 1>(qh));
    }
  }
};

template <bool kFifthBit>
struct KQuantKernel {
  using W = KQuantWeights<kFifthBit>;
  static constexpr int kRows = 2;
  static constexpr int kCols = 2;
  static constexpr int kDecodeRows = 2;

  template <int g, int R, int C>
  static void AccumulateChunk(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int64_t b,
                              const __m256i (&table)[R], __m256i (&isum)[R][C]) {
    __m256i lo[R], hi[R], sc_lo[R], sc_hi[R];
    for (int r = 0; r < R; ++r) {
      W::template Chunk<g>(w + r * ws + b * W::kBytes, &lo[r], &hi[r]);
      sc_lo[r] = BroadcastByteAsInt16(table[r], 2 * g);
      sc_hi[r] = BroadcastByteAsInt16(table[r], 2 * g + 1);
    }
    for (int c = 0; c < C; ++c) {
      const int8_t* qs = reinterpret_cast<const BlockQ8_K*>(x + c * xs)[b].qs + 64 * g;
      const __m256i a_lo = Load256(qs);
      const __m256i a_hi = Load256(qs + 32);
      for (int r = 0; r < R; ++r) {
        // maddubs: 15 (or 31) * 127 * 2 fits int16; madd applies the sub-block scale.
        const __m256i p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], a_lo), sc_lo[r]);
        const __m256i p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], a_hi), sc_hi[r]);
        isum[r][c] = _mm256_add_epi32(isum[r][c], _mm256_add_epi32(p_lo, p_hi));
      }
    }
  }

  template <int R, int C>
  static void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, float* y,
                   int64_t ys) {
    using L = PairLanes<R, C>;
    __m128 acc[L::kVecs];
    for (int k = 0; k < L::kVecs; ++k) acc[k] = _mm_setzero_ps();
    // Pairs each bsum with its sub-block's min: int16 lanes m0 m0 m1 m1 ... m7 m7.
    const __m256i min_pairs = _mm256_setr_epi8(
        8, -128, 8, -128, 9, -128, 9, -128, 10, -128, 10, -128, 11, -128, 11, -128, 12, -128, 12,
        -128, 13, -128, 13, -128, 14, -128, 14, -128, 15, -128, 15, -128);
    for (int64_t b = 0; b < n / kQKK; ++b) {
      __m256i table[R], mins[R];
      float d[R], dmin[R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * ws + b * W::kBytes;
        PrefetchAhead<W::kBytes>(blk, R * ws);
        table[r] = _mm256_broadcastsi128_si256(UnpackScalesMins(blk + 4));
        mins[r] = _mm256_shuffle_epi8(table[r], min_pairs);
        d[r] = HalfAt(blk);
        dmin[r] = HalfAt(blk + 2);
      }
      __m256i isum[R][C], msum[R][C];
      for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) isum[r][c] = _mm256_setzero_si256();
      }
      AccumulateChunk<0, R, C>(w, ws, x, xs, b, table, isum);
      AccumulateChunk<1, R, C>(w, ws, x, xs, b, table, isum);
      AccumulateChunk<2, R, C>(w, ws, x, xs, b, table, isum);
      AccumulateChunk<3, R, C>(w, ws, x, xs, b, table, isum);
      float ad[C];
      for (int c = 0; c < C; ++c) {
        const BlockQ8_K& act = reinterpret_cast<const BlockQ8_K*>(x + c * xs)[b];
        const __m256i bsums = Load256(reinterpret_cast<const uint8_t*>(&act) + kQ8KBsumsOffset);
        ad[c] = act.d;
        for (int r = 0; r < R; ++r) msum[r][c] = _mm256_madd_epi16(bsums, mins[r]);
      }
      __m128i is[L::kVecs], ms[L::kVecs];
      __m128 dv[L::kVecs], dminv[L::kVecs], adv[L::kVecs];
      L::Reduce(isum, is);
      L::Reduce(msum, ms);
      L::Rows(d, dv);
      L::Rows(dmin, dminv);
      L::Cols(ad, adv);
      for (int k = 0; k < L::kVecs; ++k) {
        __m128 t = _mm_mul_ps(_mm_cvtepi32_ps(is[k]), dv[k]);
        t = _mm_fnmadd_ps(_mm_cvtepi32_ps(ms[k]), dminv[k], t);
        acc[k] = _mm_fmadd_ps(t, adv[k], acc[k]);
      }
    }
    L::Store(acc, y, ys);
  }
};

struct Q6KKernel {
  static constexpr int kRows = 2;
  static constexpr int kCols = 2;
  static constexpr int kDecodeRows = 2;

  // The four 32-element chunks of one half (128 elements) of a Q6_K super-block, as uint8 0..63.
  static void DecodeHalf(const BlockQ6_K& blk, int half, __m256i* q) {
    const __m256i l0 = Load256(blk.ql + 64 * half);
    const __m256i l1 = Load256(blk.ql + 64 * half + 32);
    const __m256i h = Load256(blk.qh + 32 * half);
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i two = _mm256_set1_epi8(0x30);
    q[0] =
        _mm256_or_si256(_mm256_and_si256(l0, low), _mm256_and_si256(_mm256_slli_epi16(h, 4), two));
    q[1] =
        _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_and_si256(_mm256_slli_epi16(h, 2), two));
    q[2] =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(h, two));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                           _mm256_and_si256(_mm256_srli_epi16(h, 2), two));
  }

  template <int R, int C>
  static void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, float* y,
                   int64_t ys) {
    using L = PairLanes<R, C>;
    __m128 acc[L::kVecs];
    for (int k = 0; k < L::kVecs; ++k) acc[k] = _mm_setzero_ps();
    for (int64_t b = 0; b < n / kQKK; ++b) {
      const BlockQ6_K* blk[R];
      __m128i scales8[R];
      __m256i scales32[R];
      for (int r = 0; r < R; ++r) {
        blk[r] = reinterpret_cast<const BlockQ6_K*>(w + r * ws) + b;
        PrefetchAhead<sizeof(BlockQ6_K)>(reinterpret_cast<const uint8_t*>(blk[r]), R * ws);
        scales8[r] = Load128(blk[r]->scales);
        // 32 * scale per group of 16, to take 32 * sum(a) out with the Q8_K bsums.
        scales32[r] = _mm256_slli_epi16(_mm256_cvtepi8_epi16(scales8[r]), 5);
      }
      __m256i isum[R][C];
      for (int c = 0; c < C; ++c) {
        const __m256i bsums = Load256(x + c * xs + b * sizeof(BlockQ8_K) + kQ8KBsumsOffset);
        for (int r = 0; r < R; ++r) {
          isum[r][c] =
              _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(bsums, scales32[r]));
        }
      }
      for (int half = 0; half < 2; ++half) {
        __m256i q[R][4];
        for (int r = 0; r < R; ++r) DecodeHalf(*blk[r], half, q[r]);
        for (int k = 0; k < 4; ++k) {
          const int chunk = 4 * half + k;  // groups 2 * chunk and 2 * chunk + 1
          __m256i sc[R];
          const __m128i pick = _mm_setr_epi8(
              2 * chunk, 2 * chunk, 2 * chunk, 2 * chunk, 2 * chunk, 2 * chunk, 2 * chunk,
              2 * chunk, 2 * chunk + 1, 2 * chunk + 1, 2 * chunk + 1, 2 * chunk + 1, 2 * chunk + 1,
              2 * chunk + 1, 2 * chunk + 1, 2 * chunk + 1);
          for (int r = 0; r < R; ++r) {
            sc[r] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales8[r], pick));
          }
          for (int c = 0; c < C; ++c) {
            const __m256i a =
                Load256(reinterpret_cast<const BlockQ8_K*>(x + c * xs)[b].qs + 32 * chunk);
            for (int r = 0; r < R; ++r) {
              // 63 * 127 * 2 fits int16.
              isum[r][c] = _mm256_add_epi32(
                  isum[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(q[r][k], a), sc[r]));
            }
          }
        }
      }
      float d[R], ad[C];
      for (int r = 0; r < R; ++r) d[r] = HalfAt(reinterpret_cast<const uint8_t*>(blk[r]) + kQ6KScaleOffset);
      for (int c = 0; c < C; ++c) ad[c] = reinterpret_cast<const BlockQ8_K*>(x + c * xs)[b].d;
      __m128i is[L::kVecs];
      __m128 dv[L::kVecs], adv[L::kVecs];
      L::Reduce(isum, is);
      L::Rows(d, dv);
      L::Cols(ad, adv);
      for (int k = 0; k < L::kVecs; ++k) {
        acc[k] = _mm_fmadd_ps(_mm_cvtepi32_ps(is[k]), _mm_mul_ps(dv[k], adv[k]), acc[k]);
      }
    }
    L::Store(acc, y, ys);
  }
};

template <class K>
void Register(KernelTable* t, TensorType type) {
  t->vec_dot[static_cast<size_t>(type)] = VecDotTiled<K>;
  t->mat_mul[static_cast<size_t>(type)] = MatMulTiled<K>;
}

KernelTable MakeAvx2Table() {
  KernelTable t{};
  t.quantize_activation[static_cast<size_t>(TensorType::kQ8_0)] = QuantizeActQ8_0;
  t.quantize_activation[static_cast<size_t>(TensorType::kQ8_1)] = QuantizeActQ8_1;
  t.quantize_activation[static_cast<size_t>(TensorType::kQ8_K)] = QuantizeActQ8_K;
  t.quantize_activation[static_cast<size_t>(TensorType::kF16)] = QuantizeActF16;
  t.quantize_activation[static_cast<size_t>(TensorType::kBF16)] = QuantizeActBf16;
  Register<FloatKernel<F32Elems>>(&t, TensorType::kF32);
  Register<FloatKernel<F16Elems>>(&t, TensorType::kF16);
  Register<FloatKernel<Bf16Elems>>(&t, TensorType::kBF16);
  Register<Q32Kernel<Q4_0Weights, Q8_0Acts>>(&t, TensorType::kQ4_0);
  Register<Q32Kernel<Q4_1Weights, Q8_1Acts>>(&t, TensorType::kQ4_1);
  Register<Q32Kernel<Q5_0Weights, Q8_0Acts>>(&t, TensorType::kQ5_0);
  Register<Q32Kernel<Q5_1Weights, Q8_1Acts>>(&t, TensorType::kQ5_1);
  Register<Q32Kernel<Q8_0Weights, Q8_0Acts>>(&t, TensorType::kQ8_0);
  Register<KQuantKernel<false>>(&t, TensorType::kQ4_K);
  Register<KQuantKernel<true>>(&t, TensorType::kQ5_K);
  Register<Q6KKernel>(&t, TensorType::kQ6_K);
  return t;
}

}  // namespace

const KernelTable& Avx2Kernels() {
  static const KernelTable table = MakeAvx2Table();
  return table;
}

}  // namespace airlock::inference::kernels::internal
