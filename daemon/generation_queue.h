// A model's work queue: one worker thread runs generation jobs on the model's engine one after
// another (the engine runs one sequence at a time), and at most `max_waiting` jobs wait. gRPC
// threads only enqueue; they never block on the engine.
//
// Thread-safety: Submit() and Shutdown() may be called from any thread. A job's callbacks run on
// the worker thread (on_done also on the thread calling Shutdown() for jobs that never started).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/engine.h"

namespace airlock::daemon {

struct GenerationJob {
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

  // RESOURCE_EXHAUSTED when max_waiting jobs already wait; UNAVAILABLE after Shutdown().
  absl::Status Submit(std::unique_ptr<GenerationJob> job);

  // Refuses new jobs, finishes waiting ones with UNAVAILABLE, waits for the running one to end.
  void Shutdown();

  size_t waiting() const;
  bool running() const;

 private:
  struct Entry {
    std::unique_ptr<GenerationJob> job;
    std::chrono::steady_clock::time_point submitted;
  };
  void WorkerLoop();

  inference::Engine& engine_;
  const size_t max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Entry> waiting_;  // guarded by mutex_
  bool running_ = false;       // guarded by mutex_
  bool stopping_ = false;      // guarded by mutex_
  std::thread worker_;
};

}  // namespace airlock::daemon
