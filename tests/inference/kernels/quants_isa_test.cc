// Every ISA against the scalar reference, for every weight type: dequantization, activation
// quantization and dot products bit for bit, dot products against float math on dequantized
// values, and MatMulRows against VecDot element by element.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "inference/base/fp16.h"
#include "inference/kernels/block_formats.h"
#include "inference/kernels/quants.h"
#include "tests/inference/kernels/kernel_test_util.h"

namespace airlock::inference::kernels {
namespace {

using testing::ActivationRow;
using testing::Bytes;
using testing::Dequantized;
using testing::DotMagnitude;
using testing::QuantizedRow;
using testing::RandomFloats;
using testing::RandomRawRow;
using testing::ReorderTolerance;
using testing::ScopedIsa;
using testing::TestLengths;

class IsaTypeTest : public ::testing::TestWithParam<std::tuple<Isa, TensorType>> {
 protected:
  void SetUp() override {
    if (!IsaSupported(isa())) GTEST_SKIP() << IsaName(isa()) << " not supported on this CPU";
  }
  Isa isa() const { return std::get<0>(GetParam()); }
  TensorType type() const { return std::get<1>(GetParam()); }
  TensorType act_type() const { return ActivationType(type()); }

  // Runs fn() under the ISA under test.
  template <typename Fn>
  auto Under(Isa isa, Fn fn) {
    ScopedIsa scoped(isa);
    return fn();
  }

  std::mt19937 rng_{20250301};
};

// Weight rows to test at length n: quantized random floats, random raw blocks, and (for quantized
// types) two extreme rows: every quant byte 0xFF and every quant byte 0x80, with scales of 1.
std::vector<std::vector<uint8_t>> WeightRows(std::mt19937& rng, TensorType t, int64_t n) {
  std::vector<std::vector<uint8_t>> rows;
  rows.push_back(QuantizedRow(t, RandomFloats(rng, n)));
  rows.push_back(RandomRawRow(rng, t, n));
  rows.push_back(std::vector<uint8_t>(Bytes(t, n), 0));  // all-zero blocks
  if (testing::IsFloatType(t)) {
    std::vector<float> big(static_cast<size_t>(n));
    for (size_t i = 0; i < big.size(); ++i)
      big[i] = (i % 3 == 0 ? -1.0f : 1.0f) * (t == TensorType::kF16 ? 65504.0f : 1e30f);
    rows.push_back(QuantizedRow(t, big));
    return rows;
  }
  for (uint8_t fill : {uint8_t{0xFF}, uint8_t{0x80}}) {
    std::vector<uint8_t> row(Bytes(t, n), fill);
    const size_t block_bytes = Traits(t).block_bytes;
    for (size_t b = 0; b < row.size() / block_bytes; ++b) {
      for (size_t off : testing::HalfFieldOffsets(t))
        testing::StoreHalf(row.data() + b * block_bytes + off, 0x3C00);
    }
    rows.push_back(row);
  }
  return rows;
}

// Activation inputs: random floats, all zeros, and +-1 patterns that quantize to +-127.
std::vector<std::vector<float>> ActivationInputs(std::mt19937& rng, int64_t n) {
  std::vector<std::vector<float>> inputs;
  inputs.push_back(RandomFloats(rng, n));
  inputs.push_back(std::vector<float>(static_cast<size_t>(n), 0.0f));
  std::vector<float> alternating(static_cast<size_t>(n));
  for (size_t i = 0; i < alternating.size(); ++i) alternating[i] = i % 2 ? -1.0f : 1.0f;
  inputs.push_back(alternating);
  inputs.push_back(std::vector<float>(static_cast<size_t>(n), -1.0f));
  return inputs;
}

TEST_P(IsaTypeTest, DequantizeMatchesScalarExactly) {
  for (int64_t n : TestLengths(type())) {
    for (const auto& row : WeightRows(rng_, type(), n)) {
      const auto expected = Under(Isa::kScalar, [&] { return Dequantized(type(), row.data(), n); });
      const auto actual = Under(isa(), [&] { return Dequantized(type(), row.data(), n); });
      ASSERT_EQ(std::memcmp(expected.data(), actual.data(), expected.size() * sizeof(float)), 0)
          << "n=" << n;
    }
    // The activation formats dequantize too (used to check the dots against float math).
    const auto act = ActivationRow(type(), RandomFloats(rng_, n));
    const auto expected =
        Under(Isa::kScalar, [&] { return Dequantized(act_type(), act.data(), n); });
    const auto actual = Under(isa(), [&] { return Dequantized(act_type(), act.data(), n); });
    ASSERT_EQ(std::memcmp(expected.data(), actual.data(), expected.size() * sizeof(float)), 0)
        << "n=" << n;
  }
}

TEST_P(IsaTypeTest, ActivationQuantizationIsBitExact) {
  for (int64_t n : TestLengths(type())) {
    std::vector<std::vector<float>> inputs = ActivationInputs(rng_, n);
    // Exact rounding ties: a block whose largest magnitude is 127 quantizes with scale 1 (Q8_0) or
    // -1 (Q8_K), so values k + 0.5 hit the tie of roundf / nearest_int.
    std::vector<float> ties(static_cast<size_t>(n));
    std::uniform_int_distribution<int> k(-126, 125);
    for (size_t i = 0; i < ties.size(); ++i)
      ties[i] = i % 32 == 0 ? 127.0f : static_cast<float>(k(rng_)) + 0.5f;
    inputs.push_back(ties);
    // Magnitudes across the half-precision range, including values that overflow to inf and
    // subnormal halves (the F16 and BF16 activation paths).
    std::vector<float> wide(static_cast<size_t>(n));
    std::uniform_real_distribution<float> exponent(-30.0f, 20.0f);
    for (size_t i = 0; i < wide.size(); ++i)
      wide[i] = std::exp2(exponent(rng_)) * (i % 2 ? -1.0f : 1.0f);
    inputs.push_back(wide);
    for (const auto& x : inputs) {
      const auto expected = Under(Isa::kScalar, [&] { return ActivationRow(type(), x); });
      const auto actual = Under(isa(), [&] { return ActivationRow(type(), x); });
      ASSERT_EQ(expected, actual) << "n=" << n;
    }
  }
  if (act_type() == TensorType::kF16 || act_type() == TensorType::kBF16) {
    // NaN and infinity keep their class (and NaN its quiet payload) as in fp16.h.
    std::vector<float> special = {std::numeric_limits<float>::quiet_NaN(),
                                  -std::numeric_limits<float>::infinity(),
                                  std::numeric_limits<float>::infinity(),
                                  -0.0f,
                                  65520.0f,
                                  1e-8f,
                                  5.9604645e-08f,
                                  3.0e38f,
                                  -1.0e-40f};
    special.resize(24, 0.25f);
    const auto expected = Under(Isa::kScalar, [&] { return ActivationRow(type(), special); });
    const auto actual = Under(isa(), [&] { return ActivationRow(type(), special); });
    EXPECT_EQ(expected, actual);
  }
}

TEST_P(IsaTypeTest, VecDotMatchesScalarBitForBit) {
  // Every ISA follows the one float order quants.h defines, so a request's output does not depend
  // on the CPU it runs on (with MatMulRowsEqualsVecDotPerElement: nor on its batch).
  for (int64_t n : TestLengths(type())) {
    for (const auto& w : WeightRows(rng_, type(), n)) {
      for (const auto& input : ActivationInputs(rng_, n)) {
        const auto a = Under(isa(), [&] { return ActivationRow(type(), input); });
        const float expected =
            Under(Isa::kScalar, [&] { return VecDot(type(), n, w.data(), a.data()); });
        const float actual = Under(isa(), [&] { return VecDot(type(), n, w.data(), a.data()); });
        ASSERT_TRUE(std::isfinite(expected));
        ASSERT_EQ(FloatBits(actual), FloatBits(expected))
            << "n=" << n << ": " << actual << " against the scalar " << expected;
      }
    }
  }
}

TEST_P(IsaTypeTest, VecDotMatchesFloatDotOfDequantizedRows) {
  // Against sum_i w_i * x_i in double with w dequantized and x the unquantized activations: the
  // only differences are the activation rounding (bounded per element by |w_i| * |x_i - a_i|,
  // a_i the dequantized activation) and float reordering.
  for (int64_t n : TestLengths(type())) {
    const std::vector<float> x = RandomFloats(rng_, n);
    for (const auto& w : WeightRows(rng_, type(), n)) {
      ScopedIsa scoped(isa());
      const auto a = ActivationRow(type(), x);
      const std::vector<float> wf = Dequantized(type(), w.data(), n);
      const std::vector<float> af = Dequantized(act_type(), a.data(), n);
      double reference = 0.0, quantization_error = 0.0, scale = 0.0;
      for (size_t i = 0; i < x.size(); ++i) {
        reference += static_cast<double>(wf[i]) * x[i];
        quantization_error +=
            std::fabs(static_cast<double>(wf[i])) * std::fabs(static_cast<double>(x[i]) - af[i]);
        scale += std::fabs(static_cast<double>(wf[i]) * x[i]);
      }
      // The activation rounding itself must stay small for the check to mean anything: 8-bit
      // blocks lose a few percent at most (less than 1/254 of each block's largest value per
      // element), halves far less.
      EXPECT_LE(quantization_error, 0.05 * scale + 1e-30) << "n=" << n;
      const float actual = VecDot(type(), n, w.data(), a.data());
      const double tolerance =
          quantization_error + ReorderTolerance(type(), n, DotMagnitude(type(), w, a, n));
      ASSERT_NEAR(actual, reference, tolerance) << "n=" << n;
    }
  }
}

TEST_P(IsaTypeTest, MatMulRowsEqualsVecDotPerElement) {
  ScopedIsa scoped(isa());
  // Batch sizes around every lane grouping of the kernels (groups of 2, 4, 8 and 16 activation
  // rows and their remainders); for 256-element blocks also a row longer than the 16 super-blocks
  // a kernel interleaves at a time.
  std::vector<int64_t> lengths = {Traits(type()).block_size == 1 ? 200 : 512};
  if (Traits(type()).block_size == 256) lengths.push_back(18 * 256);
  for (const int64_t n : lengths) {
    const int64_t rows = 37;
    const size_t row_bytes = Bytes(type(), n);
    const size_t act_bytes = Bytes(act_type(), n);
    const size_t w_stride = row_bytes + 6;  // padded rows: strides are not multiples of blocks
    const size_t x_stride = act_bytes + 10;
    std::vector<uint8_t> w(w_stride * rows);
    // Some rows and activations at the extremes (every quant 0xFF or 0x80 with unit scales;
    // activations of one sign, which quantize to -128 for Q8_K): the products keep partial sums in
    // 16 bits where the bound allows, so an overflow would show here as a difference from VecDot.
    const std::vector<std::vector<uint8_t>> extremes = WeightRows(rng_, type(), n);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<uint8_t> row;
      if (r % 5 == 4) {
        row = extremes[static_cast<size_t>(r / 5) % extremes.size()];
      } else {
        row = r % 2 ? RandomRawRow(rng_, type(), n) : QuantizedRow(type(), RandomFloats(rng_, n));
      }
      std::memcpy(w.data() + r * w_stride, row.data(), row_bytes);
    }
    const int64_t max_m = 35;
    std::vector<uint8_t> x(x_stride * max_m);
    for (int64_t i = 0; i < max_m; ++i) {
      std::vector<float> input = RandomFloats(rng_, n);
      if (i % 4 == 1) input.assign(input.size(), i % 8 == 1 ? 1.0f : -1.0f);
      const auto a = ActivationRow(type(), input);
      std::memcpy(x.data() + i * x_stride, a.data(), act_bytes);
    }
    const float sentinel = -12345.0f;
    for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 24, 35}) {
      for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, rows}, {3, 34}, {5, 6}, {16, 32}}) {
        const int64_t y_stride = rows + 3;
        std::vector<float> y(static_cast<size_t>(y_stride * m), sentinel);
        MatMulRows(type(), n, w.data(), w_stride, begin, end, x.data(), x_stride, m, y.data(),
                   y_stride);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t r = 0; r < y_stride; ++r) {
            const float got = y[static_cast<size_t>(i * y_stride + r)];
            if (r < begin || r >= end) {
              ASSERT_EQ(got, sentinel) << "wrote outside the row range: m=" << m << " r=" << r;
              continue;
            }
            const float expected =
                VecDot(type(), n, w.data() + r * w_stride, x.data() + i * x_stride);
            ASSERT_EQ(FloatBits(got), FloatBits(expected))
                << "n=" << n << " m=" << m << " i=" << i << " r=" << r;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsasAllTypes, IsaTypeTest,
                         ::testing::Combine(::testing::ValuesIn(testing::AllIsas()),
                                            ::testing::ValuesIn(testing::WeightTypes())),
                         [](const ::testing::TestParamInfo<std::tuple<Isa, TensorType>>& info) {
                           return testing::IsaTypeName(std::get<0>(info.param),
                                                       std::get<1>(info.param));
                         });

}  // namespace
}  // namespace airlock::inference::kernels
