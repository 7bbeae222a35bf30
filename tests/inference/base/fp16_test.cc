// F16/BF16 conversions: exhaustive round trips and round-to-nearest-even on ties.
#include "inference/base/fp16.h"

#include <cmath>
#include <cstdint>

#include <gtest/gtest.h>

namespace airlock {
namespace {

TEST(Fp16Test, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f)))) << h;
      continue;
    }
    EXPECT_EQ(F32ToF16(f), h) << "half bits " << h;
  }
}

TEST(Fp16Test, KnownValues) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // halfway to the next binade rounds to inf (even)
  EXPECT_EQ(F32ToF16(1e-8f), 0x0000);     // below half the smallest subnormal
  EXPECT_EQ(F32ToF16(5.960464477539063e-08f), 0x0001);
  EXPECT_FLOAT_EQ(F16ToF32(0x3555), 0.333251953125f);
}

TEST(Fp16Test, TiesRoundToEven) {
  // 1 + 2^-11 lies exactly between 1 and 1 + 2^-10: the even neighbour (1.0) wins.
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3*2^-11 lies between 1+2^-10 (odd) and 1+2^-9 (even).
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

TEST(Bf16Test, RoundTripAndRounding) {
  for (uint32_t h = 0; h < 65536; h += 7) {
    const float f = Bf16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToBf16(f), h);
  }
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::nanf("")))));
}

}  // namespace
}  // namespace airlock
