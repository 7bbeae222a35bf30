// Weight quantizers: quantize -> dequantize error bounds per type (per element for the formats with
// a closed-form bound, RMS and worst case for the K-quants), zero blocks, large magnitudes, and
// the structural validity of the blocks they write.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "inference/base/fp16.h"
#include "inference/kernels/block_formats.h"
#include "inference/kernels/quants.h"
#include "tests/inference/kernels/kernel_test_util.h"

namespace airlock::inference::kernels {
namespace {

using testing::Dequantized;
using testing::QuantizedRow;
using testing::RandomFloats;

// Largest |x| and the min/max of x over [begin, begin + count).
struct Range {
  float amax = 0.0f, min = 0.0f, max = 0.0f;
};
Range RangeOf(const std::vector<float>& x, size_t begin, size_t count) {
  Range r{0.0f, x[begin], x[begin]};
  for (size_t i = begin; i < begin + count; ++i) {
    r.amax = std::max(r.amax, std::fabs(x[i]));
    r.min = std::min(r.min, x[i]);
    r.max = std::max(r.max, x[i]);
  }
  return r;
}

// The closed-form bound on |x - dequant(quant(x))| for one element of a 32-element block, from
// the quantizer's construction: half a step inside the range (a whole step where the grid is
// asymmetric and the top value is clamped), plus the fp16 rounding of the stored d (and m):
// 2^-11 relative, times at most the largest quant.
double LegacyBound(TensorType t, const Range& r) {
  const double half_ulp = std::ldexp(1.0, -11);
  switch (t) {
    case TensorType::kQ8_0: return (0.5 + 127 * half_ulp) * r.amax / 127.0;
    case TensorType::kQ4_0: return (1.0 + 8 * half_ulp) * r.amax / 8.0;
    case TensorType::kQ5_0: return (1.0 + 16 * half_ulp) * r.amax / 16.0;
    case TensorType::kQ4_1:
      return (0.5 + 15 * half_ulp) * (r.max - r.min) / 15.0 + half_ulp * std::fabs(r.min);
    case TensorType::kQ5_1:
      return (0.5 + 31 * half_ulp) * (r.max - r.min) / 31.0 + half_ulp * std::fabs(r.min);
    default: return 0.0;
  }
}

class QuantizeWeightsTest : public ::testing::TestWithParam<TensorType> {
 protected:
  TensorType type() const { return GetParam(); }
  std::mt19937 rng_{7};
};

TEST_P(QuantizeWeightsTest, RoundTripErrorWithinBound) {
  const int64_t n = 4096;
  for (float base : {1.0f, 0.02f, 300.0f}) {
    const std::vector<float> x = RandomFloats(rng_, n, base);
    const std::vector<float> y = Dequantized(type(), QuantizedRow(type(), x).data(), n);
    double err2 = 0.0, x2 = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double e = static_cast<double>(y[i]) - x[i];
      err2 += e * e;
      x2 += static_cast<double>(x[i]) * x[i];
      switch (type()) {
        case TensorType::kF32: ASSERT_EQ(y[i], x[i]); break;
        case TensorType::kF16:  // relative 2^-11, or half the subnormal spacing 2^-24
          ASSERT_LE(std::fabs(e), std::max(std::ldexp(std::fabs(static_cast<double>(x[i])), -11),
                                           std::ldexp(1.0, -25)))
              << i;
          break;
        case TensorType::kBF16:
          ASSERT_LE(std::fabs(e), std::ldexp(std::fabs(x[i]), -8)) << i;
          break;
        case TensorType::kQ8_0:
        case TensorType::kQ4_0:
        case TensorType::kQ5_0:
        case TensorType::kQ4_1:
        case TensorType::kQ5_1:
          ASSERT_LE(std::fabs(e), LegacyBound(type(), RangeOf(x, i / 32 * 32, 32)) * 1.0001) << i;
          break;
        default: {
          // K-quants: scales are themselves quantized (6 or 8 bits), so an element can land up to
          // about one step of its sub-block away; bound by a fraction of the super-block range.
          const Range r = RangeOf(x, i / 256 * 256, 256);
          const double fraction = type() == TensorType::kQ4_K   ? 0.08
                                  : type() == TensorType::kQ5_K ? 0.04
                                                                : 0.03;
          ASSERT_LE(std::fabs(e), fraction * (r.max - r.min)) << i;
        }
      }
    }
    // Relative RMS error, measured on these Gaussian rows (the block-to-block scale changes make
    // them harder than real weights): Q4_0 0.088, Q4_1 0.081, Q4_K 0.074, Q5_0 0.043, Q5_1 0.039,
    // Q5_K 0.036, Q6_K 0.018, Q8_0 0.0055; the limits leave ~15% margin.
    const double rel_rms = std::sqrt(err2 / x2);
    double limit = 0.0;
    switch (type()) {
      case TensorType::kF32: limit = 0.0; break;
      case TensorType::kF16: limit = 2.5e-4; break;
      case TensorType::kBF16: limit = 2e-3; break;
      case TensorType::kQ8_0: limit = 0.0062; break;
      case TensorType::kQ4_0: limit = 0.10; break;
      case TensorType::kQ4_1: limit = 0.093; break;
      case TensorType::kQ5_0: limit = 0.05; break;
      case TensorType::kQ5_1: limit = 0.045; break;
      case TensorType::kQ4_K: limit = 0.085; break;
      case TensorType::kQ5_K: limit = 0.042; break;
      case TensorType::kQ6_K: limit = 0.021; break;
      default: FAIL();
    }
    EXPECT_LE(rel_rms, limit) << "base " << base;
    RecordProperty(std::string("rel_rms_") + std::to_string(base), std::to_string(rel_rms));
  }
}

TEST_P(QuantizeWeightsTest, ZerosStayZero) {
  const int64_t n = 512;
  const std::vector<float> x(n, 0.0f);
  for (float v : Dequantized(type(), QuantizedRow(type(), x).data(), n)) ASSERT_EQ(v, 0.0f);
}

TEST_P(QuantizeWeightsTest, ConstantAndLargeBlocks) {
  // A constant block (zero range), a block of one spike, and magnitudes near the fp16 limit of
  // the scales: all must round-trip finitely and close to the input.
  const int64_t n = 768;
  std::vector<float> x(n, 0.0f);
  for (int64_t i = 0; i < 256; ++i) x[i] = -3.0f;
  x[300] = 5.0f;
  for (int64_t i = 512; i < 768; ++i) x[i] = (i % 2 ? 1.0f : -1.0f) * 4000.0f;
  const std::vector<float> y = Dequantized(type(), QuantizedRow(type(), x).data(), n);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << i;
    const double block_amax = i < 256 ? 3.0 : i < 512 ? 5.0 : 4000.0;
    // Q4_0/Q5_0 map the first extreme to -8 (-16) steps, so an opposite extreme clamps one step
    // short.
    const double fraction = type() == TensorType::kQ4_0 ? 0.126 : 0.07;
    ASSERT_LE(std::fabs(y[i] - x[i]), fraction * block_amax) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, QuantizeWeightsTest,
                         ::testing::ValuesIn(testing::WeightTypes()),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TensorTypeName(info.param));
                         });

// Valid blocks: every 6-bit scale of a Q4_K/Q5_K written by QuantizeRow decodes back to what the
// dequantizer uses, and the fp16 scales are finite.
TEST(QuantizeWeightsStructureTest, KQuantScalesAreFinite) {
  std::mt19937 rng(11);
  for (TensorType t : {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
    const std::vector<uint8_t> row = QuantizedRow(t, RandomFloats(rng, 2048));
    const size_t bytes = Traits(t).block_bytes;
    for (size_t b = 0; b < row.size() / bytes; ++b) {
      for (size_t off : testing::HalfFieldOffsets(t)) {
        uint16_t h;
        std::memcpy(&h, row.data() + b * bytes + off, 2);
        ASSERT_TRUE(std::isfinite(F16ToF32(h)));
      }
    }
  }
}

}  // namespace
}  // namespace airlock::inference::kernels
