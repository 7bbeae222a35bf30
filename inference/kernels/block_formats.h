// Byte layouts of ggml's quantized blocks (ggml-common.h), so that weights read from a GGUF file
// and activations we build are interchangeable with llama.cpp's, byte for byte.
//
// Every struct is packed, little-endian and has exactly ggml's size; fp16 fields are raw IEEE half
// bits. This header holds data definitions only (no functions), so the SIMD translation units,
// which are compiled for other instruction sets, can include it without risking an ODR merge of
// code compiled for the wrong CPU.
#pragma once

#include <cstdint>

namespace airlock::inference::kernels {

// Elements per block of the "legacy" formats and per super-block of the K-quants.
inline constexpr int kQK = 32;
inline constexpr int kQKK = 256;
// Bytes of packed 6-bit scales and mins in a Q4_K/Q5_K super-block.
inline constexpr int kKScaleBytes = 12;

#pragma pack(push, 1)

// x = (q - 8) * d, q in [0, 15]. Element j < 16 is the low nibble of qs[j], element j + 16 its high
// nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// x = q * d + m, q in [0, 15]; nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};

// x = (q - 16) * d, q in [0, 31]: low 4 bits as Q4_0, bit 4 of element j is bit j of qh (as a
// little-endian uint32).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// x = q * d + m, q in [0, 31]; bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// x = q * d.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};

// x = q * d; s = d * sum(q) (used to apply the mins of Q4_1/Q5_1 weights).
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK];
};

// Eight sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], q in [0, 15], sc/m 6-bit. Element
// 64 * i + l (l < 32) is the low nibble of qs[32 * i + l], element 64 * i + 32 + l its high nibble.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQKK / 2];
};

// As Q4_K with a fifth bit: bit j of qh[l] is the high bit of element 32 * j + l.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};

// Sixteen sub-blocks of 16: x = d * scales[j] * (q - 32), q in [0, 63] (4 bits in ql, 2 in qh).
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};

// Activation super-block for K-quant dot products: x = q * d (d is fp32), bsums[j] = sum of
// q[16 * j .. 16 * j + 15].
struct BlockQ8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};

#pragma pack(pop)

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

}  // namespace airlock::inference::kernels
