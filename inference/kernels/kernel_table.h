// Internal seam between the public kernel API (quants.cc) and its per-ISA implementations: each
// instruction set fills one table of function pointers, and empty slots fall back to the next
// simpler ISA. Not for use outside inference/kernels/.
//
// Like block_formats.h this header declares no inline functions, so the *_avx2.cc / *_avx512.cc
// files may include it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "inference/base/tensor_type.h"

namespace airlock::inference::kernels::internal {

using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);
using QuantizeActivationFn = void (*)(const float* x, void* dst, int64_t n);
using VecDotFn = float (*)(int64_t n, const void* w, const void* x);
// Same contract as kernels::MatMulRows for one weight type.
using MatMulFn = void (*)(int64_t n, const void* w, size_t w_row_bytes, int64_t row_begin,
                          int64_t row_end, const void* x, size_t x_row_bytes, int64_t m, float* y,
                          int64_t y_stride);

// Slots are indexed by the TensorType id (the ggml type number).
inline constexpr size_t kTypeSlots = 40;

// A trivial aggregate of plain arrays, on purpose: a non-trivial constructor (default member
// initializers) or a std::array member function is an inline function that a SIMD file would
// instantiate too, and the linker could keep that copy for everyone. Create tables with
// `KernelTable t{};` (value-initialization zero-fills in place).
struct KernelTable {
  DequantizeFn dequantize[kTypeSlots];
  QuantizeActivationFn quantize_activation[kTypeSlots];  // indexed by activation type
  VecDotFn vec_dot[kTypeSlots];                          // indexed by weight type
  MatMulFn mat_mul[kTypeSlots];                          // indexed by weight type
};

// The plain reference implementations (quants_scalar.cc); every slot of a weight or activation
// type is filled.
const KernelTable& ScalarKernels();
// AVX2 + FMA + F16C (quants_avx2.cc). Call only when the CPU has them.
const KernelTable& Avx2Kernels();
// AVX-512 F/BW/VL/DQ/VNNI (quants_avx512.cc). Call only when the CPU has them.
const KernelTable& Avx512Kernels();

// Weight quantizers (quantize_weights.cc), scalar only: they run once per model file.
void QuantizeWeightRow(TensorType type, const float* src, void* dst, int64_t n);

}  // namespace airlock::inference::kernels::internal
