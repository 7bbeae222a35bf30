// Scalar implementations of the CPU ops; the compiler vectorises the simple loops.
#include "inference/backend/cpu/ops.h"

#include <array>
#include <cmath>
#include <vector>

#include "inference/backend/cpu/ops_simd.h"
#include "inference/base/cpu_features.h"
#include "inference/base/fp16.h"

namespace airlock::inference::cpu {
namespace {

bool g_force_scalar = false;

const std::array<float, 65536>& F16Table() {
  static const auto* table = [] {
    auto* t = new std::array<float, 65536>();
    for (uint32_t i = 0; i < 65536; ++i) (*t)[i] = F16ToF32(static_cast<uint16_t>(i));
    return t;
  }();
  return *table;
}

bool UseAvx2() {
  static const bool has = CpuHasAvx2Fma();
  return has && !g_force_scalar;
}

}  // namespace

void ForceScalarOpsForTesting(bool scalar) { g_force_scalar = scalar; }

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const double mean = sum / static_cast<double>(n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(mean + static_cast<double>(eps)));
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * weight[i];
}

void RopeCache(int32_t pos, int32_t n_rot, float freq_base, float freq_scale,
               const float* freq_factors, float* cos_sin, float attn_factor) {
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(n_rot));
  float theta = static_cast<float>(pos);
  for (int32_t i = 0; i < n_rot / 2; ++i) {
    const float factor = freq_factors != nullptr ? freq_factors[i] : 1.0f;
    const float angle = freq_scale * (theta / factor);
    cos_sin[2 * i] = std::cos(angle) * attn_factor;
    cos_sin[2 * i + 1] = std::sin(angle) * attn_factor;
    theta *= theta_scale;
  }
}

void ApplyRope(float* head, int32_t n_rot, const float* cos_sin, bool neox) {
  const int32_t half = n_rot / 2;
  for (int32_t i = 0; i < half; ++i) {
    const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
    float* a = neox ? &head[i] : &head[2 * i];
    float* b = neox ? &head[i + half] : &head[2 * i + 1];
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
  }
}

void ScaledSoftmax(float* s, int64_t n, float scale) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    s[i] *= scale;
    max = std::max(max, s[i]);
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(s[i] - max);
    s[i] = e;
    sum += static_cast<double>(e);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) s[i] *= inv;
}

void SwiGlu(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

namespace {

// GELU of every F16 value, rounded to F16: built once, 128 KiB.
const std::vector<uint16_t>& GeluF16Table() {
  static const std::vector<uint16_t>* const table = [] {
    auto* t = new std::vector<uint16_t>(1 << 16);
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    constexpr float kCoefA = 0.044715f;
    for (uint32_t h = 0; h < (1u << 16); ++h) {
      const float x = F16ToF32(static_cast<uint16_t>(h));
      const float g = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x)));
      (*t)[h] = F32ToF16(g);
    }
    return t;
  }();
  return *table;
}

}  // namespace

void GeGlu(const float* gate, const float* up, float* out, int64_t n) {
  const std::vector<uint16_t>& table = GeluF16Table();
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    float g;
    if (x <= -10.0f) {
      g = 0.0f;
    } else if (x >= 10.0f) {
      g = x;
    } else {
      g = F16ToF32(table[F32ToF16(x)]);
    }
    out[i] = g * up[i];
  }
}

void F16ToF32Row(const uint16_t* src, float* dst, int64_t n) {
  if (UseAvx2()) {
    avx2::F16ToF32Row(src, dst, n);
    return;
  }

  const auto& table = F16Table();
  for (int64_t i = 0; i < n; ++i) dst[i] = table[src[i]];
}

void F32ToF16Row(const float* src, uint16_t* dst, int64_t n) {
  if (UseAvx2()) {
    avx2::F32ToF16Row(src, dst, n);
    return;
  }

  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToF16(src[i]);
}

// The scalar dots and axpys repeat the AVX2 versions' arithmetic (ops_avx2.cc) operation for
// operation: two accumulators of eight lanes over 16 elements, one more step of eight into the
// first, the lanes added in the same tree, the rest added one by one, every multiply-add fused.
// So attention gives the same bits on every CPU, with or without AVX2.
template <typename T, float (*kWiden)(T)>
float DotLanes(const T* a, const T* b, int64_t n) {
  float acc0[8] = {}, acc1[8] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 8; ++k) {
      acc0[k] = std::fma(kWiden(a[i + k]), kWiden(b[i + k]), acc0[k]);
      acc1[k] = std::fma(kWiden(a[i + 8 + k]), kWiden(b[i + 8 + k]), acc1[k]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc0[k] = std::fma(kWiden(a[i + k]), kWiden(b[i + k]), acc0[k]);
  }
  float v[8], s[4];
  for (int k = 0; k < 8; ++k) v[k] = acc0[k] + acc1[k];
  for (int k = 0; k < 4; ++k) s[k] = v[k] + v[k + 4];
  float sum = (s[0] + s[2]) + (s[1] + s[3]);
  for (; i < n; ++i) sum = std::fma(kWiden(a[i]), kWiden(b[i]), sum);
  return sum;
}

float WidenF32(float x) { return x; }
float WidenF16(uint16_t h) { return F16Table()[h]; }

float DotF32(const float* a, const float* b, int64_t n) {
  if (UseAvx2()) return avx2::DotF32(a, b, n);
  return DotLanes<float, WidenF32>(a, b, n);
}

float DotF16(const uint16_t* a, const uint16_t* b, int64_t n) {
  if (UseAvx2()) return avx2::DotF16(a, b, n);
  return DotLanes<uint16_t, WidenF16>(a, b, n);
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  if (UseAvx2()) {
    avx2::AxpyF32(a, x, y, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

void AxpyF16(float a, const uint16_t* x, float* y, int64_t n) {
  if (UseAvx2()) {
    avx2::AxpyF16(a, x, y, n);
    return;
  }
  const auto& table = F16Table();
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(a, table[x[i]], y[i]);
}

void DotF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const uint16_t* const* q, int32_t n_q,
                int64_t hd, float* const* scores) {
  if (UseAvx2()) {
    avx2::DotF16Rows(rows, stride, n_pos, q, n_q, hd, scores);
    return;
  }
  for (int32_t p = 0; p < n_pos; ++p) {
    for (int32_t j = 0; j < n_q; ++j) scores[j][p] = DotF16(rows + p * stride, q[j], hd);
  }
}

void DotF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* q, int32_t n_q, int64_t hd,
                float* const* scores) {
  if (UseAvx2()) {
    avx2::DotF32Rows(rows, stride, n_pos, q, n_q, hd, scores);
    return;
  }
  for (int32_t p = 0; p < n_pos; ++p) {
    for (int32_t j = 0; j < n_q; ++j) scores[j][p] = DotF32(rows + p * stride, q[j], hd);
  }
}

void AxpyF16Rows(const uint16_t* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q,
                 int64_t hd, float* const* y) {
  if (UseAvx2()) {
    avx2::AxpyF16Rows(rows, stride, n_pos, w, n_q, hd, y);
    return;
  }
  for (int32_t p = 0; p < n_pos; ++p) {
    for (int32_t j = 0; j < n_q; ++j) AxpyF16(w[j][p], rows + p * stride, y[j], hd);
  }
}

void AxpyF32Rows(const float* rows, size_t stride, int32_t n_pos, const float* const* w, int32_t n_q, int64_t hd,
                 float* const* y) {
  if (UseAvx2()) {
    avx2::AxpyF32Rows(rows, stride, n_pos, w, n_q, hd, y);
    return;
  }
  for (int32_t p = 0; p < n_pos; ++p) {
    for (int32_t j = 0; j < n_q; ++j) AxpyF32(w[j][p], rows + p * stride, y[j], hd);
  }
}

}  // namespace airlock::inference::cpu
