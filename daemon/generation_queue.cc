// GenerationQueue: a bounded FIFO in front of one engine, drained by one worker thread.
#include "daemon/generation_queue.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace airlock::daemon {

GenerationQueue::GenerationQueue(inference::Engine& engine, size_t max_waiting)
    : engine_(engine), max_waiting_(max_waiting), worker_([this] { WorkerLoop(); }) {}

GenerationQueue::~GenerationQueue() { Shutdown(); }

absl::Status GenerationQueue::Submit(std::unique_ptr<GenerationJob> job) {
  std::vector<Entry> cancelled;
  absl::Status status;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    if (waiting_.size() >= max_waiting_) {
      // Jobs whose callers gave up hold no place in the queue.
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        if (it->job->request.cancelled && it->job->request.cancelled()) {
          cancelled.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (waiting_.size() >= max_waiting_) {
      status = absl::ResourceExhaustedError(
          absl::StrCat("the model's queue is full (", max_waiting_, " requests waiting; models[].max_queue)"));
    } else {
      waiting_.push_back(Entry{std::move(job), std::chrono::steady_clock::now()});
      wake_.notify_one();
    }
  }
  const auto now = std::chrono::steady_clock::now();
  for (Entry& e : cancelled) {
    e.job->on_done(absl::CancelledError("cancelled before it started"),
                   std::chrono::duration<double>(now - e.submitted).count());
  }
  return status;
}

void GenerationQueue::Shutdown() {
  std::deque<Entry> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    abandoned.swap(waiting_);
    wake_.notify_all();
  }
  for (Entry& e : abandoned) e.job->on_done(absl::UnavailableError("the server is shutting down"), 0);
  if (worker_.joinable()) worker_.join();
}

size_t GenerationQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_.size();
}

bool GenerationQueue::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

void GenerationQueue::WorkerLoop() {
  for (;;) {
    Entry entry;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !waiting_.empty(); });
      if (waiting_.empty()) return;  // stopping
      entry = std::move(waiting_.front());
      waiting_.pop_front();
      running_ = true;
    }
    GenerationJob& job = *entry.job;
    const double queue_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - entry.submitted).count();
    if (job.request.cancelled && job.request.cancelled()) {
      job.on_done(absl::CancelledError("cancelled before it started"), queue_seconds);
    } else {
      job.on_done(engine_.Generate(job.request, job.on_piece), queue_seconds);
    }
    entry.job.reset();
    std::lock_guard<std::mutex> lock(mutex_);
    running_ = false;
  }
}

}  // namespace airlock::daemon
