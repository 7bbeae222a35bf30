// A model's work queue: a bounded set of waiting generation jobs, fair across identities, handed
// to the model's engine, which runs up to engine.max_sequences() of them at once in shared batched
// steps. gRPC threads only enqueue; they never block on the engine.
//
// Fair across identities (docs/quotas.md, "Fair scheduling"): the queue decides the order in which
// waiting jobs are admitted into the engine's batch. Waiting jobs are kept per owner and taken
// round-robin, one job per owner with waiting jobs in turn, so an owner with one waiting job waits
// at most for the first running job to end and one job of each other waiting owner, however many
// jobs those owners queued. When the queue is full, a job from an owner that holds fewer waiting
// jobs than the largest holder takes the place of that holder's newest waiting job (which ends
// with RESOURCE_EXHAUSTED); only the largest holder itself is refused.
//
// Threads: one dispatcher thread per queue hands jobs to Engine::Start when the engine has a free
// sequence slot, and runs every job's on_done (which writes the audit log: a disk write that must
// not hold up the engine's step thread, where the engine reports the end). A job's on_piece runs
// on the engine's step thread and must return quickly.
//
// Thread-safety: Submit() and Shutdown() may be called from any thread. on_done of a job that
// never started may also run on the thread calling Shutdown() or on a thread calling Submit() (a
// cancelled or displaced waiting job).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/engine.h"

namespace airlock::daemon {

struct GenerationJob {
  std::string owner;                   // the identity the job is fair-shared by
  inference::GenerateRequest request;  // request.cancelled is polled by the engine
  // Each piece as it is produced, on the engine's step thread (return quickly); return false to
  // stop generating.
  inference::PieceCallback on_piece;
  // Exactly once, after the last on_piece, on the queue's thread: the result, or the engine's
  // error (also when the engine refused the job at Start), or CANCELLED when the job was cancelled
  // before it started, or UNAVAILABLE when the queue shut down first. queue_seconds: from Submit
  // to the hand-over to the engine.
  std::function<void(absl::StatusOr<inference::GenerateResult> result, double queue_seconds)> on_done;
};

class GenerationQueue {
 public:
  // `engine` must outlive the queue. At most engine.max_sequences() jobs run at once. Starts the
  // dispatcher thread.
  GenerationQueue(inference::Engine& engine, size_t max_waiting);
  ~GenerationQueue();  // Shutdown()
  GenerationQueue(const GenerationQueue&) = delete;
  GenerationQueue& operator=(const GenerationQueue&) = delete;

  // RESOURCE_EXHAUSTED when max_waiting jobs already wait and the job's owner holds the most of
  // them; UNAVAILABLE after Shutdown().
  absl::Status Submit(std::unique_ptr<GenerationJob> job);

  // Refuses new jobs, finishes waiting ones with UNAVAILABLE, waits for the running ones to end
  // (the caller cancels them through request.cancelled if it will not wait for them).
  void Shutdown();

  size_t waiting() const;
  // Jobs handed to the engine whose on_done has not returned yet.
  size_t running() const;
  // Jobs refused because the queue was full, since the start: refused by Submit, or displaced by
  // another owner's job (both end with RESOURCE_EXHAUSTED).
  uint64_t refused_full() const { return refused_full_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::unique_ptr<GenerationJob> job;
    std::chrono::steady_clock::time_point submitted;
    double queue_seconds = 0;  // set when handed to the engine
  };
  struct Finished {
    uint64_t id;
    absl::StatusOr<inference::GenerateResult> result;
  };
  void DispatchLoop();
  // Hands `entry` to the engine as running job `id`; a refusal is reported through `finished`.
  void StartOnEngine(uint64_t id, Entry& entry);
  // Called by the engine (step thread) when job `id` ends: queues the result for DispatchLoop.
  void OnEngineDone(uint64_t id, absl::StatusOr<inference::GenerateResult> result);
  // Removes the jobs whose callers gave up (they hold no place in the queue). Under mutex_.
  void TakeCancelledLocked(std::vector<Entry>* out);
  // The owner with the most waiting jobs (the earliest in turn order on a tie). Under mutex_.
  std::string LargestOwnerLocked() const;
  // The next waiting job in round-robin order; waiting_count_ must be > 0. Under mutex_.
  Entry TakeNextLocked();

  inference::Engine& engine_;
  const size_t max_waiting_;
  const size_t max_running_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  // Waiting jobs per owner, oldest first, and the owners with waiting jobs in turn order.
  std::map<std::string, std::deque<Entry>> waiting_;  // guarded by mutex_
  std::deque<std::string> turns_;                     // guarded by mutex_
  size_t waiting_count_ = 0;                          // guarded by mutex_
  // Jobs handed to the engine, by id, until their on_done has returned.
  std::map<uint64_t, Entry> running_;  // guarded by mutex_
  // Of those, the ones the engine still runs (each holds one of max_running_ slots).
  size_t on_engine_ = 0;               // guarded by mutex_
  // Jobs the engine has finished whose on_done has not run yet.
  std::vector<Finished> finished_;     // guarded by mutex_
  uint64_t next_id_ = 0;               // guarded by mutex_
  bool stopping_ = false;              // guarded by mutex_
  std::atomic<uint64_t> refused_full_{0};
  std::thread dispatcher_;
};

}  // namespace airlock::daemon
