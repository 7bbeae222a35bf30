// Weight quantizers (float rows -> blocks) for synthetic model files and tests. The legacy formats
// follow ggml's reference quantizers; the K-quants use a short scale search per sub-block, which is
// simpler than ggml's importance-weighted search and within a few percent of its error.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "inference/base/fp16.h"
#include "inference/base/status.h"
#include "inference/base/tensor_type.h"
#include "inference/kernels/block_formats.h"
#include "inference/kernels/kernel_table.h"

namespace airlock::inference::kernels::internal {
namespace {

int NearestInt(float x) { return static_cast<int>(std::nearbyint(x)); }

// The value of largest magnitude with its sign (the first on ties), as ggml's legacy quantizers.
float SignedAbsMax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// --- Legacy 32-element formats ---

void QuantizeQ4_0(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ4_0*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* x = src + b * kQK;
    // The extreme value maps to -8, the one level that has no positive twin.
    const float d = SignedAbsMax(x, kQK) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = F32ToF16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      blocks[b].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void QuantizeQ4_1(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ4_1*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* x = src + b * kQK;
    const auto [lo, hi] = std::minmax_element(x, x + kQK);
    const float min = *lo;
    const float d = (*hi - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = F32ToF16(d);
    blocks[b].m = F32ToF16(min);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
      const int q1 =
          std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - min) * id + 0.5f)));
      blocks[b].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// Packs 32 five-bit values into a Q5 block's qs and qh.
void PackQ5(const int* q, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((q[j + 16] >> 4) & 1) << (j + 16);
  }
  std::memcpy(qh_bytes, &qh, sizeof qh);
}

void QuantizeQ5_0(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ5_0*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* x = src + b * kQK;
    const float d = SignedAbsMax(x, kQK) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = F32ToF16(d);
    int q[kQK];
    for (int j = 0; j < kQK; ++j)
      q[j] = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
    PackQ5(q, blocks[b].qs, blocks[b].qh);
  }
}

void QuantizeQ5_1(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ5_1*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* x = src + b * kQK;
    const auto [lo, hi] = std::minmax_element(x, x + kQK);
    const float min = *lo;
    const float d = (*hi - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = F32ToF16(d);
    blocks[b].m = F32ToF16(min);
    int q[kQK];
    for (int j = 0; j < kQK; ++j) q[j] = std::min(31, static_cast<int>((x[j] - min) * id + 0.5f));
    PackQ5(q, blocks[b].qs, blocks[b].qh);
  }
}

void QuantizeQ8_0(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ8_0*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* x = src + b * kQK;
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[b].d = F32ToF16(d);
    for (int j = 0; j < kQK; ++j) blocks[b].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
  }
}

// --- K-quants ---

// Fits x ~ scale * q - min over one sub-block (q in [0, nmax], min >= 0), trying a few stretch
// factors of the min/max grid and keeping the least-squares fit with the smallest error.
void FitScaleMin(const float* x, int n, int nmax, float* scale_out, float* min_out) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  lo = std::min(lo, 0.0f);  // the offset can only be subtracted
  if (hi <= lo) {
    *scale_out = 0.0f;
    *min_out = -lo;
    return;
  }
  float best_scale = (hi - lo) / static_cast<float>(nmax);
  float best_lo = lo;
  float best_err = INFINITY;
  for (int step = -10; step <= 10; ++step) {
    const float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / (hi - lo);
    double sl = 0, sll = 0, sx = 0, sxl = 0;
    int q[kQKK];
    for (int i = 0; i < n; ++i) {
      q[i] = std::clamp(NearestInt(iscale * (x[i] - lo)), 0, nmax);
      sl += q[i];
      sll += q[i] * q[i];
      sx += x[i];
      sxl += x[i] * q[i];
    }
    // Least squares for x = scale * q + offset, with the offset clamped to <= 0.
    const double det = n * sll - sl * sl;
    if (det <= 0) continue;
    double scale = (n * sxl - sl * sx) / det;
    double offset = (sll * sx - sl * sxl) / det;
    if (offset > 0) {
      offset = 0;
      scale = sxl / sll;
    }
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = scale * q[i] + offset - x[i];
      err += e * e;
    }
    if (err < best_err && scale > 0) {
      best_err = static_cast<float>(err);
      best_scale = static_cast<float>(scale);
      best_lo = static_cast<float>(offset);
    }
  }
  *scale_out = best_scale;
  *min_out = -best_lo;
}

// Packs eight 6-bit scales and mins the way UnpackScalesMinsK reads them.
void PackScalesMinsK(const int* ls, const int* lm, uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(ls[j] | ((ls[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>(lm[j] | ((lm[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4));
  }
}

// Q4_K (nmax 15) and Q5_K (nmax 31): eight sub-blocks with 6-bit scales and mins under fp16
// super-scales. Values are re-quantized against the stored (rounded) scales so that what the
// dequantizer reproduces is the best the block can express.
template <int kNmax, typename Block>
void QuantizeKQuant(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<Block*>(dst);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const float* x = src + b * kQKK;
    Block& out = blocks[b];
    std::memset(&out, 0, sizeof out);
    float scales[8], mins[8];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      FitScaleMin(x + 32 * j, 32, kNmax, &scales[j], &mins[j]);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    int ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
      ls[j] = std::min(63, NearestInt(inv_scale * scales[j]));
      lm[j] = std::min(63, NearestInt(inv_min * mins[j]));
    }
    PackScalesMinsK(ls, lm, out.scales);
    out.d = F32ToF16(max_scale / 63.0f);
    out.dmin = F32ToF16(max_min / 63.0f);
    const float d = F16ToF32(out.d);
    const float dmin = F16ToF32(out.dmin);
    for (int j = 0; j < 8; ++j) {
      const float scale = d * static_cast<float>(ls[j]);
      const float offset = dmin * static_cast<float>(lm[j]);
      for (int l = 0; l < 32; ++l) {
        const int i = 32 * j + l;
        const int q = scale > 0 ? std::clamp(NearestInt((x[i] + offset) / scale), 0, kNmax) : 0;
        // Element i lives in byte 32 * (i / 64) + i % 32: low nibble for the first 32 of each 64.
        const int byte = 32 * (i / 64) + l;
        out.qs[byte] |= static_cast<uint8_t>((q & 0xF) << ((i % 64) < 32 ? 0 : 4));
        if constexpr (kNmax == 31) out.qh[l] |= static_cast<uint8_t>(((q >> 4) & 1) << j);
      }
    }
  }
}

// Fits x ~ scale * q over 16 values with q in [-32, 31], trying a few stretches of the grid.
float FitSymmetricScale(const float* x, int n) {
  const float max = SignedAbsMax(x, n);
  if (max == 0.0f) return 0.0f;
  float best_scale = max / -32.0f;
  double best_err = INFINITY;
  for (int step = -9; step <= 9; ++step) {
    const float iscale = -(32.0f + 0.1f * static_cast<float>(step)) / max;
    double sxl = 0, sll = 0;
    int q[16];
    for (int i = 0; i < n; ++i) {
      q[i] = std::clamp(NearestInt(iscale * x[i]), -32, 31);
      sxl += x[i] * q[i];
      sll += q[i] * q[i];
    }
    if (sll == 0) continue;
    const double scale = sxl / sll;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = scale * q[i] - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = err;
      best_scale = static_cast<float>(scale);
    }
  }
  return best_scale;
}

void QuantizeQ6_K(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<BlockQ6_K*>(dst);
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const float* x = src + b * kQKK;
    BlockQ6_K& out = blocks[b];
    std::memset(&out, 0, sizeof out);
    float scales[16];
    for (int g = 0; g < 16; ++g) scales[g] = FitSymmetricScale(x + 16 * g, 16);
    const float max_scale = SignedAbsMax(scales, 16);
    if (max_scale == 0.0f) {
      // An all-zero super-block: q = 32 everywhere decodes to exactly 0.
      for (int i = 0; i < kQKK / 2; ++i) out.ql[i] = 0;
      for (int i = 0; i < kQKK / 4; ++i) out.qh[i] = 0xAA;  // high bits 0b10 = 32
      continue;
    }
    const float iscale = -128.0f / max_scale;
    for (int g = 0; g < 16; ++g) {
      out.scales[g] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[g])));
    }
    out.d = F32ToF16(1.0f / iscale);
    const float d = F16ToF32(out.d);
    for (int i = 0; i < kQKK; ++i) {
      const float scale = d * static_cast<float>(out.scales[i / 16]);
      const int q = scale != 0.0f ? std::clamp(NearestInt(x[i] / scale), -32, 31) + 32 : 32;
      // Inverse of the reader's layout: see SixBitQ6K in quants_scalar.cc.
      const int half = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
      uint8_t& low_byte = out.ql[64 * half + l + ((quarter & 1) ? 32 : 0)];
      low_byte |= static_cast<uint8_t>((q & 0xF) << (quarter < 2 ? 0 : 4));
      out.qh[32 * half + l] |= static_cast<uint8_t>((q >> 4) << (2 * quarter));
    }
  }
}

}  // namespace

void QuantizeWeightRow(TensorType type, const float* src, void* dst, int64_t n) {
  switch (type) {
    case TensorType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = F32ToF16(src[i]);
        std::memcpy(static_cast<uint8_t*>(dst) + 2 * i, &h, sizeof h);
      }
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = F32ToBf16(src[i]);
        std::memcpy(static_cast<uint8_t*>(dst) + 2 * i, &h, sizeof h);
      }
      return;
    case TensorType::kQ4_0: return QuantizeQ4_0(src, dst, n);
    case TensorType::kQ4_1: return QuantizeQ4_1(src, dst, n);
    case TensorType::kQ5_0: return QuantizeQ5_0(src, dst, n);
    case TensorType::kQ5_1: return QuantizeQ5_1(src, dst, n);
    case TensorType::kQ8_0: return QuantizeQ8_0(src, dst, n);
    case TensorType::kQ4_K: return QuantizeKQuant<15, BlockQ4_K>(src, dst, n);
    case TensorType::kQ5_K: return QuantizeKQuant<31, BlockQ5_K>(src, dst, n);
    case TensorType::kQ6_K: return QuantizeQ6_K(src, dst, n);
    default: AIRLOCK_CHECK(false && "QuantizeRow: not a weight type");
  }
}

}  // namespace airlock::inference::kernels::internal
