// AVX-512 (F/BW/VL/DQ + VNNI) dot products and matrix products for every weight type. Activation
// quantizers come from the AVX2 table and dequantizers from the scalar one (both are a small share
// of the work: one row per token, against a whole matrix per token for the products).
//
// Compiled with AVX-512 flags and reached only through Avx512Kernels() when the CPU has them; like
// quants_avx2.cc everything here has internal linkage and uses no inline function from a shared
// header (tile_driver.h holds templates instantiated only with this file's types).
//
// Integer core: vpdpbusd multiplies unsigned weight bytes by signed activation bytes and adds
// groups of four into int32 lanes without intermediate saturation. Weights whose quants are
// signed (Q4_0, Q5_0, Q8_0) are fed with their offset (+8, +16, +128) and the accumulator starts
// at -offset * sum(activations), so every block's integer dot is exact. The K-quants go through
// vpmaddubsw (unsigned x signed -> int16, never saturating for these ranges) and vpdpwssd, which
// applies the sub-block scales while accumulating into int32.

// GCC 12's AVX-512 intrinsics self-initialize their "undefined" pass-through vectors, which
// -Wuninitialized reports wherever they are inlined (GCC bug 105593, fixed in GCC 13). The state
// must be set before the header is read for the suppression to reach its lines.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "inference/kernels/block_formats.h"
#include "inference/kernels/kernel_table.h"
#include "inference/kernels/tile_driver.h"

namespace airlock::inference::kernels::internal {
namespace {

// --- Helpers ---

uint16_t HalfBitsAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return h;
}

float HalfAt(const uint8_t* p) { return _cvtsh_ss(HalfBitsAt(p)); }

__m512i Load512(const void* p) { return _mm512_loadu_si512(p); }
__m256i Load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
__m128i Load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// Starts loading the same bytes of the next tile's rows (`ahead` bytes on) into L2. In a
// matrix-vector product each tile reads a few short rows (2-4 KB for a 4096-wide quantized row),
// too short for the hardware prefetcher to get ahead of the loads on its own; this doubled the
// decode bandwidth of Q8_0 and Q4_0. L2 rather than L1, because a tile ahead can be more than L1
// holds when rows are long.
template <int kBytes>
void PrefetchAhead(const uint8_t* p, size_t ahead) {
  for (int off = 0; off < kBytes; off += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + ahead + off), _MM_HINT_T1);
}

// 32 bytes at the low end of a zmm, the rest zero.
__m512i ZeroExtend(__m256i v) { return _mm512_inserti64x4(_mm512_setzero_si512(), v, 0); }

float HorizontalSum(__m512 v) {
  const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  t = _mm_add_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}

// Kernels follow the contract in tile_driver.h. Blocks of 32 are processed two per zmm: bytes
// (and int32 lanes) 0-31 (0-7) belong to block b, 32-63 (8-15) to block b + 1. An odd last block
// runs alone with the upper half zero, which adds exactly nothing.

// --- Float weights ---

struct F32Elems {
  static constexpr size_t kSize = 4;
  static __m512 Load(const uint8_t* p, int64_t i) { return _mm512_loadu_ps(p + i * kSize); }
  static __m512 LoadMasked(const uint8_t* p, int64_t i, __mmask16 k) {
    return _mm512_maskz_loadu_ps(k, p + i * kSize);
  }
};

struct F16Elems {
  static constexpr size_t kSize = 2;
  static __m512 Load(const uint8_t* p, int64_t i) {
    return _mm512_cvtph_ps(Load256(p + i * kSize));
  }
  static __m512 LoadMasked(const uint8_t* p, int64_t i, __mmask16 k) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p + i * kSize));
  }
};

struct Bf16Elems {
  static constexpr size_t kSize = 2;
  static __m512 Widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 Load(const uint8_t* p, int64_t i) { return Widen(Load256(p + i * kSize)); }
  static __m512 LoadMasked(const uint8_t* p, int64_t i, __mmask16 k) {
    return Widen(_mm256_maskz_loadu_epi16(k, p + i * kSize));
  }
};

// Two accumulators per pair (32 elements per step) so that even the 1x1 tile of an attention dot
// product keeps two FMA chains going.
template <class E>
struct FloatKernel {
  static constexpr int kRows = 2;
  static constexpr int kCols = 4;
  static constexpr int kDecodeRows = 4;

  template <int R, int C>
  static void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, float* y,
                   int64_t ys) {
    __m512 acc0[R][C], acc1[R][C];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) acc0[r][c] = acc1[r][c] = _mm512_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      __m512 w0[R], w1[R];
      for (int r = 0; r < R; ++r) {
        w0[r] = E::Load(w + r * ws, i);
        w1[r] = E::Load(w + r * ws, i + 16);
      }
      for (int c = 0; c < C; ++c) {
        const __m512 x0 = E::Load(x + c * xs, i);
        const __m512 x1 = E::Load(x + c * xs, i + 16);
        for (int r = 0; r < R; ++r) {
          acc0[r][c] = _mm512_fmadd_ps(w0[r], x0, acc0[r][c]);
          acc1[r][c] = _mm512_fmadd_ps(w1[r], x1, acc1[r][c]);
        }
      }
    }
    for (; i < n; i += 16) {
      const int64_t count = n - i < 16 ? n - i : 16;
      const auto k = static_cast<__mmask16>((1u << count) - 1);
      for (int c = 0; c < C; ++c) {
        const __m512 xv = E::LoadMasked(x + c * xs, i, k);
        for (int r = 0; r < R; ++r) {
          acc0[r][c] = _mm512_fmadd_ps(E::LoadMasked(w + r * ws, i, k), xv, acc0[r][c]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        y[c * ys + r] = HorizontalSum(_mm512_add_ps(acc0[r][c], acc1[r][c]));
      }
    }
  }
};

// --- 32-element quantized weights ---

// Nibbles of two 16-byte Q4 blocks (at q0 and q1) in element order: [q0 low | q0 high | q1 low |
// q1 high].
__m512i NibblePair(const uint8_t* q0, const uint8_t* q1) {
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(Load128(q0)), Load128(q1), 1);
  const __m512i dup = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
                                               _mm512_castsi256_si512(both));
  return _mm512_and_si512(_mm512_srlv_epi64(dup, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)),
                          _mm512_set1_epi8(0x0F));
}

__m512i NibbleSingle(const uint8_t* q) {
  const __m128i v = Load128(q);
  const __m256i both =
      _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
  return ZeroExtend(both);
}

uint32_t U32At(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Adds 16 to the bytes whose bit is set in a Q5 block's qh (one or two blocks).
__m512i AddFifthBits(__m512i v, uint64_t bits) {
  return _mm512_mask_add_epi8(v, _cvtu64_mask64(bits), v, _mm512_set1_epi8(16));
}

// Weight decoders: Values2/Values1 give two blocks (one, upper half zero) of quants as unsigned
// bytes, shifted up by kOffset for signed types. d is the block's first field; m (kHasMin) the
// second.
struct Q4_0Weights {
  static constexpr size_t kBytes = sizeof(BlockQ4_0);
  static constexpr int kOffset = 8;
  static constexpr bool kHasMin = false;
  static __m512i Values2(const uint8_t* b) { return NibblePair(b + 2, b + kBytes + 2); }
  static __m512i Values1(const uint8_t* b) { return NibbleSingle(b + 2); }
};

struct Q4_1Weights {
  static constexpr size_t kBytes = sizeof(BlockQ4_1);
  static constexpr int kOffset = 0;
  static constexpr bool kHasMin = true;
  static __m512i Values2(const uint8_t* b) { return NibblePair(b + 4, b + kBytes + 4); }
  static __m512i Values1(const uint8_t* b) { return NibbleSingle(b + 4); }
};

struct Q5_0Weights {
  static constexpr size_t kBytes = sizeof(BlockQ5_0);
  static constexpr int kOffset = 16;
  static constexpr bool kHasMin = false;
  static __m512i Values2(const uint8_t* b) {
    const uint64_t bits = U32At(b + 2) | (static_cast<uint64_t>(U32At(b + kBytes + 2)) << 32);
    return AddFifthBits(NibblePair(b + 6, b + kBytes + 6), bits);
  }
  static __m512i Values1(const uint8_t* b) {
    return AddFifthBits(NibbleSingle(b + 6), U32At(b + 2));
  }
};

struct Q5_1Weights {
  static constexpr size_t kBytes = sizeof(BlockQ5_1);
  static constexpr int kOffset = 0;
  static constexpr bool kHasMin = true;
  static __m512i Values2(const uint8_t* b) {
    const uint64_t bits = U32At(b + 4) | (static_cast<uint64_t>(U32At(b + kBytes + 4)) << 32);
    return AddFifthBits(NibblePair(b + 8, b + kBytes + 8), bits);
  }
  static __m512i Values1(const uint8_t* b) {
    return AddFifthBits(NibbleSingle(b + 8), U32At(b + 4));
  }
};

struct Q8_0Weights {
  static constexpr size_t kBytes = sizeof(BlockQ8_0);
  static constexpr int kOffset = 128;
  static constexpr bool kHasMin = false;
  // x ^ 0x80 = x + 128 as an unsigned byte.
  static __m512i Values2(const uint8_t* b) {
    const __m512i v =
        _mm512_inserti64x4(_mm512_castsi256_si512(Load256(b + 2)), Load256(b + kBytes + 2), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
  static __m512i Values1(const uint8_t* b) {
    return ZeroExtend(_mm256_xor_si256(Load256(b + 2), _mm256_set1_epi8(static_cast<char>(0x80))));
  }
};

// Q8_0 activations (d, qs) and Q8_1 (d, s, qs).
template <bool kWithSum>
struct Q8Acts {
  static constexpr size_t kBytes = kWithSum ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0);
  static constexpr size_t kQs = kWithSum ? 4 : 2;
  static __m512i Values2(const uint8_t* a) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(Load256(a + kQs)), Load256(a + kBytes + kQs),
                              1);
  }
  static __m512i Values1(const uint8_t* a) { return ZeroExtend(Load256(a + kQs)); }
};

// --- K-quants against Q8_K ---

constexpr size_t kQ8KBsumsOffset = offsetof(BlockQ8_K, bsums);
constexpr size_t kQ8KQsOffset = offsetof(BlockQ8_K, qs);
constexpr size_t kQ6KScaleOffset = offsetof(BlockQ6_K, d);

const BlockQ8_K& ActBlock(const uint8_t* x, size_t xs, int c, int64_t b) {
  return reinterpret_cast<const BlockQ8_K*>(x + c * xs)[b];
}

// The 6-bit scales and mins of a Q4_K/Q5_K super-block (12 bytes at p; 16 are read) as 16 bytes:
// scales 0-7 then mins 0-7. See UnpackScalesMinsK in quants_scalar.cc for the layout.
__m128i UnpackScalesMins(const uint8_t* p) {
  const __m128i raw = Load128(p);                     // dwords u0 u1 u2 (x)
  const __m128i lows = _mm_shuffle_epi32(raw, 0x98);  // u0 u2 u1 u2
  const __m128i tops = _mm_shuffle_epi32(raw, 0x40);  // -- u0 -- u1
  const __m128i low_bits =
      _mm_and_si128(_mm_srlv_epi32(lows, _mm_setr_epi32(0, 0, 0, 4)),
                    _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  const __m128i high_bits =
      _mm_and_si128(_mm_srli_epi32(tops, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(low_bits, high_bits);
}

// Lane r of the result: the sum of v_r's 32-bit lanes. Unpacks and adds; hadd costs three
// operations on these cores.
__m128i SumLanesOf4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(v0, v1), _mm256_unpackhi_epi32(v0, v1));
  const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(v2, v3), _mm256_unpackhi_epi32(v2, v3));
  const __m256i u = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
  return _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}

// The same for zmm: the halves are added first (a 256-bit add is cheaper than 512-bit unpacks).
__m128i SumLanesOf4(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  const auto fold = [](__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  };
  return SumLanesOf4(fold(v0), fold(v1), fold(v2), fold(v3));
}

// quants.h's float step of Q4_K and Q5_K for up to four outputs in the lanes of an xmm.
__m128 Q4KEpilogue(__m128i isum, __m128i msum, __m128 d, __m128 dmin, __m128 ad, __m128 acc) {
  __m128 t = _mm_mul_ps(_mm_cvtepi32_ps(isum), d);
  t = _mm_fnmadd_ps(_mm_cvtepi32_ps(msum), dmin, t);
  return _mm_fmadd_ps(t, ad, acc);
}

template <bool kFifthBit>
struct KQuantKernel {
  static constexpr size_t kBytes = kFifthBit ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  static constexpr size_t kQsOffset = kFifthBit ? 48 : 16;
  static constexpr int kRows = 2;
  static constexpr int kCols = 4;
  static constexpr int kDecodeRows = 4;

  // Chunk g holds elements 64g .. 64g + 63: sub-block 2g in bytes 0-31 (low nibbles of
  // qs[32g ..]), sub-block 2g + 1 in bytes 32-63 (high nibbles).
  template <int g, int R, int C>
  static void Chunk(const uint8_t* const (&blk)[R], const __m512i (&table)[R],
                    const __m512i (&qh)[R], const uint8_t* x, size_t xs, int64_t b,
                    __m512i (&isum)[R][C]) {
    __m512i wq[R], sc[R];
    // int16 lanes 0-15 take scale 2g (byte 2g of the table), lanes 16-31 scale 2g + 1.
    const __m512i pick =
        _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(0x8000 | (2 * g))),
                           _mm256_set1_epi16(static_cast<int16_t>(0x8000 | (2 * g + 1))), 1);
    for (int r = 0; r < R; ++r) {
      const __m512i q = _mm512_broadcast_i64x4(Load256(blk[r] + kQsOffset + 32 * g));
      wq[r] = _mm512_and_si512(_mm512_srlv_epi64(q, _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4)),
                               _mm512_set1_epi8(0x0F));
      if constexpr (kFifthBit) {
        const __m512i bit =
            _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << (2 * g))),
                               _mm256_set1_epi8(static_cast<char>(1 << (2 * g + 1))), 1);
        wq[r] = _mm512_mask_add_epi8(wq[r], _mm512_test_epi8_mask(qh[r], bit), wq[r],
                                     _mm512_set1_epi8(16));
      }
      sc[r] = _mm512_shuffle_epi8(table[r], pick);
    }
    for (int c = 0; c < C; ++c) {
      const __m512i a =
          Load512(reinterpret_cast<const uint8_t*>(&ActBlock(x, xs, c, b)) + kQ8KQsOffset + 64 * g);
      for (int r = 0; r < R; ++r) {
        // maddubs: 31 * 127 * 2 fits int16; vpdpwssd scales the pairs and accumulates in int32.
        isum[r][c] = _mm512_dpwssd_epi32(isum[r][c], _mm512_maddubs_epi16(wq[r], a), sc[r]);
      }
    }
  }

  // Several activation rows (Q5_K's matrix products; one row goes through KQuantOneActivation):
  // the integer sums reduced per super-block, then quants.h's float step with the tile's
  // activation rows in the lanes of an xmm per weight row.
  template <int R, int C>
  static void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, float* y,
                   int64_t ys) {
    static_assert(C <= 4);
    __m128 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm_setzero_ps();
    // Pairs each bsum with its sub-block's min: int16 lanes m0 m0 m1 m1 ... m7 m7.
    const __m256i min_pairs = _mm256_setr_epi8(
        8, -128, 8, -128, 9, -128, 9, -128, 10, -128, 10, -128, 11, -128, 11, -128, 12, -128, 12,
        -128, 13, -128, 13, -128, 14, -128, 14, -128, 15, -128, 15, -128);
    for (int64_t b = 0; b < n / kQKK; ++b) {
      const uint8_t* blk[R];
      __m512i table[R], qh[R];
      __m256i mins[R];
      for (int r = 0; r < R; ++r) {
        blk[r] = w + r * ws + b * kBytes;
        PrefetchAhead<kBytes>(blk[r], R * ws);
        const __m128i unpacked = UnpackScalesMins(blk[r] + 4);
        table[r] = _mm512_broadcast_i32x4(unpacked);
        mins[r] = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(unpacked), min_pairs);
        if constexpr (kFifthBit) qh[r] = _mm512_broadcast_i64x4(Load256(blk[r] + 16));
      }
      __m512i isum[R][C];
      for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) isum[r][c] = _mm512_setzero_si512();
      }
      Chunk<0, R, C>(blk, table, qh, x, xs, b, isum);
      Chunk<1, R, C>(blk, table, qh, x, xs, b, isum);
      Chunk<2, R, C>(blk, table, qh, x, xs, b, isum);
      Chunk<3, R, C>(blk, table, qh, x, xs, b, isum);
      __m256i bsums[4];
      float ad[4] = {};
      for (int c = 0; c < 4; ++c) {
        bsums[c] = _mm256_setzero_si256();
        if (c < C) {
          const BlockQ8_K& act = ActBlock(x, xs, c, b);
          bsums[c] = Load256(reinterpret_cast<const uint8_t*>(&act) + kQ8KBsumsOffset);
          ad[c] = act.d;
        }
      }
      const __m128 adv = _mm_setr_ps(ad[0], ad[1], ad[2], ad[3]);
      for (int r = 0; r < R; ++r) {
        __m512i is[4];
        for (int c = 0; c < 4; ++c) is[c] = c < C ? isum[r][c] : _mm512_setzero_si512();
        const __m128i is4 = SumLanesOf4(is[0], is[1], is[2], is[3]);
        const __m128i ms4 =
            SumLanesOf4(_mm256_madd_epi16(bsums[0], mins[r]), _mm256_madd_epi16(bsums[1], mins[r]),
                        _mm256_madd_epi16(bsums[2], mins[r]), _mm256_madd_epi16(bsums[3], mins[r]));
        acc[r] = Q4KEpilogue(is4, ms4, _mm_set1_ps(HalfAt(blk[r])), _mm_set1_ps(HalfAt(blk[r] + 2)),
                             adv, acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      alignas(16) float out[4];
      _mm_store_ps(out, acc[r]);
      for (int c = 0; c < C; ++c) y[c * ys + r] = out[c];
    }
  }
};

// --- Q4_K against Q8_K: matrix products with activation rows in lanes ---
//
// Numerics, the contract of VecDot and MatMulRows for Q4_K under this ISA: per super-block the
// integer sums isum = sum_j sc_j * (q_j . a_j) and msum = sum_j m_j * (bsums of sub-block j) are
// exact, then
//   t = float(isum) * d;  t = t - float(msum) * dmin (fused);  acc = acc + t * ad (fused)
// in super-block order from acc = 0, and the result is acc. Only integers are summed in an order
// that depends on the kernel, so every tiling, batch size and lane arrangement below gives the
// same float for the same pair of rows.
//
// With several activation rows, vpdpbusd runs with activation rows in lanes: a group of Cg rows
// shares each zmm, every lane set of P = 16 / Cg lanes holds one row's consecutive groups of four
// quants, and the weight row's matching bytes are broadcast to every lane set. A sub-block's
// 8 / P steps accumulate unscaled, so its scale costs one vpmulld per 32 elements instead of a
// vpmaddubsw + vpdpwssd pair per 64 (the K-quant kernel above).

// One activation row (decode and VecDot) of Q4_K or Q5_K (kFifthBit), R = 4 or 1 weight rows: the
// integer work of KQuantKernel (vpmaddubsw + vpdpwssd, lanes are elements), reduced per
// super-block.
template <bool kFifthBit, int R>
void KQuantOneActivation(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, float* y) {
  using K = KQuantKernel<kFifthBit>;
  const __m256i min_pairs = _mm256_setr_epi8(
      8, -128, 8, -128, 9, -128, 9, -128, 10, -128, 10, -128, 11, -128, 11, -128, 12, -128, 12,
      -128, 13, -128, 13, -128, 14, -128, 14, -128, 15, -128, 15, -128);
  __m128 acc = _mm_setzero_ps();
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const uint8_t* blk[R];
    __m512i table[R], qh[R];
    __m256i mins[R];
    float d[4] = {}, dmin[4] = {};  // set lane by lane below: no vector load of scalar stores
    for (int r = 0; r < R; ++r) {
      blk[r] = w + r * ws + b * K::kBytes;
      PrefetchAhead<K::kBytes>(blk[r], R * ws);
      const __m128i unpacked = UnpackScalesMins(blk[r] + 4);
      table[r] = _mm512_broadcast_i32x4(unpacked);
      mins[r] = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(unpacked), min_pairs);
      qh[r] = kFifthBit ? _mm512_broadcast_i64x4(Load256(blk[r] + 16)) : _mm512_setzero_si512();
      d[r] = HalfAt(blk[r]);
      dmin[r] = HalfAt(blk[r] + 2);
    }
    __m512i isum[R][1];
    for (int r = 0; r < R; ++r) isum[r][0] = _mm512_setzero_si512();
    K::template Chunk<0, R, 1>(blk, table, qh, x, 0, b, isum);
    K::template Chunk<1, R, 1>(blk, table, qh, x, 0, b, isum);
    K::template Chunk<2, R, 1>(blk, table, qh, x, 0, b, isum);
    K::template Chunk<3, R, 1>(blk, table, qh, x, 0, b, isum);
    const BlockQ8_K& act = ActBlock(x, 0, 0, b);
    const __m256i bsums = Load256(reinterpret_cast<const uint8_t*>(&act) + kQ8KBsumsOffset);
    __m128i is, ms;
    if constexpr (R == 4) {
      is = SumLanesOf4(isum[0][0], isum[1][0], isum[2][0], isum[3][0]);
      ms = SumLanesOf4(_mm256_madd_epi16(bsums, mins[0]), _mm256_madd_epi16(bsums, mins[1]),
                       _mm256_madd_epi16(bsums, mins[2]), _mm256_madd_epi16(bsums, mins[3]));
    } else {
      is = _mm_cvtsi32_si128(_mm512_reduce_add_epi32(isum[0][0]));
      ms = _mm_cvtsi32_si128(
          _mm512_reduce_add_epi32(ZeroExtend(_mm256_madd_epi16(bsums, mins[0]))));
    }
    acc = Q4KEpilogue(is, ms, _mm_setr_ps(d[0], d[1], d[2], d[3]), _mm_setr_ps(dmin[0], dmin[1], dmin[2], dmin[3]),
                      _mm_set1_ps(act.d), acc);
  }
  alignas(16) float out[4];
  _mm_store_ps(out, acc);
  for (int r = 0; r < R; ++r) y[r] = out[r];
}

// Q6_K decoding and its element-lane integer step, used by Q6KOneActivation (decode and VecDot)
// and Q6KGrouped (the lane-grouped products).
struct Q6KKernel {
  // Chunk k (0-3) holds elements 64k .. 64k + 63 (groups of 16: 4k .. 4k + 3) as bytes 0..63.
  template <int k, int R, int C>
  static void Chunk(const __m512i (&q)[R], const __m256i (&scales)[R], const uint8_t* x, size_t xs,
                    int64_t b, __m512i (&isum)[R][C]) {
    // int16 lanes 8j .. 8j + 7 take the scale of group 4k + j.
    const __m256i pick = _mm256_setr_epi8(
        4 * k, 4 * k, 4 * k, 4 * k, 4 * k, 4 * k, 4 * k, 4 * k, 4 * k + 1, 4 * k + 1, 4 * k + 1,
        4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 2, 4 * k + 2, 4 * k + 2,
        4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 3, 4 * k + 3, 4 * k + 3,
        4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3);
    __m512i sc[R];
    for (int r = 0; r < R; ++r) sc[r] = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(scales[r], pick));
    for (int c = 0; c < C; ++c) {
      const __m512i a =
          Load512(reinterpret_cast<const uint8_t*>(&ActBlock(x, xs, c, b)) + kQ8KQsOffset + 64 * k);
      for (int r = 0; r < R; ++r) {
        // 63 * 127 * 2 fits int16.
        isum[r][c] = _mm512_dpwssd_epi32(isum[r][c], _mm512_maddubs_epi16(q[r], a), sc[r]);
      }
    }
  }

  // The two 64-element chunks of half h of a Q6_K super-block, as bytes 0..63.
  static void DecodeHalf(const BlockQ6_K& blk, int h, __m512i* first, __m512i* second) {
    const __m512i l = Load512(blk.ql + 64 * h);
    const __m512i hi = _mm512_broadcast_i64x4(Load256(blk.qh + 32 * h));
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i bits45 = _mm512_set1_epi8(0x30);
    // Elements 0-31 of the half take qh bits 0-1, 32-63 bits 2-3, 64-95 bits 4-5, 96-127 bits 6-7,
    // each moved to bits 4-5 (the shifts never carry a kept bit across a byte).
    const __m512i high_first =
        _mm512_and_si512(_mm512_sllv_epi64(hi, _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2)), bits45);
    const __m512i high_second =
        _mm512_and_si512(_mm512_srlv_epi64(hi, _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2)), bits45);
    *first = _mm512_or_si512(_mm512_and_si512(l, low4), high_first);
    *second = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4), high_second);
  }
};

// --- K-quants against Q8_K with activation rows in lanes (several activation rows) ---

// Super-blocks of the shared dimension interleaved at a time (bounds the stack buffer).
constexpr int kKPieceBlocks = 16;

// The driver of a lane-grouped product S for cv activation rows from x against weight rows
// [row_begin, row_end): pieces of S::kPieceBlocks blocks of the shared dimension are interleaved
// into a stack buffer (S::Interleave), then every weight row of the range runs over the piece in
// tiles of S::kRows (S::Tile continues the accumulators it left in y after the first piece).
template <class S>
void RunGroupedPieces(int64_t n, const uint8_t* w, size_t ws, int64_t row_begin, int64_t row_end,
                      const uint8_t* x, size_t xs, int cv, float* y, int64_t ys) {
  alignas(64) uint8_t act[S::kPieceBlocks * S::kBlockBytes];
  const int64_t nb = n / S::kBlockElems;
  for (int64_t b0 = 0; b0 < nb; b0 += S::kPieceBlocks) {
    const int pb = static_cast<int>(nb - b0 < S::kPieceBlocks ? nb - b0 : S::kPieceBlocks);
    S::Interleave(x, xs, cv, b0, pb, act);
    int64_t r = row_begin;
    for (; r + S::kRows <= row_end; r += S::kRows) {
      S::template Tile<S::kRows>(w + r * ws, ws, act, b0, pb, cv, y + r, ys);
    }
    for (; r < row_end; ++r) S::template Tile<1>(w + r * ws, ws, act, b0, pb, cv, y + r, ys);
  }
}

// A tile's accumulators, R weight rows with activation row c in lane c * P: from zero on the
// first piece of the shared dimension (b0 == 0), else continued from what the last piece left in y.
template <int P, int R>
void LoadTileAccumulators(__m512 (&acc)[R], const float* y, int64_t ys, int cv, int64_t b0) {
  for (int r = 0; r < R; ++r) {
    alignas(64) float lanes[16] = {};
    if (b0 > 0) {
      for (int c = 0; c < cv; ++c) lanes[c * P] = y[c * ys + r];
    }
    acc[r] = _mm512_load_ps(lanes);
  }
}

template <int P, int R>
void StoreTileAccumulators(const __m512 (&acc)[R], float* y, int64_t ys, int cv) {
  for (int r = 0; r < R; ++r) {
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[r]);
    for (int c = 0; c < cv; ++c) y[c * ys + r] = lanes[c * P];
  }
}

// Lane sets of P lanes (P = 16 / rows per zmm): the 4 * P bytes at p repeated in every set, and
// each set's lanes added into its first lane.
template <int P>
__m512i BroadcastToLaneSets(const uint8_t* p) {
  if constexpr (P == 1) {
    return _mm512_set1_epi32(static_cast<int>(U32At(p)));
  } else if constexpr (P == 2) {
    uint64_t q;  // a 64-bit broadcast straight from memory (vbroadcasti32x2 needs a shuffle)
    std::memcpy(&q, p, sizeof q);
    return _mm512_set1_epi64(static_cast<long long>(q));
  } else if constexpr (P == 4) {
    return _mm512_broadcast_i32x4(Load128(p));
  } else {
    static_assert(P == 8, "lane sets of 1, 2, 4 or 8 lanes");
    return _mm512_broadcast_i32x8(Load256(p));
  }
}

template <int P>
__m512i AddLaneSets(__m512i v) {
  if constexpr (P >= 2) v = _mm512_add_epi32(v, _mm512_shuffle_epi32(v, _MM_PERM_CDAB));
  if constexpr (P >= 4) v = _mm512_add_epi32(v, _mm512_shuffle_epi32(v, _MM_PERM_BADC));
  if constexpr (P >= 8) v = _mm512_add_epi32(v, _mm512_shuffle_i32x4(v, v, _MM_PERM_CDAB));
  return v;
}

// A group of Cg activation rows of Q8_K, interleaved per super-block: the quants in kSteps zmm
// (lane l: row l / P, quants 4 * (P * step + l % P) .. + 3), a zmm of d (lane c * P), and the
// row's sums of 16 and of 32 quants as int16 spread over the row's P lanes, two to a lane (sum j
// of row c: vector j / (2P), lane c * P + (j % (2P)) / 2, half j % 2), so that one vpdpwssd
// against a broadcast of 2P int16 multipliers serves every row.
template <int Cg>
struct Q8KGroup {
  static constexpr int P = 16 / Cg;  // lanes per activation row
  static constexpr int kSteps = 64 / P;
  static constexpr size_t kQs = 64 * kSteps;
  static constexpr size_t kD = kQs;
  static constexpr int kSum16Vecs = 8 / P;
  static constexpr size_t kSum16 = kD + 64;
  static constexpr int kSum32Vecs = P >= 4 ? 1 : 4 / P;
  static constexpr size_t kSum32 = kSum16 + 64 * kSum16Vecs;
  static constexpr size_t kBlockBytes = kSum32 + 64 * kSum32Vecs;

  // Activation rows x .. x + (cv - 1) * xs (cv <= Cg; the rest of the group is zero), super-blocks
  // b0 .. b0 + nb - 1, into out.
  static void Interleave(const uint8_t* x, size_t xs, int cv, int64_t b0, int nb, uint8_t* out) {
    std::memset(out, 0, kBlockBytes * static_cast<size_t>(nb));
    for (int bi = 0; bi < nb; ++bi) {
      uint8_t* o = out + kBlockBytes * static_cast<size_t>(bi);
      for (int c = 0; c < cv; ++c) {
        const BlockQ8_K& a = ActBlock(x, xs, c, b0 + bi);
        for (int st = 0; st < kSteps; ++st) {
          std::memcpy(o + 64 * st + 4 * P * c, a.qs + 4 * P * st, 4 * P);
        }
        std::memcpy(o + kD + 4 * P * c, &a.d, sizeof(float));
        for (int j = 0; j < 16; ++j) {
          std::memcpy(o + kSum16 + SpreadOffset(c, j), &a.bsums[j], 2);
        }
        for (int j = 0; j < 8; ++j) {
          // |bsum| <= 16 * 127, so a sum of two fits int16.
          const auto s32 = static_cast<int16_t>(a.bsums[2 * j] + a.bsums[2 * j + 1]);
          std::memcpy(o + kSum32 + SpreadOffset(c, j), &s32, 2);
        }
      }
    }
  }

  // Where int16 j of row c goes in a spread section.
  static constexpr size_t SpreadOffset(int c, int j) {
    return static_cast<size_t>(64 * (j / (2 * P)) + 4 * P * c + 2 * (j % (2 * P)));
  }

  // A spread section of kVecs zmm at o against 2P * kVecs int16 multipliers m (every row against
  // the same m); lane c * P + k keeps a part of row c's sum, for AddLaneSets.
  template <int kVecs>
  static __m512i SpreadDot(const uint8_t* o, const int16_t* m) {
    __m512i s = _mm512_setzero_si512();
    for (int v = 0; v < kVecs; ++v) {
      s = _mm512_dpwssd_epi32(s, Load512(o + 64 * v),
                              BroadcastToLaneSets<P>(reinterpret_cast<const uint8_t*>(m) + 4 * P * v));
    }
    return s;
  }
};

// What the lane-grouped K-quant products share (Product: Q6KGrouped or Q4KGrouped): the Q8_K
// activation group of Cg rows, its pieces of the shared dimension and the driver.
template <class Product, int Cg>
struct Q8KGroupedProduct {
  using G = Q8KGroup<Cg>;
  static constexpr int P = G::P;
  static constexpr int kPieceBlocks = kKPieceBlocks;
  static constexpr int kBlockElems = kQKK;
  static constexpr size_t kBlockBytes = G::kBlockBytes;
  static void Interleave(const uint8_t* x, size_t xs, int cv, int64_t b0, int nb, uint8_t* out) {
    G::Interleave(x, xs, cv, b0, nb, out);
  }
  static void Run(int64_t n, const uint8_t* w, size_t ws, int64_t row_begin, int64_t row_end,
                  const uint8_t* x, size_t xs, int cv, float* y, int64_t ys) {
    RunGroupedPieces<Product>(n, w, ws, row_begin, row_end, x, xs, cv, y, ys);
  }
};

// Q6_K against a lane-grouped Q8_K group: each row's super-block decoded to 256 unsigned bytes
// (Q6KKernel::DecodeHalf) on the stack, then broadcast a step at a time. Numerics as in
// Q6KOneActivation: isum = sum_j sc_j * (q_j . a_j) - 32 * sum_j sc_j * bsum_j, exact; then
// acc = acc + float(isum) * (d * ad) (fused), per super-block from acc = 0.
template <int Cg>
struct Q6KGrouped : Q8KGroupedProduct<Q6KGrouped<Cg>, Cg> {
  using Base = Q8KGroupedProduct<Q6KGrouped<Cg>, Cg>;
  using typename Base::G;
  using Base::P;
  static constexpr int kStepsPerSub = 16 / (4 * P);
  static_assert(kStepsPerSub >= 1, "a step may not span two scaled sub-blocks");
  static constexpr int kRows = 8;
  static constexpr size_t kBytes = sizeof(BlockQ6_K);

  template <int R>
  static void Tile(const uint8_t* w, size_t ws, const uint8_t* act, int64_t b0, int nb, int cv,
                   float* y, int64_t ys) {
    __m512 acc[R];
    LoadTileAccumulators<P>(acc, y, ys, cv, b0);
    for (int bi = 0; bi < nb; ++bi) {
      const uint8_t* o = act + G::kBlockBytes * static_cast<size_t>(bi);
      alignas(64) uint8_t wu[R][kQKK];
      alignas(64) int32_t sc32[R][16];  // scale j as int32; also (scale, 0) as int16 after masking
      alignas(64) int16_t sc16[R][16];
      float d[R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * ws + (b0 + bi) * kBytes;
        PrefetchAhead<kBytes>(blk, R * ws);
        const auto& b = *reinterpret_cast<const BlockQ6_K*>(blk);
        const __m128i s8 = Load128(b.scales);
        _mm512_store_si512(sc32[r], _mm512_cvtepi8_epi32(s8));
        _mm256_store_si256(reinterpret_cast<__m256i*>(sc16[r]), _mm256_cvtepi8_epi16(s8));
        d[r] = HalfAt(blk + kQ6KScaleOffset);
        for (int h = 0; h < 2; ++h) {
          __m512i first, second;
          Q6KKernel::DecodeHalf(b, h, &first, &second);
          _mm512_store_si512(wu[r] + 128 * h, first);
          _mm512_store_si512(wu[r] + 128 * h + 64, second);
        }
      }
      __m512i isum[R];
      for (int r = 0; r < R; ++r) isum[r] = _mm512_setzero_si512();
      for (int j = 0; j < 16; ++j) {
        __m512i part[R];
        for (int r = 0; r < R; ++r) part[r] = _mm512_setzero_si512();
        for (int t = 0; t < kStepsPerSub; ++t) {
          const int st = j * kStepsPerSub + t;
          const __m512i a = Load512(o + 64 * st);
          for (int r = 0; r < R; ++r) {
            part[r] = _mm512_dpbusd_epi32(part[r], BroadcastToLaneSets<P>(wu[r] + 4 * P * st), a);
          }
        }
        for (int r = 0; r < R; ++r) {
          if constexpr (kStepsPerSub == 1) {
            // One step's sum fits int16 (4 * 63 * 127 = 32,004): vpdpwssd with (scale, 0).
            isum[r] = _mm512_dpwssd_epi32(
                isum[r], part[r], _mm512_set1_epi32(sc32[r][j] & 0xFFFF));
          } else {
            isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(part[r], _mm512_set1_epi32(sc32[r][j])));
          }
        }
      }
      const __m512 ad = _mm512_loadu_ps(o + G::kD);
      for (int r = 0; r < R; ++r) {
        const __m512i msum = G::template SpreadDot<G::kSum16Vecs>(o + G::kSum16, sc16[r]);
        const __m512i total = AddLaneSets<P>(_mm512_sub_epi32(isum[r], _mm512_slli_epi32(msum, 5)));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_mul_ps(_mm512_set1_ps(d[r]), ad), acc[r]);
      }
    }
    StoreTileAccumulators<P>(acc, y, ys, cv);
  }
};

// Q4_K against a lane-grouped Q8_K group straight from the packed nibbles, with no unpacked copy
// of the weights going through memory: one broadcast of 4P packed bytes gives a step of a low
// sub-block (vpand 0x0F) and the same step of the high sub-block beside it (vpand 0xF0: sixteen
// times the quants, still an unsigned byte; the sub-block's sum is shifted back by 4 before its
// scale, exact because every product is a multiple of 16). The integer sums per super-block are
// those of KQuantOneActivation, and so is the float epilogue.
template <int Cg>
struct Q4KGrouped : Q8KGroupedProduct<Q4KGrouped<Cg>, Cg> {
  using Base = Q8KGroupedProduct<Q4KGrouped<Cg>, Cg>;
  using typename Base::G;
  using Base::P;
  static constexpr int kE = 4 * P;    // elements of a weight row per step
  static constexpr int kS = 32 / kE;  // steps per 32-element sub-block
  static constexpr int kRows = 4;
  static constexpr size_t kBytes = sizeof(BlockQ4_K);

  template <int R>
  static void Tile(const uint8_t* w, size_t ws, const uint8_t* act, int64_t b0, int nb, int cv,
                   float* y, int64_t ys) {
    __m512 acc[R];
    LoadTileAccumulators<P>(acc, y, ys, cv, b0);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i high4 = _mm512_set1_epi8(static_cast<char>(0xF0));
    for (int bi = 0; bi < nb; ++bi) {
      const uint8_t* o = act + G::kBlockBytes * static_cast<size_t>(bi);
      const uint8_t* blk[R];
      alignas(64) int32_t sc[R][16];    // scales 0-7 as (scale, 0) int16 pairs, then mins 0-7
      alignas(64) int16_t mins[R][16];  // mins 0-7 as int16, zero above
      for (int r = 0; r < R; ++r) {
        blk[r] = w + r * ws + (b0 + bi) * kBytes;
        PrefetchAhead<kBytes>(blk[r], R * ws);
        const __m128i table = UnpackScalesMins(blk[r] + 4);
        _mm512_store_si512(sc[r], _mm512_cvtepu8_epi32(table));
        _mm256_store_si256(reinterpret_cast<__m256i*>(mins[r]), _mm256_cvtepu8_epi16(_mm_srli_si128(table, 8)));
      }
      __m512i isum[R];
      for (int r = 0; r < R; ++r) isum[r] = _mm512_setzero_si512();
      // Steps are summed in runs of at most kInt16Steps, whose sums fit int16 in the low half
      // of each lane (4 * 4 * 15 * 127 = 30,480): vpdpwssd with (scale, 0) then scales and adds.
      constexpr int kRun = kS < 4 ? kS : 4;
      for (int g = 0; g < 4; ++g) {
        for (int t0 = 0; t0 < kS; t0 += kRun) {
          __m512i lo[R], hi[R];
          for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_si512();
          for (int t = t0; t < t0 + kRun; ++t) {
            const __m512i a_lo = Load512(o + 64 * ((2 * g) * kS + t));
            const __m512i a_hi = Load512(o + 64 * ((2 * g + 1) * kS + t));
            for (int r = 0; r < R; ++r) {
              const __m512i q = BroadcastToLaneSets<P>(blk[r] + 16 + 32 * g + kE * t);
              lo[r] = _mm512_dpbusd_epi32(lo[r], _mm512_and_si512(q, low4), a_lo);
              hi[r] = _mm512_dpbusd_epi32(hi[r], _mm512_and_si512(q, high4), a_hi);
            }
          }
          for (int r = 0; r < R; ++r) {
            isum[r] = _mm512_dpwssd_epi32(isum[r], lo[r], _mm512_set1_epi32(sc[r][2 * g]));
            isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_srai_epi32(hi[r], 4),
                                          _mm512_set1_epi32(sc[r][2 * g + 1]));
          }
        }
      }
      const __m512 ad = _mm512_loadu_ps(o + G::kD);
      for (int r = 0; r < R; ++r) {
        const __m512i msum = AddLaneSets<P>(G::template SpreadDot<G::kSum32Vecs>(o + G::kSum32, mins[r]));
        const __m512 d = _mm512_set1_ps(HalfAt(blk[r]));
        const __m512 dmin = _mm512_set1_ps(HalfAt(blk[r] + 2));
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(AddLaneSets<P>(isum[r])), d);
        v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), dmin, v);
        acc[r] = _mm512_fmadd_ps(v, ad, acc[r]);
      }
    }
    StoreTileAccumulators<P>(acc, y, ys, cv);
  }
};

// Several activation rows through a lane-grouped product G<Cg> (G<Cg>::Run for cv <= Cg rows):
// groups of 16, the rest in the smallest group that holds it, of kMinGroup rows at least (a
// K-quant step may not span two scaled sub-blocks).
template <template <int> class G, int kMinGroup>
void GroupedMatMul(int64_t n, const uint8_t* w, size_t ws, int64_t row_begin, int64_t row_end,
                   const uint8_t* x, size_t xs, int64_t m, float* y, int64_t ys) {
  for (int64_t c = 0; c < m;) {
    const int64_t left = m - c;
    const int cv = static_cast<int>(left < 16 ? left : 16);
    const uint8_t* xc = x + c * xs;
    float* yc = y + c * ys;
    if (cv > 8) {
      G<16>::Run(n, w, ws, row_begin, row_end, xc, xs, cv, yc, ys);
    } else if (cv > 4) {
      G<8>::Run(n, w, ws, row_begin, row_end, xc, xs, cv, yc, ys);
    } else if constexpr (kMinGroup > 2) {
      G<4>::Run(n, w, ws, row_begin, row_end, xc, xs, cv, yc, ys);
    } else if (cv > 2) {
      G<4>::Run(n, w, ws, row_begin, row_end, xc, xs, cv, yc, ys);
    } else {
      G<2>::Run(n, w, ws, row_begin, row_end, xc, xs, cv, yc, ys);
    }
    c += cv;
  }
}

// One activation row for Q6_K (decode and VecDot), R = 4 or 1 weight rows: Q6KKernel's integer
// work (lanes are elements), reduced per super-block, then the float step of Q6KGrouped.
template <int R>
void Q6KOneActivation(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, float* y) {
  __m128 acc = _mm_setzero_ps();
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const BlockQ6_K* blk[R];
    __m256i scales[R], scales32[R];
    float d[4] = {};
    for (int r = 0; r < R; ++r) {
      blk[r] = reinterpret_cast<const BlockQ6_K*>(w + r * ws) + b;
      PrefetchAhead<sizeof(BlockQ6_K)>(reinterpret_cast<const uint8_t*>(blk[r]), R * ws);
      const __m128i s8 = Load128(blk[r]->scales);
      scales[r] = _mm256_broadcastsi128_si256(s8);
      scales32[r] = _mm256_slli_epi16(_mm256_cvtepi8_epi16(s8), 5);
      d[r] = HalfAt(reinterpret_cast<const uint8_t*>(blk[r]) + kQ6KScaleOffset);
    }
    const BlockQ8_K& act = ActBlock(x, 0, 0, b);
    const __m256i bsums = Load256(reinterpret_cast<const uint8_t*>(&act) + kQ8KBsumsOffset);
    __m512i isum[R][1];
    for (int r = 0; r < R; ++r) {
      isum[r][0] = ZeroExtend(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(bsums, scales32[r])));
    }
    __m512i q0[R], q1[R];
    for (int r = 0; r < R; ++r) Q6KKernel::DecodeHalf(*blk[r], 0, &q0[r], &q1[r]);
    Q6KKernel::Chunk<0, R, 1>(q0, scales, x, 0, b, isum);
    Q6KKernel::Chunk<1, R, 1>(q1, scales, x, 0, b, isum);
    for (int r = 0; r < R; ++r) Q6KKernel::DecodeHalf(*blk[r], 1, &q0[r], &q1[r]);
    Q6KKernel::Chunk<2, R, 1>(q0, scales, x, 0, b, isum);
    Q6KKernel::Chunk<3, R, 1>(q1, scales, x, 0, b, isum);
    __m128i is;
    if constexpr (R == 4) {
      is = SumLanesOf4(isum[0][0], isum[1][0], isum[2][0], isum[3][0]);
    } else {
      is = _mm_cvtsi32_si128(_mm512_reduce_add_epi32(isum[0][0]));
    }
    acc = _mm_fmadd_ps(_mm_cvtepi32_ps(is), _mm_mul_ps(_mm_setr_ps(d[0], d[1], d[2], d[3]), _mm_set1_ps(act.d)), acc);
  }
  alignas(16) float out[4];
  _mm_store_ps(out, acc);
  for (int r = 0; r < R; ++r) y[r] = out[r];
}

// --- 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against Q8_0 / Q8_1 ---
//
// The float step is quants.h's, block by block; several activation rows run in lanes as for the
// K-quants. Weights are fed to vpdpbusd as unsigned bytes shifted up by W::kOffset (+8, +16, +128
// for the signed types), and the kOffset * sum(a) this adds is taken out per block and row.

// Four rows' sums of lanes 0-7 (block b) in lanes 0-3 and of lanes 8-15 (block b + 1) in lanes
// 8-11: unpacks and adds (hadd costs three operations on these cores).
__m512i SumBlockPairsOf4(__m512i p0, __m512i p1, __m512i p2, __m512i p3) {
  // Per 128-bit lane: [p0 0+2, p1 0+2, p0 1+3, p1 1+3], and the same for p2, p3.
  const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(p0, p1), _mm512_unpackhi_epi32(p0, p1));
  const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(p2, p3), _mm512_unpackhi_epi32(p2, p3));
  // Per 128-bit lane: the four rows' sums of that lane's four dwords.
  const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
  return _mm512_add_epi32(u, _mm512_shuffle_i32x4(u, u, _MM_SHUFFLE(2, 3, 0, 1)));
}

// The fp16 field at byte `field` of blocks b (lanes 0-3) and b + 1 (lanes 4-7) of four weight
// rows (blk[o..o+3]), or of one row (lanes 0 and 4). `next` is 0 for an unpaired last block,
// whose value then multiplies a zero sum.
template <int R>
__m256 BlockFieldPairs(const uint8_t* const (&blk)[R], int o, size_t field, size_t next) {
  if constexpr (R == 1) {
    __m128i h = _mm_cvtsi32_si128(HalfBitsAt(blk[0] + field));
    if (next != 0) h = _mm_insert_epi16(h, HalfBitsAt(blk[0] + next + field), 4);
    return _mm256_cvtph_ps(h);
  } else {
    const auto half = [&](int r, size_t off) {
      return static_cast<short>(HalfBitsAt(blk[o + r] + off + field));
    };
    return _mm256_cvtph_ps(_mm_setr_epi16(half(0, 0), half(1, 0), half(2, 0), half(3, 0),
                                          half(0, next), half(1, next), half(2, next),
                                          half(3, next)));
  }
}

// One activation row, R = 8 or 1 weight rows; blocks b and b + 1 share a zmm. Eight rows share
// each activation pair's loads and offset sum.
template <class W, class A, int R>
void Q32OneActivation(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, float* y) {
  constexpr int kQuads = R == 8 ? 2 : 1;
  __m128 acc[kQuads];
  for (int q = 0; q < kQuads; ++q) acc[q] = _mm_setzero_ps();
  const int64_t nb = n / kQK;
  for (int64_t b = 0; b < nb; b += 2) {
    const bool pair = b + 1 < nb;
    const uint8_t* ablk = x + b * A::kBytes;
    const __m512i a = pair ? A::Values2(ablk) : A::Values1(ablk);
    __m512i start = _mm512_setzero_si512();
    if constexpr (W::kOffset != 0) {
      start = _mm512_sub_epi32(
          start, _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                     _mm512_set1_epi8(static_cast<char>(W::kOffset)), a));
    }
    const __m128 da0 = _mm_set1_ps(HalfAt(ablk));
    const __m128 da1 = _mm_set1_ps(pair ? HalfAt(ablk + A::kBytes) : 0.0f);
    __m128 sa0 = _mm_setzero_ps(), sa1 = _mm_setzero_ps();
    if constexpr (W::kHasMin) {
      sa0 = _mm_set1_ps(HalfAt(ablk + 2));
      if (pair) sa1 = _mm_set1_ps(HalfAt(ablk + A::kBytes + 2));
    }
    __m512i p[R];
    const uint8_t* blk[R];
    for (int r = 0; r < R; ++r) {
      blk[r] = w + r * ws + b * W::kBytes;
      PrefetchAhead<2 * W::kBytes>(blk[r], R * ws);
      p[r] = _mm512_dpbusd_epi32(start, pair ? W::Values2(blk[r]) : W::Values1(blk[r]), a);
    }
    const size_t next = pair ? W::kBytes : 0;
    for (int q = 0; q < kQuads; ++q) {
      __m128i lo, hi;
      if constexpr (R == 1) {
        lo = _mm_cvtsi32_si128(_mm512_mask_reduce_add_epi32(0x00FF, p[0]));
        hi = _mm_cvtsi32_si128(_mm512_mask_reduce_add_epi32(0xFF00, p[0]));
      } else {
        const int o = 4 * q;
        const __m512i sums = SumBlockPairsOf4(p[o], p[o + 1], p[o + 2], p[o + 3]);
        lo = _mm512_castsi512_si128(sums);
        hi = _mm512_extracti32x4_epi32(sums, 2);
      }
      // The rows' scales (and mins): lanes 0-3 block b, 4-7 block b + 1.
      const __m256 dw = BlockFieldPairs<R>(blk, 4 * q, 0, next);
      __m256 mw = _mm256_setzero_ps();
      if constexpr (W::kHasMin) mw = BlockFieldPairs<R>(blk, 4 * q, 2, next);
      acc[q] = _mm_fmadd_ps(_mm_cvtepi32_ps(lo), _mm_mul_ps(_mm256_castps256_ps128(dw), da0), acc[q]);
      if constexpr (W::kHasMin) acc[q] = _mm_fmadd_ps(_mm256_castps256_ps128(mw), sa0, acc[q]);
      if (pair) {
        acc[q] = _mm_fmadd_ps(_mm_cvtepi32_ps(hi), _mm_mul_ps(_mm256_extractf128_ps(dw, 1), da1), acc[q]);
        if constexpr (W::kHasMin) acc[q] = _mm_fmadd_ps(_mm256_extractf128_ps(mw, 1), sa1, acc[q]);
      }
    }
  }
  for (int q = 0; q < kQuads; ++q) {
    alignas(16) float out[4];
    _mm_store_ps(out, acc[q]);
    for (int r = 0; r < (R < 4 ? R : 4); ++r) y[4 * q + r] = out[r];
  }
}

// Cg activation rows interleaved per block: the quants in kSteps zmm (lane l: row l / P, quants
// 4 * (P * step + l % P) .. + 3), then kOffset * sum(quants) (int32), d and, for Q8_1, s (floats)
// in lane c * P.
template <class W, class A, int Cg>
struct Q32Grouped {
  static constexpr int P = 16 / Cg;
  static constexpr int kSteps = 8 / P;
  static constexpr size_t kQs = 64 * kSteps;
  static constexpr size_t kCorrection = kQs;
  static constexpr size_t kD = kQs + 64;
  static constexpr size_t kS = kQs + 128;
  static constexpr size_t kBlockBytes = kQs + (W::kHasMin ? 192 : 128);
  static constexpr int kRows = 8;

  static void Interleave(const uint8_t* x, size_t xs, int cv, int64_t b0, int nb, uint8_t* out) {
    std::memset(out, 0, kBlockBytes * static_cast<size_t>(nb));
    for (int bi = 0; bi < nb; ++bi) {
      uint8_t* o = out + kBlockBytes * static_cast<size_t>(bi);
      for (int c = 0; c < cv; ++c) {
        const uint8_t* a = x + c * xs + (b0 + bi) * A::kBytes;
        const auto* qs = reinterpret_cast<const int8_t*>(a + A::kQs);
        for (int st = 0; st < kSteps; ++st) std::memcpy(o + 64 * st + 4 * P * c, qs + 4 * P * st, 4 * P);
        int32_t sum = 0;
        for (int i = 0; i < kQK; ++i) sum += qs[i];
        const int32_t correction = W::kOffset * sum;
        const float d = HalfAt(a);
        std::memcpy(o + kCorrection + 4 * P * c, &correction, 4);
        std::memcpy(o + kD + 4 * P * c, &d, 4);
        if constexpr (W::kHasMin) {
          const float sa = HalfAt(a + 2);
          std::memcpy(o + kS + 4 * P * c, &sa, 4);
        }
      }
    }
  }

  template <int R>
  static void Tile(const uint8_t* w, size_t ws, const uint8_t* act, int64_t b0, int nb, int cv,
                   float* y, int64_t ys) {
    __m512 acc[R];
    LoadTileAccumulators<P>(acc, y, ys, cv, b0);
    for (int bi = 0; bi < nb; ++bi) {
      const uint8_t* o = act + kBlockBytes * static_cast<size_t>(bi);
      alignas(32) uint8_t wu[R][kQK];
      float dw[R], mw[R];
      __m512i part[R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * ws + (b0 + bi) * W::kBytes;
        PrefetchAhead<W::kBytes>(blk, R * ws);
        _mm256_store_si256(reinterpret_cast<__m256i*>(wu[r]), _mm512_castsi512_si256(W::Values1(blk)));
        dw[r] = HalfAt(blk);
        mw[r] = W::kHasMin ? HalfAt(blk + 2) : 0.0f;
        part[r] = _mm512_setzero_si512();
      }
      // The broadcasts below must read wu from memory (a load each, no ALU work): without this
      // barrier GCC forwards the stores through registers and spends two shuffles per broadcast.
      // It names wu alone, so the accumulators stay in registers.
      asm volatile("" : "+m"(wu));
      for (int st = 0; st < kSteps; ++st) {
        const __m512i a = Load512(o + 64 * st);
        for (int r = 0; r < R; ++r) {
          part[r] = _mm512_dpbusd_epi32(part[r], BroadcastToLaneSets<P>(wu[r] + 4 * P * st), a);
        }
      }
      const __m512i correction = Load512(o + kCorrection);
      const __m512 da = _mm512_loadu_ps(o + kD);
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_sub_epi32(AddLaneSets<P>(part[r]), correction);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_set1_ps(dw[r]), da), acc[r]);
        if constexpr (W::kHasMin) {
          acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(mw[r]), _mm512_loadu_ps(o + kS), acc[r]);
        }
      }
    }
    StoreTileAccumulators<P>(acc, y, ys, cv);
  }

  static constexpr int kPieceBlocks = 128;  // blocks interleaved at a time
  static constexpr int kBlockElems = kQK;
  static void Run(int64_t n, const uint8_t* w, size_t ws, int64_t row_begin, int64_t row_end,
                  const uint8_t* x, size_t xs, int cv, float* y, int64_t ys) {
    RunGroupedPieces<Q32Grouped>(n, w, ws, row_begin, row_end, x, xs, cv, y, ys);
  }
};

// Table entries of a lane-grouped type T: T::One<R> computes one activation row against R weight
// rows (R = T::kDecodeRows, or 1 for the rest and for VecDot); T::Group<Cg> several activation rows.
template <class T>
void MatMulLaneGrouped(int64_t n, const void* wv, size_t ws, int64_t row_begin, int64_t row_end,
                       const void* xv, size_t xs, int64_t m, float* y, int64_t ys) {
  const auto* w = static_cast<const uint8_t*>(wv);
  const auto* x = static_cast<const uint8_t*>(xv);
  if (m == 1) {
    int64_t r = row_begin;
    for (; r + T::kDecodeRows <= row_end; r += T::kDecodeRows) {
      T::template One<T::kDecodeRows>(n, w + r * ws, ws, x, y + r);
    }
    for (; r < row_end; ++r) T::template One<1>(n, w + r * ws, ws, x, y + r);
    return;
  }
  GroupedMatMul<T::template Group, T::kMinGroup>(n, w, ws, row_begin, row_end, x, xs, m, y, ys);
}

template <class T>
float VecDotLaneGrouped(int64_t n, const void* w, const void* x) {
  float result;
  T::template One<1>(n, static_cast<const uint8_t*>(w), 0, static_cast<const uint8_t*>(x), &result);
  return result;
}

// Q5_K: several activation rows through KQuantKernel's tiles (lanes are elements), cv at a time.
template <int Cg>
struct Q5KTiles {
  static void Run(int64_t n, const uint8_t* w, size_t ws, int64_t row_begin, int64_t row_end,
                  const uint8_t* x, size_t xs, int cv, float* y, int64_t ys) {
    MatMulTiled<KQuantKernel<true>>(n, w, ws, row_begin, row_end, x, xs, cv, y, ys);
  }
};

// Q4_K (kFifthBit false) and Q5_K: one activation row through KQuantOneActivation, several
// through G.
template <bool kFifthBit, template <int> class G>
struct KQuantProducts {
  static constexpr int kDecodeRows = 4;
  static constexpr int kMinGroup = 2;
  template <int R>
  static void One(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, float* y) {
    KQuantOneActivation<kFifthBit, R>(n, w, ws, x, y);
  }
  template <int Cg>
  using Group = G<Cg>;
};

struct Q6KProducts {
  static constexpr int kDecodeRows = 4;
  static constexpr int kMinGroup = 4;
  template <int R>
  static void One(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, float* y) {
    Q6KOneActivation<R>(n, w, ws, x, y);
  }
  template <int Cg>
  using Group = Q6KGrouped<Cg>;
};

template <class W, class A>
struct Q32Products {
  static constexpr int kDecodeRows = 8;
  static constexpr int kMinGroup = 2;
  template <int R>
  static void One(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, float* y) {
    Q32OneActivation<W, A, R>(n, w, ws, x, y);
  }
  template <int Cg>
  using Group = Q32Grouped<W, A, Cg>;
};

template <class T>
void RegisterLaneGrouped(KernelTable* t, TensorType type) {
  t->vec_dot[static_cast<size_t>(type)] = VecDotLaneGrouped<T>;
  t->mat_mul[static_cast<size_t>(type)] = MatMulLaneGrouped<T>;
}

template <class K>
void Register(KernelTable* t, TensorType type) {
  t->vec_dot[static_cast<size_t>(type)] = VecDotTiled<K>;
  t->mat_mul[static_cast<size_t>(type)] = MatMulTiled<K>;
}

KernelTable MakeAvx512Table() {
  KernelTable t{};
  Register<FloatKernel<F32Elems>>(&t, TensorType::kF32);
  Register<FloatKernel<F16Elems>>(&t, TensorType::kF16);
  Register<FloatKernel<Bf16Elems>>(&t, TensorType::kBF16);
  RegisterLaneGrouped<Q32Products<Q4_0Weights, Q8Acts<false>>>(&t, TensorType::kQ4_0);
  RegisterLaneGrouped<Q32Products<Q4_1Weights, Q8Acts<true>>>(&t, TensorType::kQ4_1);
  RegisterLaneGrouped<Q32Products<Q5_0Weights, Q8Acts<false>>>(&t, TensorType::kQ5_0);
  RegisterLaneGrouped<Q32Products<Q5_1Weights, Q8Acts<true>>>(&t, TensorType::kQ5_1);
  RegisterLaneGrouped<Q32Products<Q8_0Weights, Q8Acts<false>>>(&t, TensorType::kQ8_0);
  RegisterLaneGrouped<KQuantProducts<false, Q4KGrouped>>(&t, TensorType::kQ4_K);
  RegisterLaneGrouped<KQuantProducts<true, Q5KTiles>>(&t, TensorType::kQ5_K);
  RegisterLaneGrouped<Q6KProducts>(&t, TensorType::kQ6_K);
  return t;
}

}  // namespace

const KernelTable& Avx512Kernels() {
  static const KernelTable table = MakeAvx512Table();
  return table;
}

}  // namespace airlock::inference::kernels::internal
