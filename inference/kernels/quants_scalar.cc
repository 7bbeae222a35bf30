// Scalar reference kernels: every dequantizer, activation quantizer and dot product written
// straight from the block definitions, readable first and fast second. The SIMD variants are
// tested against these, and CPUs without AVX2 run them.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "inference/base/fp16.h"
#include "inference/base/tensor_type.h"
#include "inference/kernels/block_formats.h"
#include "inference/kernels/kernel_table.h"

namespace airlock::inference::kernels::internal {
namespace {

// --- Shared helpers ---

// Rows may start at any byte (MatMulRows takes arbitrary strides), so float-type elements are
// read and written through memcpy rather than typed pointers.
uint16_t U16At(const void* p, int64_t i) {
  uint16_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(p) + 2 * i, sizeof v);
  return v;
}

float F32At(const void* p, int64_t i) {
  float v;
  std::memcpy(&v, static_cast<const uint8_t*>(p) + 4 * i, sizeof v);
  return v;
}

void StoreU16(void* p, int64_t i, uint16_t v) {
  std::memcpy(static_cast<uint8_t*>(p) + 2 * i, &v, sizeof v);
}

// Unpacks the twelve bytes of 6-bit scales and mins of a Q4_K/Q5_K super-block (ggml's
// get_scale_min_k4): sub-blocks 0-3 keep their low six bits in bytes 0-7, sub-blocks 4-7 put four
// bits in bytes 8-11 and their top two bits in the spare top bits of bytes 0-7.
void UnpackScalesMinsK(const uint8_t* packed, uint8_t* scales, uint8_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = packed[j] & 63;
    mins[j] = packed[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    scales[j] = static_cast<uint8_t>((packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4));
    mins[j] = static_cast<uint8_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

// ggml's nearest_int: round half to even through the float adder (valid for |x| < 2^22).
int NearestInt(float x) {
  const float biased = x + 12582912.0f;  // 1.5 * 2^23: the integer lands in the low mantissa bits
  int32_t bits;
  std::memcpy(&bits, &biased, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

// Unpacked 4-bit value of element j (0..31) of a Q4_0/Q4_1 block.
int Nibble32(const uint8_t* qs, int j) { return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4); }

// Unpacked 5-bit value of element j (0..31) of a Q5_0/Q5_1 block.
int Quint32(const uint8_t* qs, const uint8_t* qh_bytes, int j) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, sizeof qh);
  return Nibble32(qs, j) | static_cast<int>(((qh >> j) & 1u) << 4);
}

// 4-bit value of element i (0..255) of a Q4_K/Q5_K super-block.
int NibbleK(const uint8_t* qs, int i) {
  const int group = i / 64;
  const int l = i % 32;
  const uint8_t byte = qs[32 * group + l];
  return (i % 64) < 32 ? (byte & 0xF) : (byte >> 4);
}

// High (fifth) bit of element i of a Q5_K super-block.
int HighBitK(const uint8_t* qh, int i) { return (qh[i % 32] >> (i / 32)) & 1; }

// 6-bit value (0..63, before subtracting 32) of element i of a Q6_K super-block.
int SixBitQ6K(const BlockQ6_K& b, int i) {
  const int half = i / 128;  // each half of 128 uses 64 bytes of ql and 32 of qh
  const int r = i % 128;
  const int quarter = r / 32;  // 0: ql low nibble, 1: ql[+32] low, 2: ql high, 3: ql[+32] high
  const int l = r % 32;
  const uint8_t* ql = b.ql + 64 * half;
  const uint8_t* qh = b.qh + 32 * half;
  const uint8_t low_byte = ql[l + ((quarter & 1) ? 32 : 0)];
  const int low = quarter < 2 ? (low_byte & 0xF) : (low_byte >> 4);
  const int high = (qh[l] >> (2 * quarter)) & 3;
  return low | (high << 4);
}

// --- Dequantization ---

void DequantizeF32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void DequantizeF16(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(U16At(src, i));
}

void DequantizeBf16(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(U16At(src, i));
}

void DequantizeQ4_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_0*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float d = F16ToF32(blocks[b].d);
    for (int j = 0; j < kQK; ++j)
      dst[b * kQK + j] = static_cast<float>(Nibble32(blocks[b].qs, j) - 8) * d;
  }
}

void DequantizeQ4_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_1*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float d = F16ToF32(blocks[b].d);
    const float m = F16ToF32(blocks[b].m);
    for (int j = 0; j < kQK; ++j)
      dst[b * kQK + j] = static_cast<float>(Nibble32(blocks[b].qs, j)) * d + m;
  }
}

void DequantizeQ5_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5_0*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float d = F16ToF32(blocks[b].d);
    for (int j = 0; j < kQK; ++j) {
      dst[b * kQK + j] = static_cast<float>(Quint32(blocks[b].qs, blocks[b].qh, j) - 16) * d;
    }
  }
}

void DequantizeQ5_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5_1*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float d = F16ToF32(blocks[b].d);
    const float m = F16ToF32(blocks[b].m);
    for (int j = 0; j < kQK; ++j) {
      dst[b * kQK + j] = static_cast<float>(Quint32(blocks[b].qs, blocks[b].qh, j)) * d + m;
    }
  }
}

void DequantizeQ8_0(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ8_0*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float d = F16ToF32(blocks[b].d);
    for (int j = 0; j < kQK; ++j) dst[b * kQK + j] = static_cast<float>(blocks[b].qs[j]) * d;
  }
}

void DequantizeQ8_1(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ8_1*>(src);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float d = F16ToF32(blocks[b].d);
    for (int j = 0; j < kQK; ++j) dst[b * kQK + j] = static_cast<float>(blocks[b].qs[j]) * d;
  }
}

void DequantizeQ4_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_K*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const BlockQ4_K& blk = blocks[b];
    uint8_t scales[8], mins[8];
    UnpackScalesMinsK(blk.scales, scales, mins);
    const float d = F16ToF32(blk.d);
    const float dmin = F16ToF32(blk.dmin);
    for (int i = 0; i < kQKK; ++i) {
      const int sub = i / 32;
      const float scale = d * static_cast<float>(scales[sub]);
      const float min = dmin * static_cast<float>(mins[sub]);
      dst[b * kQKK + i] = scale * static_cast<float>(NibbleK(blk.qs, i)) - min;
    }
  }
}

void DequantizeQ5_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5_K*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const BlockQ5_K& blk = blocks[b];
    uint8_t scales[8], mins[8];
    UnpackScalesMinsK(blk.scales, scales, mins);
    const float d = F16ToF32(blk.d);
    const float dmin = F16ToF32(blk.dmin);
    for (int i = 0; i < kQKK; ++i) {
      const int sub = i / 32;
      const float scale = d * static_cast<float>(scales[sub]);
      const float min = dmin * static_cast<float>(mins[sub]);
      const int q = NibbleK(blk.qs, i) | (HighBitK(blk.qh, i) << 4);
      dst[b * kQKK + i] = scale * static_cast<float>(q) - min;
    }
  }
}

void DequantizeQ6_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ6_K*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const BlockQ6_K& blk = blocks[b];
    const float d = F16ToF32(blk.d);
    for (int i = 0; i < kQKK; ++i) {
      // ggml multiplies d * scale first, then the quant.
      const float scale = d * static_cast<float>(blk.scales[i / 16]);
      dst[b * kQKK + i] = scale * static_cast<float>(SixBitQ6K(blk, i) - 32);
    }
  }
}

void DequantizeQ8_K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ8_K*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    for (int i = 0; i < kQKK; ++i)
      dst[b * kQKK + i] = blocks[b].d * static_cast<float>(blocks[b].qs[i]);
  }
}

// --- Activation quantization (ggml's reference quantizers, bit for bit) ---

void QuantizeActF32(const float* x, void* dst, int64_t n) {
  std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float));
}

void QuantizeActF16(const float* x, void* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) StoreU16(dst, i, F32ToF16(x[i]));
}

void QuantizeActBf16(const float* x, void* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) StoreU16(dst, i, F32ToBf16(x[i]));
}

// One Q8_0/Q8_1 block as llama.cpp's x86 CPU backend computes it at run time (the AVX
// quantize_row_q8_0/q8_1, which produced the golden outputs; ggml's *_ref differs in the last
// step): d = amax / 127 (stored as fp16), q = x * (127 / amax) rounded half to even. Returns
// sum(q) for Q8_1 and the float d.
int QuantizeQ8Block(const float* x, int8_t* qs, float* d_out) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  int sum = 0;
  for (int j = 0; j < kQK; ++j) {
    qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
    sum += qs[j];
  }
  *d_out = d;
  return sum;
}

void QuantizeActQ8_0(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    float d;
    QuantizeQ8Block(x + b * kQK, blocks[b].qs, &d);
    blocks[b].d = F32ToF16(d);
  }
}

void QuantizeActQ8_1(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ8_1*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    float d;
    const int sum = QuantizeQ8Block(x + b * kQK, blocks[b].qs, &d);
    blocks[b].d = F32ToF16(d);
    blocks[b].s = F32ToF16(static_cast<float>(sum) * d);
  }
}

void QuantizeActQ8_K(const float* x, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ8_K*>(dst);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const float* xb = x + b * kQKK;
    BlockQ8_K& out = blocks[b];
    // The signed value of largest magnitude (the first one on ties) maps to -127.
    float max = 0.0f, amax = 0.0f;
    for (int j = 0; j < kQKK; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(&out, 0, sizeof out);
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) {
      const int v = NearestInt(iscale * xb[j]);
      out.qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int g = 0; g < kQKK / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += out.qs[16 * g + j];
      out.bsums[g] = static_cast<int16_t>(sum);
    }
    out.d = 1.0f / iscale;
  }
}

// --- Dot products ---
//
// Each follows the float order quants.h defines for its type, which every ISA reproduces; fma is
// std::fma (one rounding) so that no compiler contraction choice can change a result.

// Float types: 32 lanes, then the fixed reduction tree (see quants.h).
template <float (*kWiden)(const void*, int64_t)>
float VecDotFloat(int64_t n, const void* w, const void* x) {
  float acc[32] = {};
  const int64_t whole = n - n % 32;
  for (int64_t i = 0; i < whole; ++i) acc[i % 32] = std::fma(kWiden(w, i), kWiden(x, i), acc[i % 32]);
  for (int64_t i = whole; i < n; ++i) {
    const int64_t l = (i - whole) % 16;
    acc[l] = std::fma(kWiden(w, i), kWiden(x, i), acc[l]);
  }
  float v[16], u[8], s[4];
  for (int l = 0; l < 16; ++l) v[l] = acc[l] + acc[l + 16];
  for (int l = 0; l < 8; ++l) u[l] = v[l] + v[l + 8];
  for (int l = 0; l < 4; ++l) s[l] = u[l] + u[l + 4];
  return (s[0] + s[2]) + (s[1] + s[3]);
}

float WidenF32(const void* p, int64_t i) { return F32At(p, i); }
float WidenF16(const void* p, int64_t i) { return F16ToF32(U16At(p, i)); }
float WidenBf16(const void* p, int64_t i) { return Bf16ToF32(U16At(p, i)); }

// Quantized types: an exact integer dot per block, then the block's float step.
float ScaledBlock(int32_t isum, uint16_t dw, uint16_t da, float acc) {
  return std::fma(static_cast<float>(isum), F16ToF32(dw) * F16ToF32(da), acc);
}

float VecDotQ4_0(int64_t n, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ4_0*>(w);
  const auto* xb = static_cast<const BlockQ8_0*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / kQK; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQK; ++j) isum += (Nibble32(wb[b].qs, j) - 8) * xb[b].qs[j];
    acc = ScaledBlock(isum, wb[b].d, xb[b].d, acc);
  }
  return acc;
}

float VecDotQ4_1(int64_t n, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ4_1*>(w);
  const auto* xb = static_cast<const BlockQ8_1*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / kQK; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQK; ++j) isum += Nibble32(wb[b].qs, j) * xb[b].qs[j];
    acc = ScaledBlock(isum, wb[b].d, xb[b].d, acc);
    acc = std::fma(F16ToF32(wb[b].m), F16ToF32(xb[b].s), acc);
  }
  return acc;
}

float VecDotQ5_0(int64_t n, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ5_0*>(w);
  const auto* xb = static_cast<const BlockQ8_0*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / kQK; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQK; ++j) isum += (Quint32(wb[b].qs, wb[b].qh, j) - 16) * xb[b].qs[j];
    acc = ScaledBlock(isum, wb[b].d, xb[b].d, acc);
  }
  return acc;
}

float VecDotQ5_1(int64_t n, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ5_1*>(w);
  const auto* xb = static_cast<const BlockQ8_1*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / kQK; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQK; ++j) isum += Quint32(wb[b].qs, wb[b].qh, j) * xb[b].qs[j];
    acc = ScaledBlock(isum, wb[b].d, xb[b].d, acc);
    acc = std::fma(F16ToF32(wb[b].m), F16ToF32(xb[b].s), acc);
  }
  return acc;
}

float VecDotQ8_0(int64_t n, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ8_0*>(w);
  const auto* xb = static_cast<const BlockQ8_0*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / kQK; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQK; ++j) isum += wb[b].qs[j] * xb[b].qs[j];
    acc = ScaledBlock(isum, wb[b].d, xb[b].d, acc);
  }
  return acc;
}

// Q4_K/Q5_K: isum = sum_j sc[j] * dot(q, a)_j and msum = sum_j m[j] * sum(a)_j, the activation
// sums coming from the Q8_K bsums (two per 32-element sub-block).
template <bool kFifthBit, typename Block>
float VecDotKQuant(int64_t n, const void* w, const void* x) {
  const auto* wb = static_cast<const Block*>(w);
  const auto* xb = static_cast<const BlockQ8_K*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const Block& blk = wb[b];
    const BlockQ8_K& act = xb[b];
    uint8_t scales[8], mins[8];
    UnpackScalesMinsK(blk.scales, scales, mins);
    int32_t isum = 0;
    int32_t msum = 0;
    for (int sub = 0; sub < 8; ++sub) {
      int32_t dot = 0;
      for (int l = 0; l < 32; ++l) {
        const int i = 32 * sub + l;
        int q = NibbleK(blk.qs, i);
        if constexpr (kFifthBit) q |= HighBitK(blk.qh, i) << 4;
        dot += q * act.qs[i];
      }
      isum += scales[sub] * dot;
      msum += mins[sub] * (act.bsums[2 * sub] + act.bsums[2 * sub + 1]);
    }
    float t = static_cast<float>(isum) * F16ToF32(blk.d);
    t = std::fma(-static_cast<float>(msum), F16ToF32(blk.dmin), t);
    acc = std::fma(t, act.d, acc);
  }
  return acc;
}

float VecDotQ6_K(int64_t n, const void* w, const void* x) {
  const auto* wb = static_cast<const BlockQ6_K*>(w);
  const auto* xb = static_cast<const BlockQ8_K*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / kQKK; ++b) {
    int32_t isum = 0;
    for (int g = 0; g < 16; ++g) {
      int32_t dot = 0;
      for (int l = 0; l < 16; ++l) {
        const int i = 16 * g + l;
        dot += (SixBitQ6K(wb[b], i) - 32) * xb[b].qs[i];
      }
      isum += wb[b].scales[g] * dot;
    }
    acc = std::fma(static_cast<float>(isum), F16ToF32(wb[b].d) * xb[b].d, acc);
  }
  return acc;
}

KernelTable MakeScalarTable() {
  KernelTable t{};
  auto slot = [](TensorType type) { return static_cast<size_t>(type); };
  t.dequantize[slot(TensorType::kF32)] = DequantizeF32;
  t.dequantize[slot(TensorType::kF16)] = DequantizeF16;
  t.dequantize[slot(TensorType::kBF16)] = DequantizeBf16;
  t.dequantize[slot(TensorType::kQ4_0)] = DequantizeQ4_0;
  t.dequantize[slot(TensorType::kQ4_1)] = DequantizeQ4_1;
  t.dequantize[slot(TensorType::kQ5_0)] = DequantizeQ5_0;
  t.dequantize[slot(TensorType::kQ5_1)] = DequantizeQ5_1;
  t.dequantize[slot(TensorType::kQ8_0)] = DequantizeQ8_0;
  t.dequantize[slot(TensorType::kQ8_1)] = DequantizeQ8_1;
  t.dequantize[slot(TensorType::kQ4_K)] = DequantizeQ4_K;
  t.dequantize[slot(TensorType::kQ5_K)] = DequantizeQ5_K;
  t.dequantize[slot(TensorType::kQ6_K)] = DequantizeQ6_K;
  t.dequantize[slot(TensorType::kQ8_K)] = DequantizeQ8_K;

  t.quantize_activation[slot(TensorType::kF32)] = QuantizeActF32;
  t.quantize_activation[slot(TensorType::kF16)] = QuantizeActF16;
  t.quantize_activation[slot(TensorType::kBF16)] = QuantizeActBf16;
  t.quantize_activation[slot(TensorType::kQ8_0)] = QuantizeActQ8_0;
  t.quantize_activation[slot(TensorType::kQ8_1)] = QuantizeActQ8_1;
  t.quantize_activation[slot(TensorType::kQ8_K)] = QuantizeActQ8_K;

  t.vec_dot[slot(TensorType::kF32)] = VecDotFloat<WidenF32>;
  t.vec_dot[slot(TensorType::kF16)] = VecDotFloat<WidenF16>;
  t.vec_dot[slot(TensorType::kBF16)] = VecDotFloat<WidenBf16>;
  t.vec_dot[slot(TensorType::kQ4_0)] = VecDotQ4_0;
  t.vec_dot[slot(TensorType::kQ4_1)] = VecDotQ4_1;
  t.vec_dot[slot(TensorType::kQ5_0)] = VecDotQ5_0;
  t.vec_dot[slot(TensorType::kQ5_1)] = VecDotQ5_1;
  t.vec_dot[slot(TensorType::kQ8_0)] = VecDotQ8_0;
  t.vec_dot[slot(TensorType::kQ4_K)] = VecDotKQuant<false, BlockQ4_K>;
  t.vec_dot[slot(TensorType::kQ5_K)] = VecDotKQuant<true, BlockQ5_K>;
  t.vec_dot[slot(TensorType::kQ6_K)] = VecDotQ6_K;
  // mat_mul stays empty: quants.cc builds it from vec_dot.
  return t;
}

}  // namespace

const KernelTable& ScalarKernels() {
  static const KernelTable table = MakeScalarTable();
  return table;
}

}  // namespace airlock::inference::kernels::internal
