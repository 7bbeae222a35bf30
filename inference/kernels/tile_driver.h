// Loop nest shared by the SIMD kernel files: walks a row range of the weight matrix and all
// activation rows in register tiles, and builds VecDot from the 1x1 tile.
//
// Only templates live here. Every kernel class passed as K is declared inside an unnamed namespace
// of its ISA's .cc file, so each instantiation has internal linkage and the linker can never swap
// an AVX-512 copy for the AVX2 one (or the reverse).
//
// A kernel K provides:
//   template <int R, int C> static void Tile(int64_t n, const uint8_t* w, size_t w_stride,
//                                            const uint8_t* x, size_t x_stride, float* y,
//                                            int64_t y_stride);
//     computing y[c * y_stride + r] for R weight rows and C activation rows (C <= kCols),
//   kRows: weight rows per tile when m > 1; kCols: activation rows per tile (2..4);
//   kDecodeRows: weight rows per tile when m == 1.
#pragma once

#include <cstddef>
#include <cstdint>

namespace airlock::inference::kernels::internal {

// One block of R weight rows against all m activation rows. The weight rows (a few KB) stay in L1
// while the activations stream past, which is what makes prefill compute-bound.
template <class K, int R>
void RunRowBlock(int64_t n, const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int64_t m,
                 float* y, int64_t ys) {
  int64_t c = 0;
  for (; c + K::kCols <= m; c += K::kCols) {
    K::template Tile<R, K::kCols>(n, w, ws, x + c * xs, xs, y + c * ys, ys);
  }
  const int64_t left = m - c;
  if (left == 1) {
    K::template Tile<R, 1>(n, w, ws, x + c * xs, xs, y + c * ys, ys);
  } else if constexpr (K::kCols > 2) {
    if (left == 2) K::template Tile<R, 2>(n, w, ws, x + c * xs, xs, y + c * ys, ys);
    if constexpr (K::kCols > 3) {
      if (left == 3) K::template Tile<R, 3>(n, w, ws, x + c * xs, xs, y + c * ys, ys);
    }
  }
}

// Activation rows are taken in chunks of about this many bytes, so that a chunk stays in L2 while
// every weight row of the range passes over it (re-reading the weights per chunk costs far less
// than streaming a large batch of activations from L3 for every tile of weight rows).
inline constexpr size_t kActivationChunkBytes = size_t{256} << 10;

template <class K>
void MatMulTiled(int64_t n, const void* w, size_t w_row_bytes, int64_t row_begin, int64_t row_end,
                 const void* x, size_t x_row_bytes, int64_t m, float* y, int64_t y_stride) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  if (m == 1) {
    // Matrix-vector: several weight rows at once keep independent accumulation chains in flight
    // while the weights stream from memory.
    int64_t r = row_begin;
    for (; r + K::kDecodeRows <= row_end; r += K::kDecodeRows) {
      K::template Tile<K::kDecodeRows, 1>(n, wb + r * w_row_bytes, w_row_bytes, xb, x_row_bytes,
                                          y + r, y_stride);
    }
    for (; r < row_end; ++r) {
      K::template Tile<1, 1>(n, wb + r * w_row_bytes, w_row_bytes, xb, x_row_bytes, y + r,
                             y_stride);
    }
    return;
  }
  const int64_t by_bytes =
      static_cast<int64_t>(kActivationChunkBytes / (x_row_bytes > 0 ? x_row_bytes : 1));
  const int64_t chunk = by_bytes < K::kCols ? K::kCols : by_bytes / K::kCols * K::kCols;
  for (int64_t c0 = 0; c0 < m; c0 += chunk) {
    const int64_t mc = m - c0 < chunk ? m - c0 : chunk;
    const uint8_t* xc = xb + c0 * x_row_bytes;
    float* yc = y + c0 * y_stride;
    int64_t r = row_begin;
    for (; r + K::kRows <= row_end; r += K::kRows) {
      RunRowBlock<K, K::kRows>(n, wb + r * w_row_bytes, w_row_bytes, xc, x_row_bytes, mc, yc + r,
                               y_stride);
    }
    for (; r < row_end; ++r) {
      RunRowBlock<K, 1>(n, wb + r * w_row_bytes, w_row_bytes, xc, x_row_bytes, mc, yc + r,
                        y_stride);
    }
  }
}

template <class K>
float VecDotTiled(int64_t n, const void* w, const void* x) {
  float result;
  K::template Tile<1, 1>(n, static_cast<const uint8_t*>(w), 0, static_cast<const uint8_t*>(x), 0,
                         &result, 0);
  return result;
}

}  // namespace airlock::inference::kernels::internal
