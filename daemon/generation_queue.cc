// GenerationQueue: a bounded queue, fair across owners, in front of one engine that runs many
// jobs at once; one dispatcher thread admits jobs into the engine and runs their on_done.
#include "daemon/generation_queue.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"

namespace airlock::daemon {

GenerationQueue::GenerationQueue(inference::Engine& engine, size_t max_waiting)
    : engine_(engine),
      max_waiting_(max_waiting),
      max_running_(static_cast<size_t>(std::max(1, engine.max_sequences()))),
      dispatcher_([this] { DispatchLoop(); }) {}

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
      wake_.notify_all();
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
    if (stopping_ && !dispatcher_.joinable()) return;
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
  // The dispatcher returns once every running job has ended and its on_done has run.
  if (dispatcher_.joinable()) dispatcher_.join();
}

size_t GenerationQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_count_;
}

size_t GenerationQueue::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_.size();
}

GenerationQueue::Entry GenerationQueue::TakeNextLocked() {
  // Round-robin: the owner whose turn it is gives its oldest job, then goes to the back.
  const std::string owner = std::move(turns_.front());
  turns_.pop_front();
  std::deque<Entry>& jobs = waiting_.at(owner);
  Entry entry = std::move(jobs.front());
  jobs.pop_front();
  --waiting_count_;
  if (jobs.empty()) {
    waiting_.erase(owner);
  } else {
    turns_.push_back(owner);
  }
  return entry;
}

void GenerationQueue::OnEngineDone(uint64_t id, absl::StatusOr<inference::GenerateResult> result) {
  // The engine's step thread: only hand the result over; on_done runs on the dispatcher.
  std::lock_guard<std::mutex> lock(mutex_);
  finished_.push_back(Finished{id, std::move(result)});
  --on_engine_;
  wake_.notify_all();
}

void GenerationQueue::StartOnEngine(uint64_t id, Entry& entry) {
  GenerationJob& job = *entry.job;
  if (job.request.cancelled && job.request.cancelled()) {
    OnEngineDone(id, absl::CancelledError("cancelled before it started"));
    return;
  }
  // The request and piece callback move to the engine; the job keeps on_done for the dispatcher.
  absl::Status started =
      engine_.Start(std::move(job.request), std::move(job.on_piece),
                    [this, id](absl::StatusOr<inference::GenerateResult> result) { OnEngineDone(id, std::move(result)); });
  // A refused request never reaches on_done through the engine: report it the same way.
  if (!started.ok()) OnEngineDone(id, std::move(started));
}

void GenerationQueue::DispatchLoop() {
  for (;;) {
    std::vector<std::pair<uint64_t, Entry*>> to_start;
    std::vector<Finished> finished;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] {
        return !finished_.empty() || (waiting_count_ > 0 && on_engine_ < max_running_) ||
               (stopping_ && running_.empty());
      });
      if (finished_.empty() && running_.empty() && stopping_) return;  // waiting_ was emptied by Shutdown
      finished.swap(finished_);
      // Admission into the batch in round-robin order, as many as the engine has free slots.
      while (waiting_count_ > 0 && on_engine_ < max_running_) {
        Entry entry = TakeNextLocked();
        entry.queue_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - entry.submitted).count();
        const uint64_t id = next_id_++;
        ++on_engine_;
        // std::map nodes do not move, so the pointer stays valid until this thread erases it.
        Entry& placed = running_.emplace(id, std::move(entry)).first->second;
        to_start.emplace_back(id, &placed);
      }
    }
    // Ended jobs first: their on_done completes the call (audit record, response).
    for (Finished& f : finished) {
      Entry* entry = nullptr;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        entry = &running_.at(f.id);
      }
      entry->job->on_done(std::move(f.result), entry->queue_seconds);
      std::lock_guard<std::mutex> lock(mutex_);
      running_.erase(f.id);
    }
    for (auto& [id, entry] : to_start) StartOnEngine(id, *entry);
  }
}

}  // namespace airlock::daemon
