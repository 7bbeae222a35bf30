// GenerationQueue: a bounded queue, fair across owners, in front of one engine, drained by one
// worker thread.
#include "daemon/generation_queue.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"

namespace airlock::daemon {

GenerationQueue::GenerationQueue(inference::Engine& engine, size_t max_waiting)
    : engine_(engine), max_waiting_(max_waiting), worker_([this] { WorkerLoop(); }) {}

GenerationQueue::~GenerationQueue() { Shutdown(); }

void GenerationQueue::TakeCancelledLocked(std::vector<Entry>* out) {
  for (auto owner = waiting_.begin(); owner != waiting_.end();) {
    std::deque<Entry>& jobs = owner->second;
    for (auto it = jobs.begin(); it != jobs.end();) {
      if (it->job->request.cancelled && it->job->request.cancelled()) {
        out->push_back(std::move(*it));
        it = jobs.erase(it);
        --waiting_count_;
      } else {
        ++it;
      }
    }
    if (jobs.empty()) {
      turns_.erase(std::find(turns_.begin(), turns_.end(), owner->first));
      owner = waiting_.erase(owner);
    } else {
      ++owner;
    }
  }
}

std::string GenerationQueue::LargestOwnerLocked() const {
  std::string largest;
  size_t most = 0;
  for (const std::string& owner : turns_) {
    const size_t n = waiting_.at(owner).size();
    if (n > most) {
      most = n;
      largest = owner;
    }
  }
  return largest;
}

absl::Status GenerationQueue::Submit(std::unique_ptr<GenerationJob> job) {
  std::vector<Entry> cancelled;
  std::optional<Entry> displaced;
  absl::Status status;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    if (waiting_count_ >= max_waiting_) TakeCancelledLocked(&cancelled);
    if (waiting_count_ >= max_waiting_) {
      const std::string largest = LargestOwnerLocked();
      auto mine = waiting_.find(job->owner);
      const size_t my_waiting = mine == waiting_.end() ? 0 : mine->second.size();
      if (largest.empty() || largest == job->owner || waiting_.at(largest).size() <= my_waiting) {
        refused_full_.fetch_add(1, std::memory_order_relaxed);
        status = absl::ResourceExhaustedError(absl::StrCat(
            "the model's queue is full (", max_waiting_, " requests waiting, ", my_waiting,
            " of them yours; models[].max_queue)"));
      } else {
        // The largest holder gives up its newest waiting job to an owner with fewer.
        std::deque<Entry>& theirs = waiting_.at(largest);
        refused_full_.fetch_add(1, std::memory_order_relaxed);
        displaced = std::move(theirs.back());
        theirs.pop_back();
        --waiting_count_;
      }
    }
    if (status.ok()) {
      std::deque<Entry>& jobs = waiting_[job->owner];
      if (jobs.empty()) turns_.push_back(job->owner);
      jobs.push_back(Entry{std::move(job), std::chrono::steady_clock::now()});
      ++waiting_count_;
      wake_.notify_one();
    }
  }
  const auto now = std::chrono::steady_clock::now();
  for (Entry& e : cancelled) {
    e.job->on_done(absl::CancelledError("cancelled before it started"),
                   std::chrono::duration<double>(now - e.submitted).count());
  }
  if (displaced.has_value()) {
    displaced->job->on_done(
        absl::ResourceExhaustedError(absl::StrCat(
            "the model's queue is full (", max_waiting_, " requests waiting; models[].max_queue) and this "
            "identity held the most of them: its newest waiting request gave its place to another identity's")),
        std::chrono::duration<double>(now - displaced->submitted).count());
  }
  return status;
}

void GenerationQueue::Shutdown() {
  std::vector<Entry> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    for (auto& [owner, jobs] : waiting_) {
      for (Entry& e : jobs) abandoned.push_back(std::move(e));
    }
    waiting_.clear();
    turns_.clear();
    waiting_count_ = 0;
    wake_.notify_all();
  }
  for (Entry& e : abandoned) e.job->on_done(absl::UnavailableError("the server is shutting down"), 0);
  if (worker_.joinable()) worker_.join();
}

size_t GenerationQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_count_;
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
      wake_.wait(lock, [this] { return stopping_ || waiting_count_ > 0; });
      if (waiting_count_ == 0) return;  // stopping
      // Round-robin: the owner whose turn it is gives its oldest job, then goes to the back.
      const std::string owner = std::move(turns_.front());
      turns_.pop_front();
      std::deque<Entry>& jobs = waiting_.at(owner);
      entry = std::move(jobs.front());
      jobs.pop_front();
      --waiting_count_;
      if (jobs.empty()) {
        waiting_.erase(owner);
      } else {
        turns_.push_back(owner);
      }
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
