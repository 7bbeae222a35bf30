// The public kernel entry points: run-time ISA choice, per-type dispatch through the ISA's kernel
// table (falling back to the next simpler ISA for slots it leaves empty), and the generic
// row-by-row matrix product for types without a tiled kernel.
#include "inference/kernels/quants.h"

#include <atomic>

#include "inference/base/cpu_features.h"
#include "inference/base/status.h"
#include "inference/kernels/kernel_table.h"

namespace airlock::inference::kernels {
namespace {

using internal::KernelTable;

bool CpuHasAvx2() {
  return CpuHasAvx2Fma();
}

bool CpuHasAvx512() {
  return CpuHasAvx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

// Generic MatMulRows for a weight type whose ISA table has only a dot product: each output is
// literally the VecDot of its pair, so the two always agree.
void MatMulByDots(internal::VecDotFn dot, int64_t n, const void* w, size_t w_row_bytes,
                  int64_t row_begin, int64_t row_end, const void* x, size_t x_row_bytes, int64_t m,
                  float* y, int64_t y_stride) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t i = 0; i < m; ++i) {
      y[i * y_stride + r] = dot(n, wb + r * w_row_bytes, xb + i * x_row_bytes);
    }
  }
}

// The merged tables, one per ISA, built once: every slot holds the most specialised function the
// ISA (or a simpler one) provides.
struct Dispatch {
  KernelTable tables[3]{};

  Dispatch() {
    tables[0] = internal::ScalarKernels();
    tables[1] = tables[0];
    if (CpuHasAvx2()) Merge(internal::Avx2Kernels(), &tables[1]);
    tables[2] = tables[1];
    if (CpuHasAvx512()) Merge(internal::Avx512Kernels(), &tables[2]);
  }

  static void Merge(const KernelTable& better, KernelTable* into) {
    for (size_t i = 0; i < internal::kTypeSlots; ++i) {
      if (better.dequantize[i]) into->dequantize[i] = better.dequantize[i];
      if (better.quantize_activation[i])
        into->quantize_activation[i] = better.quantize_activation[i];
      if (better.vec_dot[i]) {
        into->vec_dot[i] = better.vec_dot[i];
        into->mat_mul[i] = nullptr;  // a matmul from a simpler ISA would disagree with the new dot
      }
      if (better.mat_mul[i]) into->mat_mul[i] = better.mat_mul[i];
    }
  }
};

const Dispatch& GetDispatch() {
  static const Dispatch dispatch;
  return dispatch;
}

std::atomic<Isa>& IsaSetting() {
  static std::atomic<Isa> isa{BestSupportedIsa()};
  return isa;
}

const KernelTable& ActiveTable() {
  return GetDispatch().tables[static_cast<int>(IsaSetting().load(std::memory_order_relaxed))];
}

size_t Slot(TensorType type) {
  const auto slot = static_cast<size_t>(type);
  AIRLOCK_CHECK(slot < internal::kTypeSlots);
  return slot;
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

bool IsaSupported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return CpuHasAvx2();
    case Isa::kAvx512: return CpuHasAvx512();
  }
  return false;
}

Isa BestSupportedIsa() {
  if (CpuHasAvx512()) return Isa::kAvx512;
  if (CpuHasAvx2()) return Isa::kAvx2;
  return Isa::kScalar;
}

void SetIsaForTesting(Isa isa) {
  AIRLOCK_CHECK(IsaSupported(isa));
  IsaSetting().store(isa, std::memory_order_relaxed);
}

Isa ActiveIsa() { return IsaSetting().load(std::memory_order_relaxed); }

TensorType ActivationType(TensorType weight_type) {
  switch (weight_type) {
    case TensorType::kF32: return TensorType::kF32;
    case TensorType::kF16: return TensorType::kF16;
    case TensorType::kBF16: return TensorType::kBF16;
    case TensorType::kQ4_0:
    case TensorType::kQ5_0:
    case TensorType::kQ8_0: return TensorType::kQ8_0;
    case TensorType::kQ4_1:
    case TensorType::kQ5_1: return TensorType::kQ8_1;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K: return TensorType::kQ8_K;
    default: AIRLOCK_CHECK(false && "ActivationType: not a weight type"); return weight_type;
  }
}

void DequantizeRow(TensorType type, const void* src, float* dst, int64_t n) {
  const internal::DequantizeFn fn = ActiveTable().dequantize[Slot(type)];
  AIRLOCK_CHECK(fn != nullptr);
  AIRLOCK_CHECK(n % Traits(type).block_size == 0);
  fn(src, dst, n);
}

void QuantizeRow(TensorType type, const float* src, void* dst, int64_t n) {
  AIRLOCK_CHECK(n % Traits(type).block_size == 0);
  internal::QuantizeWeightRow(type, src, dst, n);
}

void QuantizeActivationRow(TensorType act_type, const float* x, void* dst, int64_t n) {
  const internal::QuantizeActivationFn fn = ActiveTable().quantize_activation[Slot(act_type)];
  AIRLOCK_CHECK(fn != nullptr);
  AIRLOCK_CHECK(n % Traits(act_type).block_size == 0);
  fn(x, dst, n);
}

float VecDot(TensorType weight_type, int64_t n, const void* weight_row, const void* act_row) {
  const internal::VecDotFn fn = ActiveTable().vec_dot[Slot(weight_type)];
  AIRLOCK_CHECK(fn != nullptr);
  return fn(n, weight_row, act_row);
}

void MatMulRows(TensorType weight_type, int64_t n, const void* w, size_t w_row_bytes,
                int64_t row_begin, int64_t row_end, const void* x, size_t x_row_bytes, int64_t m,
                float* y, int64_t y_stride) {
  const KernelTable& table = ActiveTable();
  const size_t slot = Slot(weight_type);
  if (table.mat_mul[slot] != nullptr) {
    table.mat_mul[slot](n, w, w_row_bytes, row_begin, row_end, x, x_row_bytes, m, y, y_stride);
    return;
  }
  AIRLOCK_CHECK(table.vec_dot[slot] != nullptr);
  MatMulByDots(table.vec_dot[slot], n, w, w_row_bytes, row_begin, row_end, x, x_row_bytes, m, y,
               y_stride);
}

}  // namespace airlock::inference::kernels
