// A fixed pool of worker threads for the CPU forward pass: one fork/join region per operation,
// with workers spinning briefly between regions (decode runs hundreds of regions per token, so a
// sleep/wake per region would dominate) and sleeping when idle.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace airlock::inference {

// Run()/ParallelFor() are called from one thread at a time (the owner); the pool is not reentrant.
class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // total threads, the calling thread included
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index) once on each of size() threads (the caller is index 0) and waits.
  void Run(const std::function<void(int)>& fn);

  // Splits [0, n) into size() contiguous chunks (aligned to `grain`) and calls fn(begin, end) for
  // each non-empty one.
  template <typename F>
  void ParallelFor(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n <= grain) {
      fn(int64_t{0}, n);
      return;
    }
    Run([&](int t) {
      const auto [begin, end] = Chunk(n, grain, t);
      if (begin < end) fn(begin, end);
    });
  }

  // Splits [0, n) into pieces of `grain` (the last may be shorter) that the threads take in turn
  // as they come free, so a thread that starts late or runs slower (another tenant on its core)
  // does not hold up the others; calls fn(begin, end) for each piece. What a piece computes must
  // not depend on which thread runs it.
  template <typename F>
  void ParallelForDynamic(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n <= grain) {
      fn(int64_t{0}, n);
      return;
    }
    std::atomic<int64_t> next{0};
    Run([&](int) {
      for (;;) {
        const int64_t begin = next.fetch_add(grain, std::memory_order_relaxed);
        if (begin >= n) break;
        fn(begin, std::min(n, begin + grain));
      }
    });
  }

  std::pair<int64_t, int64_t> Chunk(int64_t n, int64_t grain, int t) const {
    const int64_t units = (n + grain - 1) / grain;
    const int64_t per = units / n_threads_, extra = units % n_threads_;
    const int64_t u0 = t * per + (t < extra ? t : extra);
    const int64_t u1 = u0 + per + (t < extra ? 1 : 0);
    return {std::min(n, u0 * grain), std::min(n, u1 * grain)};
  }

 private:
  void WorkerLoop(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int)>* job_ = nullptr;
};

}  // namespace airlock::inference
