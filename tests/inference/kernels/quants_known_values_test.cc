// Hand-computed blocks: dequantized values, activation quantization (including rounding ties) and
// dot products worked out on paper from the ggml block definitions, checked under every ISA.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "inference/base/fp16.h"
#include "inference/kernels/block_formats.h"
#include "inference/kernels/quants.h"
#include "tests/inference/kernels/kernel_test_util.h"

namespace airlock::inference::kernels {
namespace {

using testing::ScopedIsa;

constexpr uint16_t kHalfOne = 0x3C00;      // 1.0
constexpr uint16_t kHalfTwo = 0x4000;      // 2.0
constexpr uint16_t kHalfHalf = 0x3800;     // 0.5
constexpr uint16_t kHalfQuarter = 0x3400;  // 0.25

class KnownValuesTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << IsaName(GetParam()) << " not supported here";
    isa_.emplace(GetParam());
  }
  std::optional<ScopedIsa> isa_;
};

TEST_P(KnownValuesTest, Q8_0Dequantize) {
  BlockQ8_0 b{};
  b.d = kHalfHalf;
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
  b.qs[0] = -128;
  b.qs[31] = 127;
  float out[32];
  DequantizeRow(TensorType::kQ8_0, &b, out, 32);
  EXPECT_EQ(out[0], -64.0f);
  EXPECT_EQ(out[1], -7.5f);
  EXPECT_EQ(out[16], 0.0f);
  EXPECT_EQ(out[20], 2.0f);
  EXPECT_EQ(out[31], 63.5f);
}

TEST_P(KnownValuesTest, Q4_0Dequantize) {
  BlockQ4_0 b{};
  b.d = kHalfTwo;
  b.qs[0] = 0x1F;  // element 0: 15 - 8 = 7, element 16: 1 - 8 = -7
  b.qs[5] = 0x80;  // element 5: 0 - 8 = -8, element 21: 8 - 8 = 0
  for (int j = 1; j < 16; ++j) {
    if (j != 5) b.qs[j] = 0x88;  // both nibbles 8: zero
  }
  float out[32];
  DequantizeRow(TensorType::kQ4_0, &b, out, 32);
  EXPECT_EQ(out[0], 14.0f);
  EXPECT_EQ(out[16], -14.0f);
  EXPECT_EQ(out[5], -16.0f);
  EXPECT_EQ(out[21], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
}

TEST_P(KnownValuesTest, Q4_0QuantizeExactGrid) {
  // Values on the grid (q - 8) * d: the extreme is -8, so d = max / -8 = 1 and every value is
  // representable exactly.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j % 16) - 8);
  BlockQ4_0 b;
  QuantizeRow(TensorType::kQ4_0, x.data(), &b, 32);
  EXPECT_EQ(b.d, kHalfOne);
  EXPECT_EQ(b.qs[0], 0x00);   // -8 -> q 0 in both nibbles
  EXPECT_EQ(b.qs[15], 0xFF);  // 7 -> q 15
  float out[32];
  DequantizeRow(TensorType::kQ4_0, &b, out, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], x[j]) << j;
}

TEST_P(KnownValuesTest, Q4_KDequantize) {
  BlockQ4_K b{};
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  // Sub-block 0: scale 1, min 2. Sub-block 5: scale 33 = 0b100001, min 17 = 0b010001, whose low
  // four bits live in byte 9 and top two bits in the spare bits of bytes 1 (scale) and 5 (min).
  b.scales[0] = 1;
  b.scales[4] = 2;
  b.scales[9] = (33 & 0xF) | ((17 & 0xF) << 4);
  b.scales[1] = static_cast<uint8_t>((33 >> 4) << 6);
  b.scales[5] = static_cast<uint8_t>((17 >> 4) << 6);
  b.qs[0] = 0x03;       // element 0 (sub-block 0): q = 3
  b.qs[64 + 3] = 0x30;  // element 128 + 32 + 3 = 163 (sub-block 5, high nibble of byte 67): q = 3
  float out[256];
  DequantizeRow(TensorType::kQ4_K, &b, out, 256);
  EXPECT_EQ(out[0], 1.0f * 1 * 3 - 0.5f * 2);      // 2
  EXPECT_EQ(out[1], -1.0f);                        // q = 0: just the min
  EXPECT_EQ(out[163], 1.0f * 33 * 3 - 0.5f * 17);  // 90.5
  EXPECT_EQ(out[160], -8.5f);
  EXPECT_EQ(out[32], 0.0f);  // sub-block 1: scale 0, min 0
}

TEST_P(KnownValuesTest, Q8_0ActivationRoundsHalfToEven) {
  // amax = 127 gives d = 1 and 127/amax = 1, so x * 1 = x and the halves are exact ties, which
  // llama.cpp's x86 quantizer (_mm256_round_ps, nearest) sends to the even neighbour.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.5f;
  x[4] = -0.5f;
  x[5] = 1.5f;
  x[6] = 0.49999997f;
  BlockQ8_1 b1;
  BlockQ8_0 b0;
  QuantizeActivationRow(TensorType::kQ8_0, x.data(), &b0, 32);
  QuantizeActivationRow(TensorType::kQ8_1, x.data(), &b1, 32);
  for (const int8_t* qs : {b0.qs, b1.qs}) {
    EXPECT_EQ(qs[0], 127);
    EXPECT_EQ(qs[1], 2);
    EXPECT_EQ(qs[2], -2);
    EXPECT_EQ(qs[3], 0);
    EXPECT_EQ(qs[4], 0);
    EXPECT_EQ(qs[5], 2);
    EXPECT_EQ(qs[6], 0);
  }
  EXPECT_EQ(b0.d, kHalfOne);
  EXPECT_EQ(b1.d, kHalfOne);
  EXPECT_EQ(F16ToF32(b1.s), 127.0f + 2 - 2 + 0 - 0 + 2);
}

TEST_P(KnownValuesTest, Q8_KActivationUsesSignedMaxAndTiesToEven) {
  std::vector<float> x(256, 0.0f);
  x[0] = 127.0f;   // largest magnitude, positive: iscale = -127 / 127 = -1, d = -1
  x[1] = 2.5f;     // -2.5 -> -2 (even)
  x[2] = -0.5f;    // 0.5 -> 0
  x[3] = 1.5f;     // -1.5 -> -2
  x[4] = -127.0f;  // same magnitude, later: does not decide the sign; -> 127
  x[17] = 3.0f;
  BlockQ8_K b;
  QuantizeActivationRow(TensorType::kQ8_K, x.data(), &b, 256);
  EXPECT_EQ(b.d, -1.0f);
  EXPECT_EQ(b.qs[0], -127);
  EXPECT_EQ(b.qs[1], -2);
  EXPECT_EQ(b.qs[2], 0);
  EXPECT_EQ(b.qs[3], -2);
  EXPECT_EQ(b.qs[4], 127);
  EXPECT_EQ(b.qs[17], -3);
  EXPECT_EQ(b.bsums[0], -127 - 2 + 0 - 2 + 127);
  EXPECT_EQ(b.bsums[1], -3);
  for (int g = 2; g < 16; ++g) EXPECT_EQ(b.bsums[g], 0);
}

TEST_P(KnownValuesTest, Q8_KActivationOfZerosIsAllZero) {
  std::vector<float> x(512, 0.0f);
  x[300] = -1.0f;  // the second block is not zero
  std::vector<BlockQ8_K> b(2);
  std::memset(b.data(), 0x5A, b.size() * sizeof(BlockQ8_K));
  QuantizeActivationRow(TensorType::kQ8_K, x.data(), b.data(), 512);
  const std::vector<uint8_t> zero(sizeof(BlockQ8_K), 0);
  EXPECT_EQ(std::memcmp(&b[0], zero.data(), sizeof(BlockQ8_K)), 0);
  EXPECT_EQ(b[1].d, 1.0f / 127.0f);
  EXPECT_EQ(b[1].qs[300 - 256], -127);
}

TEST_P(KnownValuesTest, Q8_0VecDot) {
  BlockQ8_0 w{}, a{};
  w.d = kHalfHalf;
  a.d = kHalfQuarter;
  for (int j = 0; j < 32; ++j) {
    w.qs[j] = 2;
    a.qs[j] = static_cast<int8_t>(j % 2 == 0 ? 3 : -1);
  }
  // sum q_w * q_a = 16 * 6 - 16 * 2 = 64; times 0.5 * 0.25.
  EXPECT_EQ(VecDot(TensorType::kQ8_0, 32, &w, &a), 8.0f);
}

TEST_P(KnownValuesTest, Q4_0VecDot) {
  BlockQ4_0 w{};
  w.d = kHalfTwo;
  for (int j = 0; j < 16; ++j) w.qs[j] = 0x9F;  // elements 0-15: 15 - 8 = 7; 16-31: 9 - 8 = 1
  BlockQ8_0 a{};
  a.d = kHalfHalf;
  for (int j = 0; j < 32; ++j) a.qs[j] = static_cast<int8_t>(j < 16 ? 1 : -2);
  // 16 * 7 * 1 + 16 * 1 * -2 = 80; times 2 * 0.5.
  EXPECT_EQ(VecDot(TensorType::kQ4_0, 32, &w, &a), 80.0f);
}

TEST_P(KnownValuesTest, Q4_KVecDot) {
  BlockQ4_K w{};
  w.d = kHalfOne;
  w.dmin = kHalfHalf;
  w.scales[0] = 3;  // sub-block 0: scale 3, min 4
  w.scales[4] = 4;
  for (int l = 0; l < 32; ++l) w.qs[l] = 0x02;  // sub-block 0: q = 2; sub-block 1 (high nibbles): 0
  BlockQ8_K a{};
  a.d = 0.5f;
  for (int i = 0; i < 256; ++i) a.qs[i] = 1;
  for (int g = 0; g < 16; ++g) a.bsums[g] = 16;
  // d * sc * sum(q * a) - dmin * m * sum(a) over sub-block 0, scaled by a.d:
  // (1 * 3 * 64 - 0.5 * 4 * 32) * 0.5 = (192 - 64) * 0.5 = 64.
  EXPECT_EQ(VecDot(TensorType::kQ4_K, 256, &w, &a), 64.0f);
}

TEST_P(KnownValuesTest, Q6_KVecDot) {
  BlockQ6_K w{};
  w.d = kHalfHalf;
  w.scales[0] = -2;
  w.scales[15] = 5;
  // All quants 32 (zero after the offset) except element 0 (q = 63 -> 31) and element 255
  // (q = 0 -> -32). 32 = low nibble 0, high bits 0b10.
  std::memset(w.qh, 0xAA, sizeof w.qh);
  w.ql[0] = 0x0F;                                            // element 0: low nibble 15
  w.qh[0] = static_cast<uint8_t>((w.qh[0] & ~0x03) | 0x03);  // element 0: high bits 0b11 -> 63
  w.qh[63] =
      static_cast<uint8_t>(w.qh[63] & 0x3F);  // element 255: quarter 3 of half 1, l = 31 -> 0
  BlockQ8_K a{};
  a.d = 0.25f;
  a.qs[0] = 10;
  a.qs[255] = -3;
  a.bsums[0] = 10;
  a.bsums[15] = -3;
  // 0.5 * 0.25 * (-2 * 31 * 10 + 5 * -32 * -3) = 0.125 * (-620 + 480) = -17.5
  EXPECT_EQ(VecDot(TensorType::kQ6_K, 256, &w, &a), -17.5f);
}

TEST_P(KnownValuesTest, F16VecDotBothHalf) {
  std::vector<uint16_t> k(70), q(70);
  for (int i = 0; i < 70; ++i) {
    k[i] = F32ToF16(static_cast<float>(i % 5) - 2.0f);
    q[i] = F32ToF16(0.5f);
  }
  // sum of (i % 5 - 2) over 70 values = 0; add one distinctive term.
  k[69] = F32ToF16(8.0f);  // was 69 % 5 - 2 = 2
  EXPECT_EQ(VecDot(TensorType::kF16, 70, k.data(), q.data()), 3.0f);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, KnownValuesTest, ::testing::ValuesIn(testing::AllIsas()),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return IsaName(info.param);
                         });

TEST(ActivationTypeTest, MatchesGgmlVecDotTypes) {
  EXPECT_EQ(ActivationType(TensorType::kF32), TensorType::kF32);
  EXPECT_EQ(ActivationType(TensorType::kF16), TensorType::kF16);
  EXPECT_EQ(ActivationType(TensorType::kBF16), TensorType::kBF16);
  EXPECT_EQ(ActivationType(TensorType::kQ4_0), TensorType::kQ8_0);
  EXPECT_EQ(ActivationType(TensorType::kQ5_0), TensorType::kQ8_0);
  EXPECT_EQ(ActivationType(TensorType::kQ8_0), TensorType::kQ8_0);
  EXPECT_EQ(ActivationType(TensorType::kQ4_1), TensorType::kQ8_1);
  EXPECT_EQ(ActivationType(TensorType::kQ5_1), TensorType::kQ8_1);
  EXPECT_EQ(ActivationType(TensorType::kQ4_K), TensorType::kQ8_K);
  EXPECT_EQ(ActivationType(TensorType::kQ5_K), TensorType::kQ8_K);
  EXPECT_EQ(ActivationType(TensorType::kQ6_K), TensorType::kQ8_K);
}

TEST(IsaTest, DefaultIsTheBestSupported) {
  EXPECT_EQ(ActiveIsa(), BestSupportedIsa());
  EXPECT_TRUE(IsaSupported(Isa::kScalar));
  EXPECT_TRUE(IsaSupported(BestSupportedIsa()));
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    EXPECT_NE(BestSupportedIsa(), Isa::kScalar);
  }
}

}  // namespace
}  // namespace airlock::inference::kernels
