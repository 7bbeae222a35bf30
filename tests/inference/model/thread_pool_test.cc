// ThreadPool: static and dynamic splits cover every index once; a dynamic split lets the other
// threads take the remaining pieces while one thread is held up.
#include "inference/backend/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

namespace airlock::inference {
namespace {

TEST(ThreadPoolTest, ParallelForDynamicCoversEveryIndexOnceInPiecesOfGrain) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{17}, int64_t{100}, int64_t{1000}}) {
      for (int64_t grain : {int64_t{1}, int64_t{16}, int64_t{48}}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<bool> bad_piece{false};
        pool.ParallelForDynamic(n, grain, [&](int64_t begin, int64_t end) {
          // Every piece starts on a multiple of grain and is grain long, except the last.
          if (begin % grain != 0 || end <= begin || (end - begin != grain && end != n)) bad_piece = true;
          for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        });
        EXPECT_FALSE(bad_piece) << threads << " threads, n " << n << ", grain " << grain;
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1)
              << "index " << i << ", " << threads << " threads, n " << n << ", grain " << grain;
        }
      }
    }
  }
}

TEST(ThreadPoolTest, ParallelForDynamicLetsOtherThreadsTakeTheRestWhileOneIsHeldUp) {
  // The thread that gets the first piece waits until every other piece is done. A fixed split
  // would have given it more pieces of its own, and the wait would run into its deadline.
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    constexpr int64_t kPieces = 24;
    std::mutex mutex;
    std::condition_variable done_cv;
    int done = 0;
    bool first_saw_all = false;
    pool.ParallelForDynamic(kPieces * 16, 16, [&](int64_t begin, int64_t) {
      std::unique_lock<std::mutex> lock(mutex);
      if (begin == 0) {
        first_saw_all = done_cv.wait_for(lock, std::chrono::seconds(20), [&] { return done == kPieces - 1; });
      } else {
        ++done;
        done_cv.notify_all();
      }
    });
    EXPECT_TRUE(first_saw_all) << threads << " threads: the other pieces were not taken by the other threads";
    EXPECT_EQ(done, kPieces - 1);
  }
}

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  ThreadPool pool(3);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{64}, int64_t{1001}}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.ParallelFor(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "index " << i << ", n " << n;
  }
}

}  // namespace
}  // namespace airlock::inference
