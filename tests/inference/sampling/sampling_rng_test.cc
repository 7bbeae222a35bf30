// The sampler's PRNG against the published splitmix64 / xoshiro256** outputs, so that a seed
// means the same stream on every platform.
#include "inference/sampling/sampling_rng.h"

#include <cstdint>

#include <gtest/gtest.h>

namespace airlock::inference {
namespace {

TEST(SamplingRngTest, SplitMix64KnownAnswers) {
  uint64_t state = 0;
  EXPECT_EQ(SplitMix64(state), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(SplitMix64(state), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(SplitMix64(state), 0x06c45d188009454fULL);
}

TEST(SamplingRngTest, Xoshiro256StarStarKnownAnswers) {
  SamplingRng rng = SamplingRng::FromState({1, 2, 3, 4});
  EXPECT_EQ(rng.Next(), 11520u);
  EXPECT_EQ(rng.Next(), 0u);
  EXPECT_EQ(rng.Next(), 1509978240u);
  EXPECT_EQ(rng.Next(), 1215971899390074240u);
}

TEST(SamplingRngTest, SeedingIsSplitMixExpansion) {
  uint64_t sm = 7;
  const uint64_t s0 = SplitMix64(sm), s1 = SplitMix64(sm), s2 = SplitMix64(sm), s3 = SplitMix64(sm);
  SamplingRng seeded(7);
  SamplingRng raw = SamplingRng::FromState({s0, s1, s2, s3});
  for (int i = 0; i < 100; ++i) ASSERT_EQ(seeded.Next(), raw.Next());
}

TEST(SamplingRngTest, ReseedRestartsTheStream) {
  SamplingRng rng(123);
  const uint64_t first = rng.Next();
  rng.Next();
  rng.Seed(123);
  EXPECT_EQ(rng.Next(), first);
}

TEST(SamplingRngTest, NextDoubleIsInUnitIntervalAndUniform) {
  SamplingRng rng(0);
  double sum = 0.0;
  constexpr int kDraws = 200000;
  int below_tenth = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double u = rng.NextDouble();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    below_tenth += u < 0.1;
  }
  EXPECT_NEAR(sum / kDraws, 0.5, 0.005);
  EXPECT_NEAR(below_tenth / static_cast<double>(kDraws), 0.1, 0.005);
}

}  // namespace
}  // namespace airlock::inference
