#include "tools/airlock_bench/memory_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "inference/base/cpu_features.h"

namespace airlock::bench {
namespace {

constexpr size_t kLine = 64;

// Eight (sixteen) independent accumulators: the compiler vectorizes the adds, which far outrun
// memory, so the loop runs at the speed of the loads.
uint32_t SumWordsPortable(const uint32_t* words, size_t n) {
  uint32_t acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += words[i + k];
  }
  uint32_t sum = 0;
  for (; i < n; ++i) sum += words[i];
  for (uint32_t a : acc) sum += a;
  return sum;
}

__attribute__((target("avx2"))) uint32_t SumWordsAvx2(const uint32_t* words, size_t n) {
  uint32_t acc[16] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 16; ++k) acc[k] += words[i + k];
  }
  uint32_t sum = 0;
  for (; i < n; ++i) sum += words[i];
  for (uint32_t a : acc) sum += a;
  return sum;
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

uint32_t SumWords(const uint32_t* words, size_t n) {
  static const bool avx2 = CpuHasAvx2Fma();
  return avx2 ? SumWordsAvx2(words, n) : SumWordsPortable(words, n);
}

double ReadBandwidth::best() const {
  return gb_per_s.empty() ? 0.0 : *std::max_element(gb_per_s.begin(), gb_per_s.end());
}

double ReadBandwidth::mean() const {
  if (gb_per_s.empty()) return 0.0;
  double s = 0;
  for (double g : gb_per_s) s += g;
  return s / static_cast<double>(gb_per_s.size());
}

namespace {

absl::Status CheckArguments(int threads, size_t bytes, int reps) {
  if (threads < 1 || threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("memory bandwidth: threads must be in [1, 1024], got ", threads));
  }
  if (reps < 1) return absl::InvalidArgumentError(absl::StrCat("memory bandwidth: reps must be >= 1, got ", reps));
  if (bytes / static_cast<size_t>(threads) < kLine) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory bandwidth: ", bytes, " bytes is less than one 64-byte line per thread"));
  }
  return absl::OkStatus();
}

// `threads` threads read their parts of [base, base + per_thread * threads): round 0 writes each
// part from its thread when `touch` (first touch: the pages land on the reader's NUMA node), else
// reads it unmeasured; then `reps` measured rounds. Each round starts when every thread is at the
// start barrier and ends when the last one is done.
ReadBandwidth ReadParts(uint8_t* writable, const uint8_t* base, size_t per_thread, int threads, int reps) {
  const int rounds = reps + 1;
  std::barrier start(threads), done(threads);
  std::atomic<uint32_t> sink{0};  // the sums go somewhere, so no compiler can drop the reads
  std::vector<double> seconds;
  auto work = [&](int t, bool timer) {
    const size_t offset = per_thread * static_cast<size_t>(t);
    for (int round = 0; round < rounds; ++round) {
      start.arrive_and_wait();
      const auto t0 = std::chrono::steady_clock::now();
      if (round == 0 && writable != nullptr) {
        std::memset(writable + offset, t + 1, per_thread);
      } else {
        sink.fetch_add(SumWords(reinterpret_cast<const uint32_t*>(base + offset), per_thread / sizeof(uint32_t)),
                       std::memory_order_relaxed);
      }
      done.arrive_and_wait();
      if (timer && round >= 1) {
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t, false);
  work(0, true);
  for (std::thread& th : pool) th.join();

  ReadBandwidth result;
  result.threads = threads;
  result.bytes = per_thread * static_cast<size_t>(threads);
  for (double s : seconds) result.gb_per_s.push_back(static_cast<double>(result.bytes) / s / 1e9);
  return result;
}

}  // namespace

absl::StatusOr<ReadBandwidth> MeasureReadBandwidth(int threads, size_t bytes, int reps) {
  if (absl::Status s = CheckArguments(threads, bytes, reps); !s.ok()) return s;
  const size_t per_thread = bytes / static_cast<size_t>(threads) / kLine * kLine;
  const size_t total = per_thread * static_cast<size_t>(threads);
  std::unique_ptr<uint8_t, FreeDeleter> buffer(static_cast<uint8_t*>(std::aligned_alloc(kLine, total)));
  if (buffer == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("memory bandwidth: cannot allocate ", total, " bytes"));
  }
  // A first round that writes counts as the unmeasured pass only after one more read, so the
  // measured rounds all read warm pages: ask for one extra and drop it.
  ReadBandwidth r = ReadParts(buffer.get(), buffer.get(), per_thread, threads, reps + 1);
  r.gb_per_s.erase(r.gb_per_s.begin());
  return r;
}

absl::StatusOr<ReadBandwidth> MeasureReadBandwidthOf(const uint8_t* data, size_t bytes, int threads, int reps) {
  if (data == nullptr) return absl::InvalidArgumentError("memory bandwidth: no memory to read");
  // Whole lines from the first line boundary on: the words are read aligned.
  const size_t skip = (kLine - reinterpret_cast<uintptr_t>(data) % kLine) % kLine;
  bytes = bytes > skip ? bytes - skip : 0;
  if (absl::Status s = CheckArguments(threads, bytes, reps); !s.ok()) return s;
  const size_t per_thread = bytes / static_cast<size_t>(threads) / kLine * kLine;
  return ReadParts(nullptr, data + skip, per_thread, threads, reps);
}

}  // namespace airlock::bench
