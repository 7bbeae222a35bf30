// SoftmaxExp (the portable exp the sampler uses) against the double-precision std::exp reference.
#include "inference/sampling/softmax_exp.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace airlock::inference {
namespace {

TEST(SoftmaxExpTest, ExactPoints) {
  EXPECT_EQ(SoftmaxExp(0.0f), 1.0f);
  EXPECT_EQ(SoftmaxExp(-0.0f), 1.0f);
  EXPECT_EQ(SoftmaxExp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(SoftmaxExp(std::numeric_limits<float>::lowest()), 0.0f);
  EXPECT_EQ(SoftmaxExp(-87.5f), 0.0f);
  EXPECT_GT(SoftmaxExp(kSoftmaxExpFloor), 0.0f);
}

TEST(SoftmaxExpTest, WithinFourUlpOfReferenceOverTheWholeRange) {
  // 2^-21 relative is 4 ulp at the bottom of a binade.
  const double tolerance = std::ldexp(1.0, -21);
  double worst = 0.0;
  float worst_x = 0.0f;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = kSoftmaxExpFloor * static_cast<float>(i) / 2000000.0f;
    const double reference = std::exp(static_cast<double>(x));
    const double error = std::abs(SoftmaxExp(x) - reference) / reference;
    if (error > worst) {
      worst = error;
      worst_x = x;
    }
  }
  EXPECT_LE(worst, tolerance) << "at x = " << worst_x;
}

TEST(SoftmaxExpTest, MonotonicNearZero) {
  float previous = SoftmaxExp(0.0f);
  for (float x = -1e-6f; x > -20.0f; x = std::nextafter(x * 1.001f, -100.0f)) {
    const float value = SoftmaxExp(x);
    ASSERT_LE(value, previous) << x;
    previous = value;
  }
}

}  // namespace
}  // namespace airlock::inference
