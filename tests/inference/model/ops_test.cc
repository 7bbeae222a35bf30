// CPU ops: SIMD variants against the scalar ones, and the scalar ones against double-precision
// definitions (RMSNorm, RoPE, softmax, SwiGLU).
#include "inference/backend/cpu/ops.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "inference/base/fp16.h"

namespace airlock::inference::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<uint16_t> ToF16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = F32ToF16(v[i]);
  return h;
}

class OpsIsaTest : public ::testing::Test {
 protected:
  void TearDown() override { ForceScalarOpsForTesting(false); }
};

TEST_F(OpsIsaTest, SimdMatchesScalarBitForBit) {
  for (int64_t n : {1, 7, 8, 15, 16, 64, 100, 128}) {
    const std::vector<float> a = Random(n, 1), b = Random(n, 2);
    const std::vector<uint16_t> ha = ToF16(a), hb = ToF16(b);
    std::vector<float> y_simd = Random(n, 3), y_scalar = y_simd;
    std::vector<uint16_t> h_simd(n), h_scalar(n);
    std::vector<float> f_simd(n), f_scalar(n);

    ForceScalarOpsForTesting(true);
    const float dot32 = DotF32(a.data(), b.data(), n);
    const float dot16 = DotF16(ha.data(), hb.data(), n);
    AxpyF32(0.5f, a.data(), y_scalar.data(), n);
    AxpyF16(-1.25f, ha.data(), y_scalar.data(), n);
    F32ToF16Row(a.data(), h_scalar.data(), n);
    F16ToF32Row(hb.data(), f_scalar.data(), n);
    ForceScalarOpsForTesting(false);
    // The same bits with and without AVX2: the scalar loops repeat the SIMD order.
    EXPECT_EQ(FloatBits(DotF32(a.data(), b.data(), n)), FloatBits(dot32)) << n;
    EXPECT_EQ(FloatBits(DotF16(ha.data(), hb.data(), n)), FloatBits(dot16)) << n;
    AxpyF32(0.5f, a.data(), y_simd.data(), n);
    AxpyF16(-1.25f, ha.data(), y_simd.data(), n);
    F32ToF16Row(a.data(), h_simd.data(), n);
    F16ToF32Row(hb.data(), f_simd.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(FloatBits(y_simd[i]), FloatBits(y_scalar[i])) << n;
      EXPECT_EQ(h_simd[i], h_scalar[i]) << n;  // both round to nearest even
      EXPECT_EQ(f_simd[i], f_scalar[i]) << n;
    }
  }
}

// The attention loops over a block of rows for several heads must give, bit for bit, what the
// single-row functions give position by position (on each ISA path): the forward pass relies on it
// for outputs that do not depend on how positions are grouped.
TEST_F(OpsIsaTest, RowFunctionsEqualTheSingleRowOnesBitForBit) {
  for (bool scalar : {false, true}) {
    ForceScalarOpsForTesting(scalar);
    for (int64_t hd : {8, 16, 24, 64, 100, 128, 256, 264}) {
      for (int32_t n_q : {1, 2, 3, 4, 5, 8}) {
        SCOPED_TRACE(::testing::Message() << "scalar " << scalar << " hd " << hd << " heads " << n_q);
        const int32_t n_pos = 13;
        const size_t stride = static_cast<size_t>(hd) * 3 + 5;  // rows of a wider KV row
        const std::vector<float> rows = Random(stride * n_pos, 11);
        const std::vector<uint16_t> rows16 = ToF16(rows);
        std::vector<std::vector<float>> q(n_q), w(n_q), y_one(n_q), y_rows(n_q), s_one(n_q), s_rows(n_q);
        std::vector<std::vector<uint16_t>> q16(n_q);
        for (int32_t j = 0; j < n_q; ++j) {
          q[j] = Random(static_cast<size_t>(hd), 20 + j);
          q16[j] = ToF16(q[j]);
          w[j] = Random(n_pos, 40 + j, 0.3f);
          y_one[j] = Random(static_cast<size_t>(hd), 60 + j);
          y_rows[j] = y_one[j];
          s_one[j].resize(n_pos);
          s_rows[j].resize(n_pos);
        }
        std::vector<const float*> qp, wp;
        std::vector<const uint16_t*> q16p;
        std::vector<float*> yp, sp;
        for (int32_t j = 0; j < n_q; ++j) {
          qp.push_back(q[j].data());
          q16p.push_back(q16[j].data());
          wp.push_back(w[j].data());
          yp.push_back(y_rows[j].data());
          sp.push_back(s_rows[j].data());
        }
        for (bool f16 : {false, true}) {
          for (int32_t p = 0; p < n_pos; ++p) {
            for (int32_t j = 0; j < n_q; ++j) {
              s_one[j][p] = f16 ? DotF16(&rows16[p * stride], q16[j].data(), hd) : DotF32(&rows[p * stride], q[j].data(), hd);
              if (f16) {
                AxpyF16(w[j][p], &rows16[p * stride], y_one[j].data(), hd);
              } else {
                AxpyF32(w[j][p], &rows[p * stride], y_one[j].data(), hd);
              }
            }
          }
          if (f16) {
            DotF16Rows(rows16.data(), stride, n_pos, q16p.data(), n_q, hd, sp.data());
            AxpyF16Rows(rows16.data(), stride, n_pos, wp.data(), n_q, hd, yp.data());
          } else {
            DotF32Rows(rows.data(), stride, n_pos, qp.data(), n_q, hd, sp.data());
            AxpyF32Rows(rows.data(), stride, n_pos, wp.data(), n_q, hd, yp.data());
          }
          for (int32_t j = 0; j < n_q; ++j) {
            EXPECT_EQ(std::memcmp(s_one[j].data(), s_rows[j].data(), n_pos * sizeof(float)), 0) << "f16 " << f16;
            EXPECT_EQ(std::memcmp(y_one[j].data(), y_rows[j].data(), hd * sizeof(float)), 0) << "f16 " << f16;
          }
        }
      }
    }
  }
}

TEST(OpsTest, RmsNormMatchesDefinition) {
  const std::vector<float> x = Random(256, 4, 3.0f), w = Random(256, 5);
  std::vector<float> y(256);
  RmsNorm(x.data(), w.data(), y.data(), 256, 1e-5f);
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double scale = 1.0 / std::sqrt(ss / 256 + 1e-5);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(y[i], x[i] * scale * w[i], 1e-5);
}

TEST(OpsTest, RopeRotatesPairsByPositionAngle) {
  const int32_t n_rot = 8;
  std::vector<float> cs(n_rot);
  RopeCache(3, n_rot, 10000.0f, 1.0f, nullptr, cs.data());
  for (int i = 0; i < n_rot / 2; ++i) {
    const double angle = 3.0 * std::pow(10000.0, -2.0 * i / n_rot);
    EXPECT_NEAR(cs[2 * i], std::cos(angle), 1e-6);
    EXPECT_NEAR(cs[2 * i + 1], std::sin(angle), 1e-6);
  }
  std::vector<float> head = {1, 0, 0, 1, 1, 1, 2, 0};
  std::vector<float> neox = head;
  ApplyRope(head.data(), n_rot, cs.data(), false);
  // Pair 0 is (1, 0) rotated by 3 radians.
  EXPECT_NEAR(head[0], std::cos(3.0), 1e-6);
  EXPECT_NEAR(head[1], std::sin(3.0), 1e-6);
  // Rotation preserves each pair's length.
  EXPECT_NEAR(head[6] * head[6] + head[7] * head[7], 4.0, 1e-5);
  ApplyRope(neox.data(), n_rot, cs.data(), true);
  // Neox pairs element i with i + n_rot/2: (1, 1) for i = 0.
  EXPECT_NEAR(neox[0], std::cos(3.0) - std::sin(3.0), 1e-6);
  EXPECT_NEAR(neox[4], std::sin(3.0) + std::cos(3.0), 1e-6);
  // Frequency factors divide the angle (Llama 3.1 rope scaling).
  const std::vector<float> factors = {1, 2, 4, 8};
  std::vector<float> scaled(n_rot);
  RopeCache(3, n_rot, 10000.0f, 1.0f, factors.data(), scaled.data());
  EXPECT_NEAR(scaled[3], std::sin(3.0 * std::pow(10000.0, -2.0 / n_rot) / 2.0), 1e-6);
}

TEST(OpsTest, SoftmaxAndSwiGlu) {
  std::vector<float> s = {1.0f, 2.0f, 3.0f, -INFINITY};
  ScaledSoftmax(s.data(), 4, 0.5f);
  const double z = std::exp(0.5) + std::exp(1.0) + std::exp(1.5);
  EXPECT_NEAR(s[0], std::exp(0.5) / z, 1e-6);
  EXPECT_NEAR(s[2], std::exp(1.5) / z, 1e-6);
  EXPECT_EQ(s[3], 0.0f);
  const std::vector<float> g = {-2.0f, 0.0f, 3.0f}, u = {1.0f, 5.0f, 2.0f};
  std::vector<float> out(3);
  SwiGlu(g.data(), u.data(), out.data(), 3);
  EXPECT_NEAR(out[0], -2.0 / (1 + std::exp(2.0)), 1e-6);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_NEAR(out[2], 2 * 3.0 / (1 + std::exp(-3.0)), 1e-5);
}

// GeGlu evaluates GELU as llama.cpp's CPU backend does (gemma2's golden logits depend on it): on
// the input rounded to F16, the result rounded to F16; 0 at or below -10, the input at or above 10.
TEST(OpsTest, GeGluUsesF16ValuesLikeLlamaCpp) {
  const auto gelu = [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * x * (1 + 0.044715 * x * x))); };
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-12.0f, 12.0f);
  std::vector<float> g(4096), u(4096, 1.0f), out(4096);
  for (float& x : g) x = dist(rng);
  g[0] = -10.0f, g[1] = 10.0f, g[2] = -10.5f, g[3] = 10.5f, g[4] = 0.0f, g[5] = 1.0f;
  GeGlu(g.data(), u.data(), out.data(), static_cast<int64_t>(g.size()));
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 10.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 10.5f);
  EXPECT_EQ(out[4], 0.0f);
  EXPECT_EQ(out[5], F16ToF32(F32ToF16(static_cast<float>(gelu(1.0)))));
  int off_float = 0;
  for (size_t i = 6; i < g.size(); ++i) {
    if (std::fabs(g[i]) >= 10.0f) continue;
    // Exactly an F16 value, within F16 rounding of GELU at the F16-rounded input.
    EXPECT_EQ(out[i], F16ToF32(F32ToF16(out[i]))) << g[i];
    const double at_f16 = gelu(F16ToF32(F32ToF16(g[i])));
    EXPECT_NEAR(out[i], at_f16, std::fabs(at_f16) * 1e-3 + 1e-7) << g[i];
    if (out[i] != static_cast<float>(gelu(g[i]))) ++off_float;
  }
  EXPECT_GT(off_float, 1000);  // not a float GELU in disguise
  // The up projection multiplies the result.
  const float two = 2.0f, x = 1.0f;
  float y = 0.0f;
  GeGlu(&x, &two, &y, 1);
  EXPECT_EQ(y, 2.0f * out[5]);
}

}  // namespace
}  // namespace airlock::inference::cpu
