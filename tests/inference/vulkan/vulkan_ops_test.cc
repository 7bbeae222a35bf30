// The Vulkan device layer and its first ops, on the test device (lavapipe in CI: Mesa's Vulkan on
// the CPU): selection and its errors, buffers, the failure paths, and each op against the CPU
// backend's result on random inputs of awkward sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "inference/backend/cpu/ops.h"
#include "inference/backend/vulkan/vulkan_device.h"
#include "inference/backend/vulkan/vulkan_ops.h"
#include "inference/base/fp16.h"
#include "inference/base/tensor_type.h"
#include "inference/kernels/quants.h"
#include "tests/inference/vulkan/vulkan_test_util.h"
#include "tests/support/test_data.h"

namespace airlock::inference::vulkan {
namespace {

std::vector<float> RandomFloats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<DeviceInfo> TwoDevices() {
  DeviceInfo a, b;
  a.index = 0;
  a.name = "NVIDIA H100 80GB HBM3";
  b.index = 1;
  b.name = "NVIDIA H100 PCIe";
  return {a, b};
}

TEST(VulkanDeviceTest, ResolveByIndexAndByName) {
  const std::vector<DeviceInfo> devices = TwoDevices();
  EXPECT_EQ(*ResolveDevice("vulkan:1", devices), 1);
  EXPECT_EQ(*ResolveDevice("0", devices), 0);
  EXPECT_EQ(*ResolveDevice("vulkan:pcie", devices), 1);  // case-insensitive substring
  EXPECT_EQ(*ResolveDevice("HBM3", devices), 0);
}

TEST(VulkanDeviceTest, ResolveRefusesWhatDoesNotNameExactlyOneDevice) {
  const std::vector<DeviceInfo> devices = TwoDevices();
  absl::StatusOr<int> r = ResolveDevice("vulkan:2", devices);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("vulkan:0 (NVIDIA H100 80GB HBM3)"), std::string::npos) << r.status();
  EXPECT_EQ(ResolveDevice("vulkan:", devices).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveDevice("", devices).status().code(), absl::StatusCode::kInvalidArgument);
  r = ResolveDevice("vulkan:h100", devices);  // both match
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("more than one"), std::string::npos) << r.status();
  EXPECT_EQ(ResolveDevice("vulkan:a100", devices).status().code(), absl::StatusCode::kNotFound);
  // No device at all (no driver, or a sandbox that allows no GPU node): the error says where to look.
  r = ResolveDevice("vulkan:0", {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("GPU drop-in"), std::string::npos) << r.status();
  // A number too large for an int, and a very long name: refused without echoing them whole.
  const std::string digits(40, '9');
  r = ResolveDevice("vulkan:" + digits, devices);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status().message().find(digits), std::string::npos) << r.status();
  const std::string name(5000, 'x');
  r = ResolveDevice(name, devices);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(r.status().message().size(), 200u) << r.status();
}

TEST(VulkanDeviceTest, ListsAndOpensTheTestDevice) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  absl::StatusOr<std::vector<DeviceInfo>> devices = ListDevices();
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_LT(static_cast<size_t>(device->info().index), devices->size());
  EXPECT_EQ((*devices)[static_cast<size_t>(device->info().index)].name, device->info().name);
  EXPECT_TRUE(device->info().compute);
  EXPECT_TRUE(device->info().storage_16bit);
  EXPECT_GE(device->info().subgroup_size, 1u);
  EXPECT_NE(device->label().find("vulkan:" + std::to_string(device->info().index)), std::string::npos);
  // The same device again by its index.
  absl::StatusOr<std::unique_ptr<Device>> again = Device::Open("vulkan:" + std::to_string(device->info().index));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->info().name, device->info().name);
}

TEST(VulkanDeviceTest, OpeningADeviceThatIsNotThereNamesWhatIs) {
  absl::StatusOr<std::unique_ptr<Device>> d = Device::Open("vulkan:99");
  ASSERT_FALSE(d.ok());
  // NOT_FOUND with the list, or UNAVAILABLE when no Vulkan loader/driver works at all.
  EXPECT_TRUE(d.status().code() == absl::StatusCode::kNotFound || d.status().code() == absl::StatusCode::kUnavailable)
      << d.status();
  EXPECT_NE(d.status().message().find("99"), std::string::npos) << d.status();
}

TEST(VulkanDeviceTest, BuffersRoundTripThroughDeviceAndHostMemory) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  for (Memory memory : {Memory::kDeviceLocal, Memory::kHostVisible}) {
    absl::StatusOr<std::unique_ptr<Buffer>> b = device->CreateBuffer(1000, memory);
    ASSERT_TRUE(b.ok()) << b.status();
    std::vector<uint8_t> in(600), out(600);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 7 + 3);
    ASSERT_TRUE(device->Upload(**b, in.data(), in.size(), 400).ok());
    ASSERT_TRUE(device->Download(**b, out.data(), out.size(), 400).ok());
    EXPECT_EQ(in, out);
    // One byte past the end, and an offset whose sum with the size would wrap.
    EXPECT_EQ(device->Upload(**b, in.data(), 601, 400).code(), absl::StatusCode::kOutOfRange);
    EXPECT_EQ(device->Download(**b, out.data(), 16, SIZE_MAX - 8).code(), absl::StatusCode::kOutOfRange);
  }
  EXPECT_EQ(device->CreateBuffer(0, Memory::kHostVisible).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(VulkanDeviceTest, ALostDeviceRefusesEveryLaterCall) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  absl::StatusOr<std::unique_ptr<Ops>> ops = Ops::Create(*device);
  ASSERT_TRUE(ops.ok()) << ops.status();
  auto x = *device->CreateBuffer(4 * 64, Memory::kHostVisible);
  auto w = *device->CreateBuffer(4 * 64, Memory::kHostVisible);
  auto y = *device->CreateBuffer(4 * 64, Memory::kHostVisible);
  absl::StatusOr<Dispatch> d = (*ops)->RmsNorm(*x, *w, *y, 1, 64, 1e-5f);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(device->Run({&*d, 1}).ok());
  device->SimulateLossForTesting();
  EXPECT_EQ(device->Run({&*d, 1}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(device->CreateBuffer(16, Memory::kHostVisible).status().code(), absl::StatusCode::kUnavailable);
  float f = 0;
  EXPECT_EQ(device->Upload(*x, &f, sizeof f).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(device->Download(*x, &f, sizeof f).code(), absl::StatusCode::kUnavailable);
}

TEST(VulkanOpsTest, DispatchesRefuseShapesTheirBuffersDoNotHold) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  auto small = *device->CreateBuffer(64, Memory::kHostVisible);
  auto big = *device->CreateBuffer(1 << 16, Memory::kHostVisible);
  absl::StatusOr<Dispatch> d = ops->RmsNorm(*small, *big, *big, 2, 16, 1e-5f);  // x needs 128 bytes
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("128"), std::string::npos) << d.status();
  EXPECT_EQ(ops->RmsNorm(*big, *big, *big, 0, 16, 1e-5f).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ops->MatMulQuantized(TensorType::kQ8_0, *big, *big, *big, 4, 33, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ops->MatMulQuantized(TensorType::kQ8_0, *big, *small, *big, 4, 64, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  // K-quant rows are whole super-blocks of 256; a type without a product is named.
  EXPECT_EQ(ops->MatMulQuantized(TensorType::kQ4_K, *big, *big, *big, 4, 128, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<Dispatch> bf16 = ops->MatMulQuantized(TensorType::kBF16, *big, *big, *big, 4, 256, 1);
  EXPECT_EQ(bf16.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bf16.status().message().find("bf16"), std::string::npos) << bf16.status();
  EXPECT_EQ(ops->QuantizeActivations(TensorType::kQ6_K, *big, *big, 2, 32).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A dispatch whose buffers do not match its pipeline is refused before anything is recorded.
  absl::StatusOr<Dispatch> ok = ops->RmsNorm(*big, *big, *big, 2, 16, 1e-5f);
  ASSERT_TRUE(ok.ok());
  Dispatch broken = *ok;
  broken.buffers.pop_back();
  EXPECT_EQ(device->Run({&broken, 1}).code(), absl::StatusCode::kInvalidArgument);
  broken = *ok;
  broken.push.push_back(0);
  EXPECT_EQ(device->Run({&broken, 1}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(VulkanOpsTest, RmsNormMatchesTheCpuBackend) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  struct Shape {
    uint32_t rows, n;
  };
  for (const Shape s : {Shape{1, 1}, Shape{3, 31}, Shape{7, 257}, Shape{2, 4099}, Shape{5, 2048}}) {
    const size_t count = size_t{s.rows} * s.n;
    const std::vector<float> x = RandomFloats(count, 1 + s.n, -3.0f, 3.0f);
    const std::vector<float> w = RandomFloats(s.n, 2 + s.n, 0.5f, 1.5f);
    auto xb = *device->CreateBuffer(count * 4, Memory::kDeviceLocal);
    auto wb = *device->CreateBuffer(size_t{s.n} * 4, Memory::kDeviceLocal);
    auto yb = *device->CreateBuffer(count * 4, Memory::kDeviceLocal);
    ASSERT_TRUE(device->Upload(*xb, x.data(), count * 4).ok());
    ASSERT_TRUE(device->Upload(*wb, w.data(), size_t{s.n} * 4).ok());
    absl::StatusOr<Dispatch> d = ops->RmsNorm(*xb, *wb, *yb, s.rows, s.n, 1e-5f);
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_TRUE(device->Run({&*d, 1}).ok());
    std::vector<float> y(count), want(count);
    ASSERT_TRUE(device->Download(*yb, y.data(), count * 4).ok());
    for (uint32_t r = 0; r < s.rows; ++r) cpu::RmsNorm(&x[size_t{r} * s.n], w.data(), &want[size_t{r} * s.n], s.n, 1e-5f);
    for (size_t i = 0; i < count; ++i) {
      ASSERT_NEAR(y[i], want[i], 2e-6f * (1.0f + std::fabs(want[i]))) << "rows " << s.rows << " n " << s.n << " at " << i;
    }
  }
}

// Attention over a paged cache of random K and V (blocks in shuffled order, so every row reads
// through its block table), against a double precision reference, for rows from the first
// position to 9,000 (past 4,096, AttentionLong's chunked dispatches take the rows the one-pass
// shader leaves), several head sizes (GQA included) and both cache types.
TEST(VulkanOpsTest, AttentionMatchesADoublePrecisionReference) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  struct Shape {
    uint32_t n_head, n_head_kv, head_dim;
  };
  const std::vector<uint32_t> positions = {0, 37, 1000, 4095, 4096, 4100, 8191, 8999};
  const uint32_t n_ctx = 9000;
  for (const bool f16 : {false, true}) {
    for (const Shape s : {Shape{4, 2, 64}, Shape{2, 1, 256}, Shape{3, 3, 8}}) {
      SCOPED_TRACE(::testing::Message() << (f16 ? "f16" : "f32") << " heads " << s.n_head << "/" << s.n_head_kv
                                        << " head_dim " << s.head_dim);
      Ops::KvLayout kv;
      kv.block_tokens = 16;
      kv.n_blocks = n_ctx / 16 + 3;
      kv.n_layer = 2;
      kv.n_head = s.n_head;
      kv.n_head_kv = s.n_head_kv;
      kv.head_dim = s.head_dim;
      kv.f16 = f16;
      const uint32_t layer = 1;
      const uint32_t kv_dim = kv.kv_dim();
      // The cache's values, as the shader reads them (F16-rounded for an F16 cache).
      std::vector<float> k = RandomFloats(kv.elements(), 11 + s.head_dim, -1.0f, 1.0f);
      std::vector<float> v = RandomFloats(kv.elements(), 12 + s.head_dim, -1.0f, 1.0f);
      std::vector<uint16_t> k16(f16 ? k.size() : 0), v16(f16 ? v.size() : 0);
      if (f16) {
        for (size_t i = 0; i < k.size(); ++i) {
          k16[i] = F32ToF16(k[i]);
          v16[i] = F32ToF16(v[i]);
          k[i] = F16ToF32(k16[i]);
          v[i] = F16ToF32(v16[i]);
        }
      }
      std::vector<uint32_t> table(kv.n_blocks);
      for (uint32_t b = 0; b < kv.n_blocks; ++b) table[b] = b;
      std::shuffle(table.begin(), table.end(), std::mt19937(5));
      const uint32_t rows = static_cast<uint32_t>(positions.size());
      std::vector<uint32_t> meta;
      for (uint32_t pos : positions) meta.insert(meta.end(), {pos, table[pos / 16], pos % 16, 0u});
      const std::vector<float> q = RandomFloats(size_t{rows} * s.n_head * s.head_dim, 13, -1.0f, 1.0f);
      const size_t cache_bytes = kv.bytes();
      auto kb = *device->CreateBuffer(cache_bytes, Memory::kDeviceLocal);
      auto vb = *device->CreateBuffer(cache_bytes, Memory::kDeviceLocal);
      ASSERT_TRUE(device->Upload(*kb, f16 ? static_cast<const void*>(k16.data()) : k.data(), cache_bytes).ok());
      ASSERT_TRUE(device->Upload(*vb, f16 ? static_cast<const void*>(v16.data()) : v.data(), cache_bytes).ok());
      auto qb = *device->CreateBuffer(q.size() * 4, Memory::kDeviceLocal);
      auto ob = *device->CreateBuffer(q.size() * 4, Memory::kDeviceLocal);
      auto mb = *device->CreateBuffer(meta.size() * 4, Memory::kHostVisible);
      auto tb = *device->CreateBuffer(table.size() * 4, Memory::kHostVisible);
      ASSERT_TRUE(device->Upload(*qb, q.data(), q.size() * 4).ok());
      ASSERT_TRUE(device->Upload(*mb, meta.data(), meta.size() * 4).ok());
      ASSERT_TRUE(device->Upload(*tb, table.data(), table.size() * 4).ok());
      const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
      absl::StatusOr<Dispatch> d = ops->Attention(*qb, *kb, *vb, *mb, *tb, *ob, kv, layer, rows, scale);
      ASSERT_TRUE(d.ok()) << d.status();
      auto scratch = *device->CreateBuffer(Ops::AttentionScratchBytes(kv, rows, n_ctx), Memory::kDeviceLocal);
      absl::StatusOr<std::vector<Dispatch>> long_rows =
          ops->AttentionLong(*qb, *kb, *vb, *mb, *tb, *ob, *scratch, kv, layer, rows, scale, n_ctx);
      ASSERT_TRUE(long_rows.ok()) << long_rows.status();
      std::vector<Dispatch> all = {*d};
      all.insert(all.end(), long_rows->begin(), long_rows->end());
      ASSERT_TRUE(device->Run(all).ok());
      // Too small a scratch buffer is refused.
      EXPECT_FALSE(ops->AttentionLong(*qb, *kb, *vb, *mb, *tb, *ob, *mb, kv, layer, rows, scale, n_ctx).ok());
      std::vector<float> out(q.size());
      ASSERT_TRUE(device->Download(*ob, out.data(), out.size() * 4).ok());
      const auto at = [&](const std::vector<float>& cache, uint32_t pos, uint32_t kvh, uint32_t i) {
        const size_t base = ((size_t{table[pos / 16]} * kv.n_layer + layer) * 16 + pos % 16) * kv_dim;
        return static_cast<double>(cache[base + size_t{kvh} * s.head_dim + i]);
      };
      double worst = 0;  // the largest difference, as a fraction of its bound
      for (uint32_t r = 0; r < rows; ++r) {
        for (uint32_t h = 0; h < s.n_head; ++h) {
          const uint32_t kvh = h / (s.n_head / s.n_head_kv);
          const float* qr = &q[(size_t{r} * s.n_head + h) * s.head_dim];
          std::vector<double> w(positions[r] + 1);
          double mx = -1e300, sum = 0;
          for (uint32_t p = 0; p <= positions[r]; ++p) {
            double dot = 0;
            for (uint32_t i = 0; i < s.head_dim; ++i) dot += static_cast<double>(qr[i]) * at(k, p, kvh, i);
            w[p] = dot * scale;
            mx = std::max(mx, w[p]);
          }
          for (double& x : w) sum += (x = std::exp(x - mx));
          for (uint32_t i = 0; i < s.head_dim; ++i) {
            double want = 0;
            for (uint32_t p = 0; p <= positions[r]; ++p) want += w[p] / sum * at(v, p, kvh, i);
            const float got = out[(size_t{r} * s.n_head + h) * s.head_dim + i];
            // Float sums over up to 9,000 positions; with F16, q and the probabilities are also
            // rounded to F16 on the device (as on the CPU).
            const double bound = (f16 ? 3e-4 : 2e-6) + 1e-9 * positions[r];
            ASSERT_NEAR(got, want, bound) << "position " << positions[r] << " head " << h << " dim " << i;
            worst = std::max(worst, std::fabs(got - want) / bound);
          }
        }
      }
      std::printf("[ vulkan ] attention %s, head_dim %u: worst difference %.2f of its bound\n", f16 ? "f16" : "f32",
                  s.head_dim, worst);
    }
  }
}

class VulkanQuantizedTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(VulkanQuantizedTest, MatMulMatchesVecDot) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  const TensorType type = GetParam();
  const TensorType act_type = kernels::ActivationType(type);
  const uint32_t block = Ops::QuantBlock(type);
  struct Shape {
    uint32_t rows, cols, m;
  };
  // One block; rows and activation rows that leave a workgroup part-filled; more blocks than a row
  // has invocations (8), and a count of blocks that is not a multiple of them.
  for (const Shape s : {Shape{1, block, 1}, Shape{37, 3 * block, 3}, Shape{5, 129 * block, 2},
                        Shape{130, 8 * block, 9}}) {
    const size_t w_row = *RowBytes(type, s.cols);
    const size_t a_row = *RowBytes(act_type, s.cols);
    std::vector<uint8_t> w(w_row * s.rows), a(a_row * s.m);
    for (uint32_t r = 0; r < s.rows; ++r) {
      const std::vector<float> f = RandomFloats(s.cols, 100 + r);
      kernels::QuantizeRow(type, f.data(), &w[r * w_row], s.cols);
    }
    for (uint32_t t = 0; t < s.m; ++t) {
      const std::vector<float> f = RandomFloats(s.cols, 900 + t, -4.0f, 4.0f);
      kernels::QuantizeActivationRow(act_type, f.data(), &a[t * a_row], s.cols);
    }
    auto wb = *device->CreateBuffer(w.size(), Memory::kDeviceLocal);
    auto ab = *device->CreateBuffer(a.size(), Memory::kDeviceLocal);
    auto yb = *device->CreateBuffer(size_t{s.rows} * s.m * 4, Memory::kDeviceLocal);
    ASSERT_TRUE(device->Upload(*wb, w.data(), w.size()).ok());
    ASSERT_TRUE(device->Upload(*ab, a.data(), a.size()).ok());
    absl::StatusOr<Dispatch> d = ops->MatMulQuantized(type, *wb, *ab, *yb, s.rows, s.cols, s.m);
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_TRUE(device->Run({&*d, 1}).ok());
    std::vector<float> y(size_t{s.rows} * s.m);
    ASSERT_TRUE(device->Download(*yb, y.data(), y.size() * 4).ok());
    for (uint32_t t = 0; t < s.m; ++t) {
      for (uint32_t r = 0; r < s.rows; ++r) {
        const float want = kernels::VecDot(type, s.cols, &w[r * w_row], &a[t * a_row]);
        // The block sums are exact integers on both sides; only the float sum's order differs.
        const float tol = 1e-5f * (1.0f + std::fabs(want)) * std::sqrt(static_cast<float>(s.cols / 32));
        ASSERT_NEAR(y[size_t{t} * s.rows + r], want, tol) << s.rows << "x" << s.cols << " m " << s.m << ": row " << r
                                                          << ", activation row " << t;
      }
    }
  }
}

TEST_P(VulkanQuantizedTest, QuantizedActivationsAreTheCpuBackendsBytes) {
  // Exact on lavapipe: the same maximum, division, round-half-even and scale rounding.
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  const TensorType type = GetParam();
  const TensorType act_type = kernels::ActivationType(type);
  const uint32_t block = Ops::QuantBlock(type);
  const uint32_t m = 7, cols = block * 5;
  std::vector<float> x = RandomFloats(size_t{m} * cols, 31, -6.0f, 6.0f);
  for (uint32_t i = 0; i < block; ++i) x[i] = 0.0f;  // an all-zero block
  for (uint32_t i = block; i < 2 * block; ++i) {     // ties, and the largest magnitude twice with both signs
    x[i] = (i % 2 ? 1.0f : -1.0f) * 0.5f * static_cast<float>((i - block) % 64 + 1);
  }
  x[2 * block + 3] = 65504.0f;  // the largest half as a block's maximum
  x[3 * block + 5] = -3e-3f;    // a block of tiny values with a negative maximum
  for (uint32_t i = 3 * block; i < 4 * block; ++i) x[i] *= 1e-4f;
  const size_t row = *RowBytes(act_type, cols);
  std::vector<uint8_t> want(row * m), got(row * m);
  for (uint32_t t = 0; t < m; ++t) kernels::QuantizeActivationRow(act_type, &x[size_t{t} * cols], &want[t * row], cols);
  auto xb = *device->CreateBuffer(x.size() * 4, Memory::kDeviceLocal);
  auto qb = *device->CreateBuffer(got.size(), Memory::kDeviceLocal);
  ASSERT_TRUE(device->Upload(*xb, x.data(), x.size() * 4).ok());
  absl::StatusOr<Dispatch> d = ops->QuantizeActivations(type, *xb, *qb, m, cols);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(device->Run({&*d, 1}).ok());
  ASSERT_TRUE(device->Download(*qb, got.data(), got.size()).ok());
  const size_t block_bytes = row / (cols / block);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "byte " << i << " (block " << i / block_bytes << ")";
  EXPECT_EQ(ops->QuantizeActivations(type, *xb, *qb, m, block + 16).status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Types, VulkanQuantizedTest,
                         ::testing::Values(TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,
                                           TensorType::kQ5_1, TensorType::kQ8_0, TensorType::kQ4_K,
                                           TensorType::kQ5_K, TensorType::kQ6_K),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TensorTypeName(info.param));
                         });

// F16 and BF16 weights against activations rounded to their type.
TEST(VulkanOpsTest, MatMulF16AndBF16MatchVecDot) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  for (const TensorType type : {TensorType::kF16, TensorType::kBF16}) {
  SCOPED_TRACE(TensorTypeName(type));
  const uint32_t rows = 19, cols = 333, m = 3;
  const std::vector<float> wf = RandomFloats(size_t{rows} * cols, 41);
  const std::vector<float> x = RandomFloats(size_t{m} * cols, 42, -3.0f, 3.0f);
  std::vector<uint16_t> w(wf.size());
  kernels::QuantizeRow(type, wf.data(), w.data(), static_cast<int64_t>(wf.size()));
  auto wb = *device->CreateBuffer(w.size() * 2, Memory::kDeviceLocal);
  auto xb = *device->CreateBuffer(x.size() * 4, Memory::kDeviceLocal);
  auto yb = *device->CreateBuffer(size_t{rows} * m * 4, Memory::kDeviceLocal);
  ASSERT_TRUE(device->Upload(*wb, w.data(), w.size() * 2).ok());
  ASSERT_TRUE(device->Upload(*xb, x.data(), x.size() * 4).ok());
  absl::StatusOr<Dispatch> d = type == TensorType::kF16 ? ops->MatMulF16(*wb, *xb, *yb, rows, cols, m, false)
                                                        : ops->MatMulBF16(*wb, *xb, *yb, rows, cols, m, false);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(device->Run({&*d, 1}).ok());
  std::vector<float> y(size_t{rows} * m);
  ASSERT_TRUE(device->Download(*yb, y.data(), y.size() * 4).ok());
  const TensorType act = kernels::ActivationType(type);
  std::vector<uint8_t> a(*RowBytes(act, cols));
  for (uint32_t t = 0; t < m; ++t) {
    kernels::QuantizeActivationRow(act, &x[size_t{t} * cols], a.data(), cols);
    for (uint32_t r = 0; r < rows; ++r) {
      const float want = kernels::VecDot(type, cols, &w[size_t{r} * cols], a.data());
      ASSERT_NEAR(y[size_t{t} * rows + r], want, 2e-5f * (1.0f + std::fabs(want))) << "row " << r << ", activation row " << t;
    }
  }
  }
}

TEST(VulkanOpsTest, AddBiasAddsTheVectorToEveryRow) {
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  const uint32_t rows = 5, n = 131;  // a row that leaves the last workgroup part-filled
  std::vector<float> x = RandomFloats(size_t{rows} * n, 3), b = RandomFloats(n, 4);
  auto xb = *device->CreateBuffer(x.size() * 4, Memory::kDeviceLocal);
  auto bb = *device->CreateBuffer(b.size() * 4, Memory::kDeviceLocal);
  ASSERT_TRUE(device->Upload(*xb, x.data(), x.size() * 4).ok());
  ASSERT_TRUE(device->Upload(*bb, b.data(), b.size() * 4).ok());
  absl::StatusOr<Dispatch> d = ops->AddBias(*xb, *bb, rows, n);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(device->Run({&*d, 1}).ok());
  std::vector<float> got(x.size());
  ASSERT_TRUE(device->Download(*xb, got.data(), got.size() * 4).ok());
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(got[r * n + i], x[r * n + i] + b[i]) << r << ", " << i;
  }
  EXPECT_EQ(ops->AddBias(*xb, *bb, rows, n + 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(VulkanOpsTest, DispatchesOfOneRunSeeEachOthersWrites) {
  // RMSNorm twice in one submission, the second reading what the first wrote.
  std::unique_ptr<Device> device;
  AIRLOCK_OPEN_TEST_DEVICE(device);
  auto ops = *Ops::Create(*device);
  const uint32_t rows = 4, n = 300;
  const std::vector<float> x = RandomFloats(size_t{rows} * n, 7, -2.0f, 2.0f);
  const std::vector<float> w = RandomFloats(n, 8, 0.5f, 2.0f);
  auto xb = *device->CreateBuffer(x.size() * 4, Memory::kDeviceLocal);
  auto wb = *device->CreateBuffer(w.size() * 4, Memory::kDeviceLocal);
  auto mid = *device->CreateBuffer(x.size() * 4, Memory::kDeviceLocal);
  auto yb = *device->CreateBuffer(x.size() * 4, Memory::kDeviceLocal);
  ASSERT_TRUE(device->Upload(*xb, x.data(), x.size() * 4).ok());
  ASSERT_TRUE(device->Upload(*wb, w.data(), w.size() * 4).ok());
  std::vector<Dispatch> steps = {*ops->RmsNorm(*xb, *wb, *mid, rows, n, 1e-5f), *ops->RmsNorm(*mid, *wb, *yb, rows, n, 1e-5f)};
  ASSERT_TRUE(device->Run(steps).ok());
  std::vector<float> y(x.size()), once(x.size()), twice(x.size());
  ASSERT_TRUE(device->Download(*yb, y.data(), y.size() * 4).ok());
  for (uint32_t r = 0; r < rows; ++r) {
    cpu::RmsNorm(&x[r * n], w.data(), &once[r * n], n, 1e-5f);
    cpu::RmsNorm(&once[r * n], w.data(), &twice[r * n], n, 1e-5f);
  }
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], twice[i], 1e-5f * (1.0f + std::fabs(twice[i]))) << i;
}

}  // namespace
}  // namespace airlock::inference::vulkan
