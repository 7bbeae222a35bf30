// airlock-bench memory: the machine's memory read bandwidth, STREAM-like, measured the way decode
// reads weights: T threads each stream through their own contiguous part of a buffer far larger
// than the caches (each part first touched by the thread that reads it, so it sits on that
// thread's NUMA node), summing 32-bit words with wide loads. Decode is bandwidth-bound: a
// single-token step reads Model::decode_weight_bytes(), so tokens/s cannot exceed bandwidth /
// those bytes; the pp/tg run reports the fraction of this bandwidth its decode reaches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace airlock::bench {

struct ReadBandwidth {
  int threads = 0;
  size_t bytes = 0;             // read per repetition
  std::vector<double> gb_per_s; // one per repetition, 1 GB = 1e9 bytes
  double best() const;
  double mean() const;
};

// Reads a fresh buffer of `bytes` (rounded down to whole 64-byte lines per thread) `reps` times
// with `threads` threads, after one unmeasured pass. INVALID_ARGUMENT for threads outside
// [1, 1024], reps < 1 or fewer than 64 bytes per thread; RESOURCE_EXHAUSTED when the buffer
// cannot be allocated.
absl::StatusOr<ReadBandwidth> MeasureReadBandwidth(int threads, size_t bytes, int reps);

// The same over memory the caller has, e.g. a model's mapped weights: the very pages decode reads,
// with no allocation (so it leaves the process's peak RSS alone). Meaningful only where `bytes`
// is far larger than the last-level cache.
absl::StatusOr<ReadBandwidth> MeasureReadBandwidthOf(const uint8_t* data, size_t bytes, int threads, int reps);

// The read kernel: a wrapping sum of `n` words (AVX2 loads where the CPU has them). Exposed for
// kernels_bench's single-thread reference.
uint32_t SumWords(const uint32_t* words, size_t n);

}  // namespace airlock::bench
