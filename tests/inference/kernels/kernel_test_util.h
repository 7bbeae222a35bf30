// Shared helpers of the kernel tests: the types under test, seeded random rows (quantized floats
// and raw blocks with finite fp16 scales), and the error bounds the comparisons use.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "inference/base/fp16.h"
#include "inference/base/tensor_type.h"
#include "inference/kernels/block_formats.h"
#include "inference/kernels/quants.h"

namespace airlock::inference::kernels::testing {

inline const std::vector<TensorType>& WeightTypes() {
  static const std::vector<TensorType> types = {
      TensorType::kF32,  TensorType::kF16,  TensorType::kBF16, TensorType::kQ8_0,
      TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1,
      TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K};
  return types;
}

inline const std::vector<Isa>& AllIsas() {
  static const std::vector<Isa> isas = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512};
  return isas;
}

inline bool IsFloatType(TensorType t) {
  return t == TensorType::kF32 || t == TensorType::kF16 || t == TensorType::kBF16;
}

inline bool HasMins(TensorType t) {
  return t == TensorType::kQ4_1 || t == TensorType::kQ5_1 || t == TensorType::kQ4_K ||
         t == TensorType::kQ5_K;
}

inline size_t Bytes(TensorType t, int64_t n) {
  const auto bytes = RowBytes(t, n);
  EXPECT_TRUE(bytes.has_value()) << TensorTypeName(t) << " n=" << n;
  return bytes.value_or(0);
}

// Row lengths to test: a few whole numbers of blocks, from one block to a typical hidden size.
inline std::vector<int64_t> TestLengths(TensorType t) {
  if (IsFloatType(t)) return {1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 128, 257, 4096};
  if (Traits(t).block_size == 32) return {32, 64, 96, 160, 256, 1024, 4096};
  return {256, 512, 768, 2048, 4096};
}

// Sets the process-wide ISA for one scope and restores the previous one.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : previous_(ActiveIsa()) { SetIsaForTesting(isa); }
  ~ScopedIsa() { SetIsaForTesting(previous_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  Isa previous_;
};

// Gaussian values whose scale changes from block to block (as activations do), so that every
// block's own scale matters.
inline std::vector<float> RandomFloats(std::mt19937& rng, int64_t n, float base_scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> log_scale(-3.0f, 3.0f);
  std::vector<float> v(static_cast<size_t>(n));
  float scale = base_scale;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 32 == 0) scale = base_scale * std::exp2(log_scale(rng));
    v[static_cast<size_t>(i)] = normal(rng) * scale;
  }
  return v;
}

// A random finite half in +-[2^-12, 2^2), with a random sign.
inline uint16_t RandomHalf(std::mt19937& rng) {
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> expo(-12, 1);
  std::bernoulli_distribution negative(0.5);
  const float v = std::ldexp(mant(rng), expo(rng)) * (negative(rng) ? -1.0f : 1.0f);
  return F32ToF16(v);
}

inline void StoreHalf(uint8_t* p, uint16_t h) { std::memcpy(p, &h, sizeof h); }

// Byte offsets of the fp16 fields in one block of a weight type.
inline std::vector<size_t> HalfFieldOffsets(TensorType t) {
  switch (t) {
    case TensorType::kQ4_0:
    case TensorType::kQ5_0:
    case TensorType::kQ8_0: return {0};
    case TensorType::kQ4_1:
    case TensorType::kQ5_1:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K: return {0, 2};
    case TensorType::kQ6_K: return {offsetof(BlockQ6_K, d)};
    default: return {};
  }
}

// A row of random raw blocks: random bytes for every quant, scale and min, except fp16 fields,
// which get finite values. Float types get random finite elements.
inline std::vector<uint8_t> RandomRawRow(std::mt19937& rng, TensorType t, int64_t n) {
  std::vector<uint8_t> row(Bytes(t, n));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : row) b = static_cast<uint8_t>(byte(rng));
  if (t == TensorType::kF32) {
    const std::vector<float> v = RandomFloats(rng, n);
    std::memcpy(row.data(), v.data(), row.size());
  } else if (t == TensorType::kF16) {
    for (int64_t i = 0; i < n; ++i) StoreHalf(row.data() + 2 * i, RandomHalf(rng));
  } else if (t == TensorType::kBF16) {
    const std::vector<float> v = RandomFloats(rng, n);
    for (int64_t i = 0; i < n; ++i)
      StoreHalf(row.data() + 2 * i, F32ToBf16(v[static_cast<size_t>(i)]));
  } else {
    const size_t block_bytes = Traits(t).block_bytes;
    for (size_t b = 0; b < row.size() / block_bytes; ++b) {
      for (size_t off : HalfFieldOffsets(t))
        StoreHalf(row.data() + b * block_bytes + off, RandomHalf(rng));
    }
  }
  return row;
}

inline std::vector<uint8_t> QuantizedRow(TensorType t, const std::vector<float>& x) {
  std::vector<uint8_t> row(Bytes(t, static_cast<int64_t>(x.size())));
  QuantizeRow(t, x.data(), row.data(), static_cast<int64_t>(x.size()));
  return row;
}

inline std::vector<uint8_t> ActivationRow(TensorType weight_type, const std::vector<float>& x) {
  const TensorType act = ActivationType(weight_type);
  std::vector<uint8_t> row(Bytes(act, static_cast<int64_t>(x.size())));
  QuantizeActivationRow(act, x.data(), row.data(), static_cast<int64_t>(x.size()));
  return row;
}

inline std::vector<float> Dequantized(TensorType t, const void* row, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  DequantizeRow(t, row, out.data(), n);
  return out;
}

// Per element, the magnitude of the min term of its (sub-)block (0 for types without mins): the
// dequantized value of the same block with every quant zeroed.
inline std::vector<float> MinTermMagnitudes(TensorType t, const std::vector<uint8_t>& row,
                                            int64_t n) {
  std::vector<float> mags(static_cast<size_t>(n), 0.0f);
  if (!HasMins(t)) return mags;
  std::vector<uint8_t> zeroed = row;
  const size_t block_bytes = Traits(t).block_bytes;
  for (size_t b = 0; b < row.size() / block_bytes; ++b) {
    uint8_t* blk = zeroed.data() + b * block_bytes;
    switch (t) {
      case TensorType::kQ4_1: std::memset(blk + 4, 0, 16); break;
      case TensorType::kQ5_1: std::memset(blk + 4, 0, 20); break;
      case TensorType::kQ4_K: std::memset(blk + 16, 0, 128); break;
      case TensorType::kQ5_K: std::memset(blk + 16, 0, 160); break;
      default: break;
    }
  }
  DequantizeRow(t, zeroed.data(), mags.data(), n);
  for (float& m : mags) m = std::fabs(m);
  return mags;
}

// Bound on how far two float evaluations of the same quantized dot product may drift apart when
// they only differ in summation order. Every block contributes a term computed with a few
// roundings, and a sum of k terms in any order is within (k - 1) * u * sum|terms| of the exact
// value (u = 2^-24). The terms are bounded by `magnitude` = sum_i (|w_i| + 2 |min_i|) * |a_i| over
// dequantized values, so two evaluations differ by at most 2 * (k + 8) * u * magnitude.
inline double ReorderTolerance(TensorType t, int64_t n, double magnitude) {
  const int64_t terms = IsFloatType(t) ? n : n / Traits(t).block_size;
  return 2.0 * static_cast<double>(terms + 8) * std::ldexp(1.0, -24) * magnitude + 1e-30;
}

// sum_i (|w_i| + 2 |min_i|) * |a_i| for a weight row and an activation row.
inline double DotMagnitude(TensorType t, const std::vector<uint8_t>& w,
                           const std::vector<uint8_t>& a, int64_t n) {
  const std::vector<float> wf = Dequantized(t, w.data(), n);
  const std::vector<float> af = Dequantized(ActivationType(t), a.data(), n);
  const std::vector<float> mins = MinTermMagnitudes(t, w, n);
  double m = 0.0;
  for (size_t i = 0; i < wf.size(); ++i) {
    m += (std::fabs(static_cast<double>(wf[i])) + 2.0 * mins[i]) *
         std::fabs(static_cast<double>(af[i]));
  }
  return m;
}

inline std::string IsaTypeName(Isa isa, TensorType t) {
  std::string name = std::string(IsaName(isa)) + "_" + TensorTypeName(t);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

}  // namespace airlock::inference::kernels::testing
