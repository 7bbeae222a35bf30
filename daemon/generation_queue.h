// A model's work queue: one worker thread runs generation jobs on the model's engine one after
// another (the engine runs one sequence at a time), and at most `max_waiting` jobs wait. gRPC
// threads only enqueue; they never block on the engine.
//
// Fair across identities (docs/quotas.md, "Fair scheduling"): waiting jobs are kept per owner and
// taken round-robin, one job per owner with waiting jobs in turn, so an owner with one waiting job
// waits at most for the running job and one job of each other waiting owner, however many jobs
// those owners queued. When the queue is full, a job from an owner that holds fewer waiting jobs
// than the largest holder takes the place of that holder's newest waiting job (which ends with
// RESOURCE_EXHAUSTED); only the largest holder itself is refused.
//
// Thread-safety: Submit() and Shutdown() may be called from any thread. A job's callbacks run on
// the worker thread; on_done of a job that never started may also run on the thread calling
// Shutdown() or on a thread calling Submit() (a cancelled or displaced waiting job).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/engine.h"

namespace airlock::daemon {

struct GenerationJob {
  std::string owner;                   // the identity the job is fair-shared by
  inference::GenerateRequest request;  // request.cancelled is polled by the engine
  // Each piece as it is produced; return false to stop generating.
  inference::PieceCallback on_piece;
  // Exactly once, after the last on_piece: the result, or the engine's error, or CANCELLED when
  // the job was cancelled before it started, or UNAVAILABLE when the queue shut down first.
  // queue_seconds: from Submit to the start of generation.
  std::function<void(absl::StatusOr<inference::GenerateResult> result, double queue_seconds)> on_done;
};

class GenerationQueue {
 public:
  // `engine` must outlive the queue. Starts the worker thread.
  GenerationQueue(inference::Engine& engine, size_t max_waiting);
  ~GenerationQueue();  // Shutdown()
  GenerationQueue(const GenerationQueue&) = delete;
  GenerationQueue& operator=(const GenerationQueue&) = delete;

  // RESOURCE_EXHAUSTED when max_waiting jobs already wait and the job's owner holds the most of
  // them; UNAVAILABLE after Shutdown().
  absl::Status Submit(std::unique_ptr<GenerationJob> job);

  // Refuses new jobs, finishes waiting ones with UNAVAILABLE, waits for the running one to end.
  void Shutdown();

  size_t waiting() const;
  bool running() const;
  // Jobs refused because the queue was full, since the start: refused by Submit, or displaced by
  // another owner's job (both end with RESOURCE_EXHAUSTED).
  uint64_t refused_full() const { return refused_full_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::unique_ptr<GenerationJob> job;
    std::chrono::steady_clock::time_point submitted;
  };
  void WorkerLoop();
  // Removes the jobs whose callers gave up (they hold no place in the queue). Under mutex_.
  void TakeCancelledLocked(std::vector<Entry>* out);
  // The owner with the most waiting jobs (the earliest in turn order on a tie). Under mutex_.
  std::string LargestOwnerLocked() const;

  inference::Engine& engine_;
  const size_t max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  // Waiting jobs per owner, oldest first, and the owners with waiting jobs in turn order.
  std::map<std::string, std::deque<Entry>> waiting_;  // guarded by mutex_
  std::deque<std::string> turns_;                     // guarded by mutex_
  size_t waiting_count_ = 0;                          // guarded by mutex_
  bool running_ = false;       // guarded by mutex_
  bool stopping_ = false;      // guarded by mutex_
  std::atomic<uint64_t> refused_full_{0};
  std::thread worker_;
};

}  // namespace airlock::daemon
