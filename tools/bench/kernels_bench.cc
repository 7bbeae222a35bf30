// Google Benchmark of the CPU kernels: MatMulRows on a 4096 x 4096 weight matrix, single thread,
// for every weight type and every ISA this CPU supports. Decode (m = 1) reports weight GB/s, with
// the matrix streamed from memory (copies rotate so that the working set exceeds the caches) and,
// separately, hot in cache; prefill (m = 64, and 512 for the hot types) reports GFLOP/s. A plain
// streaming read of the same size runs in the same process as the bandwidth reference, and the
// scalar ISA is the reference for the SIMD speed-ups.
//
//   build/<dir>/tools/kernels_bench [--benchmark_filter=MatVec/q4_K]
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "inference/base/tensor_type.h"
#include "inference/kernels/quants.h"
#include "tools/airlock_bench/memory_bandwidth.h"

namespace airlock::inference::kernels {
namespace {

constexpr int64_t kRows = 4096;
constexpr int64_t kCols = 4096;
// Decode streams at least this many bytes of distinct weight copies per rotation, well past any
// L3 of the machines we run on.
constexpr size_t kColdBytes = size_t{256} << 20;

const TensorType kWeightTypes[] = {TensorType::kF32,  TensorType::kF16,  TensorType::kBF16,
                                   TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1,
                                   TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kQ4_K,
                                   TensorType::kQ5_K, TensorType::kQ6_K};

// 64-byte aligned storage, as a model file mapped by the engine would be.
struct AlignedBuffer {
  explicit AlignedBuffer(size_t bytes)
      : data(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64))) {}
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data;
};

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return v;
}

// `copies` weight matrices. 64 distinct quantized rows are tiled over each (quantizing 16 M values
// per type would dominate start-up; the kernels' speed does not depend on the values).
std::unique_ptr<AlignedBuffer> MakeWeights(TensorType type, int copies, size_t* row_bytes) {
  *row_bytes = *RowBytes(type, kCols);
  const size_t matrix_bytes = *row_bytes * kRows;
  auto buffer = std::make_unique<AlignedBuffer>(matrix_bytes * static_cast<size_t>(copies));
  const int64_t distinct = 64;
  const std::vector<float> values = RandomFloats(static_cast<size_t>(distinct * kCols), 1);
  for (int64_t r = 0; r < distinct; ++r) {
    QuantizeRow(type, values.data() + r * kCols, buffer->data + r * *row_bytes, kCols);
  }
  for (size_t off = distinct * *row_bytes; off < matrix_bytes * static_cast<size_t>(copies);
       off += distinct * *row_bytes) {
    std::memcpy(buffer->data + off, buffer->data, distinct * *row_bytes);
  }
  return buffer;
}

std::vector<uint8_t> MakeActivations(TensorType type, int64_t m, size_t* row_bytes) {
  const TensorType act = ActivationType(type);
  *row_bytes = *RowBytes(act, kCols);
  std::vector<uint8_t> x(*row_bytes * static_cast<size_t>(m));
  const std::vector<float> values = RandomFloats(static_cast<size_t>(m * kCols), 2);
  for (int64_t i = 0; i < m; ++i)
    QuantizeActivationRow(act, values.data() + i * kCols, x.data() + i * *row_bytes, kCols);
  return x;
}

bool UseIsa(benchmark::State& state, Isa isa) {
  if (!IsaSupported(isa)) {
    state.SkipWithError("ISA not supported on this CPU");
    return false;
  }
  SetIsaForTesting(isa);
  return true;
}

// m = 1: bytes of weights read per second.
void MatVec(benchmark::State& state, TensorType type, Isa isa, bool cold) {
  if (!UseIsa(state, isa)) return;
  size_t w_row_bytes, x_row_bytes;
  const size_t matrix_bytes = *RowBytes(type, kCols) * kRows;
  const int copies = cold ? static_cast<int>((kColdBytes + matrix_bytes - 1) / matrix_bytes) : 1;
  const auto w = MakeWeights(type, copies, &w_row_bytes);
  const std::vector<uint8_t> x = MakeActivations(type, 1, &x_row_bytes);
  std::vector<float> y(kRows);
  int copy = 0;
  for (auto _ : state) {
    MatMulRows(type, kCols, w->data + static_cast<size_t>(copy) * matrix_bytes, w_row_bytes, 0,
               kRows, x.data(), x_row_bytes, 1, y.data(), kRows);
    benchmark::DoNotOptimize(y.data());
    copy = copy + 1 == copies ? 0 : copy + 1;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(matrix_bytes));
  state.SetLabel(std::string(TensorTypeName(type)) + " " + IsaName(isa) +
                 (cold ? " from memory" : " in cache"));
}

// m = 1 over the first kL2Rows rows only (about 0.3-1 MB): the weights stay in L2, so this is the
// kernel's own speed, the ceiling decode would reach if memory kept up.
constexpr int64_t kL2Rows = 256;
void MatVecL2(benchmark::State& state, TensorType type, Isa isa) {
  if (!UseIsa(state, isa)) return;
  size_t w_row_bytes, x_row_bytes;
  const auto w = MakeWeights(type, 1, &w_row_bytes);
  const std::vector<uint8_t> x = MakeActivations(type, 1, &x_row_bytes);
  std::vector<float> y(kL2Rows);
  for (auto _ : state) {
    MatMulRows(type, kCols, w->data, w_row_bytes, 0, kL2Rows, x.data(), x_row_bytes, 1, y.data(), kL2Rows);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w_row_bytes) * kL2Rows);
  state.SetLabel(std::string(TensorTypeName(type)) + " " + IsaName(isa) + " in L2");
}

// m activation rows (a prefill batch): floating-point operations (2 per multiply-add) per second.
void MatMulBatch(benchmark::State& state, TensorType type, Isa isa, int64_t m) {
  if (!UseIsa(state, isa)) return;
  size_t w_row_bytes, x_row_bytes;
  const auto w = MakeWeights(type, 1, &w_row_bytes);
  const std::vector<uint8_t> x = MakeActivations(type, m, &x_row_bytes);
  std::vector<float> y(static_cast<size_t>(kRows * m));
  for (auto _ : state) {
    MatMulRows(type, kCols, w->data, w_row_bytes, 0, kRows, x.data(), x_row_bytes, m, y.data(),
               kRows);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * kRows * kCols * m * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(TensorTypeName(type)) + " " + IsaName(isa));
}

// Converting one 4096-wide activation row (done once per token per matrix input).
void QuantizeActivation(benchmark::State& state, TensorType act, Isa isa) {
  if (!UseIsa(state, isa)) return;
  const std::vector<float> x = RandomFloats(kCols, 3);
  std::vector<uint8_t> out(*RowBytes(act, kCols));
  for (auto _ : state) {
    QuantizeActivationRow(act, x.data(), out.data(), kCols);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kCols * 4);
}

// One attention score: F16 key row x F16 query row, head_dim 128.
void AttentionDot(benchmark::State& state, Isa isa) {
  if (!UseIsa(state, isa)) return;
  const int64_t n = 128;
  std::vector<uint16_t> k(n), q(n);
  const std::vector<float> v = RandomFloats(2 * n, 4);
  QuantizeRow(TensorType::kF16, v.data(), k.data(), n);
  QuantizeRow(TensorType::kF16, v.data() + n, q.data(), n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(VecDot(TensorType::kF16, n, k.data(), q.data()));
    benchmark::ClobberMemory();
  }
}

// The bandwidth reference: one streaming read over kColdBytes, the access pattern of decode.
void StreamRead(benchmark::State& state) {
  AlignedBuffer buf(kColdBytes);
  std::memset(buf.data, 1, kColdBytes);
  const auto* words = reinterpret_cast<const uint32_t*>(buf.data);
  const size_t n = kColdBytes / sizeof(uint32_t);
  for (auto _ : state) {
    benchmark::DoNotOptimize(bench::SumWords(words, n));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kColdBytes));
}

}  // namespace
}  // namespace airlock::inference::kernels

int main(int argc, char** argv) {
  using namespace airlock::inference;
  using namespace airlock::inference::kernels;
  benchmark::Initialize(&argc, argv);
  const Isa isas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512};
  benchmark::RegisterBenchmark("StreamRead/256MiB", StreamRead)->Unit(benchmark::kMillisecond);
  for (TensorType t : kWeightTypes) {
    for (Isa isa : isas) {
      const std::string suffix = std::string(TensorTypeName(t)) + "/" + IsaName(isa);
      benchmark::RegisterBenchmark(("MatVec/" + suffix).c_str(), MatVec, t, isa, true)
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (TensorType t : kWeightTypes) {
    for (Isa isa : isas) {
      const std::string suffix = std::string(TensorTypeName(t)) + "/" + IsaName(isa);
      benchmark::RegisterBenchmark(("MatVecHot/" + suffix).c_str(), MatVec, t, isa, false)
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (TensorType t : kWeightTypes) {
    for (Isa isa : isas) {
      const std::string suffix = std::string(TensorTypeName(t)) + "/" + IsaName(isa);
      benchmark::RegisterBenchmark(("MatVecL2/" + suffix).c_str(), MatVecL2, t, isa)->Unit(benchmark::kMicrosecond);
    }
  }
  for (TensorType t : kWeightTypes) {
    for (Isa isa : isas) {
      const std::string suffix = std::string(TensorTypeName(t)) + "/" + IsaName(isa);
      benchmark::RegisterBenchmark(("MatMul64/" + suffix).c_str(), MatMulBatch, t, isa, 64)
          ->Unit(benchmark::kMillisecond);
    }
  }
  // Batched decode: one row per sequence of the step (8 and 16 sequences), weights in cache.
  for (int64_t m : {8, 16}) {
    for (TensorType t : {TensorType::kQ8_0, TensorType::kQ4_K, TensorType::kQ6_K}) {
      const std::string suffix = std::string(TensorTypeName(t)) + "/" + IsaName(BestSupportedIsa());
      benchmark::RegisterBenchmark(("MatMul" + std::to_string(m) + "/" + suffix).c_str(), MatMulBatch,
                                   t, BestSupportedIsa(), m)
          ->Unit(benchmark::kMillisecond);
    }
  }
  // A full llama.cpp-sized ubatch, where the activations no longer fit in L2 (chunked by the
  // driver).
  for (TensorType t : {TensorType::kQ8_0, TensorType::kQ4_K, TensorType::kQ6_K}) {
    const std::string suffix = std::string(TensorTypeName(t)) + "/" + IsaName(BestSupportedIsa());
    benchmark::RegisterBenchmark(("MatMul512/" + suffix).c_str(), MatMulBatch, t,
                                 BestSupportedIsa(), 512)
        ->Unit(benchmark::kMillisecond);
  }
  for (TensorType act :
       {TensorType::kQ8_0, TensorType::kQ8_1, TensorType::kQ8_K, TensorType::kF16}) {
    for (Isa isa : isas) {
      benchmark::RegisterBenchmark(
          ("QuantizeActivation/" + std::string(TensorTypeName(act)) + "/" + IsaName(isa)).c_str(),
          QuantizeActivation, act, isa);
    }
  }
  for (Isa isa : isas) {
    benchmark::RegisterBenchmark(("AttentionDotF16x128/" + std::string(IsaName(isa))).c_str(),
                                 AttentionDot, isa);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
