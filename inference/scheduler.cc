// Scheduler: the step loop of continuous batching (admission, batch building, preemption,
// sampling and streaming per sequence).
#include "inference/scheduler.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace airlock::inference {

using Clock = std::chrono::steady_clock;

Scheduler::Scheduler(ModelExecutor& executor, const Tokenizer& tokenizer, int32_t max_sequences)
    : executor_(executor), tokenizer_(tokenizer), max_sequences_(max_sequences),
      n_vocab_(executor.model().config().n_vocab) {
  stats_.kv_blocks_total = executor_.kv_pool().n_blocks();
  stats_.kv_block_tokens = executor_.kv_pool().block_tokens();
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
  }
  thread_.join();
}

void Scheduler::Submit(std::unique_ptr<GenerationJob> job) {
  job->started = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  incoming_.push_back(std::move(job));
  ++stats_.waiting;
  wake_.notify_one();
}

absl::Status Scheduler::health() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return broken_;
}

EngineStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineStats s = stats_;
  s.kv_blocks_used = executor_.kv_pool().used();
  s.kv_blocks_cached = executor_.kv_pool().cached();
  return s;
}

void Scheduler::PublishStats(int32_t batch_sequences, int32_t batch_tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  CountRunningLocked();
  stats_.batch_sequences = batch_sequences;
  stats_.batch_tokens = batch_tokens;
  if (batch_tokens > 0) ++stats_.steps;
}

void Scheduler::CountRunning() {
  std::lock_guard<std::mutex> lock(mutex_);
  CountRunningLocked();
}

void Scheduler::CountRunningLocked() {
  stats_.running = static_cast<int32_t>(running_.size());
  stats_.waiting = static_cast<int32_t>(waiting_.size() + incoming_.size());
}

void Scheduler::Loop() {
  bool idle = false;  // the last step found nothing it could run
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const auto ready = [this] { return stopping_ || !incoming_.empty() || !running_.empty() || !waiting_.empty(); };
      if (idle) {
        // Sequences exist but none could run (cannot happen by the admission rules; a guard
        // against spinning): poll again shortly, or at once when work arrives.
        wake_.wait_for(lock, std::chrono::milliseconds(1), [this] { return stopping_ || !incoming_.empty(); });
      }
      wake_.wait(lock, ready);
      for (auto& job : incoming_) waiting_.push_back(std::move(job));
      incoming_.clear();
      if (stopping_) break;
    }
    idle = !Step();
  }
  const absl::Status down = absl::UnavailableError("the inference engine is shutting down");
  while (!running_.empty()) {
    std::unique_ptr<GenerationJob> job = std::move(running_.back());
    running_.pop_back();
    Fail(std::move(job), down);
  }
  while (!waiting_.empty()) {
    std::unique_ptr<GenerationJob> job = std::move(waiting_.front());
    waiting_.pop_front();
    Fail(std::move(job), down);
  }
  PublishStats(0, 0);
}

bool Scheduler::Step() {
  if (const absl::Status broken = health(); !broken.ok()) {
    // The executor can run no step any more: what arrives fails at once.
    while (!waiting_.empty()) {
      std::unique_ptr<GenerationJob> job = std::move(waiting_.front());
      waiting_.pop_front();
      Fail(std::move(job), broken);
    }
    CountRunning();
    return false;
  }
  // Cancellation first: a cancelled sequence leaves before the step and frees its blocks.
  const auto cancelled = [](const GenerationJob& job) { return job.request.cancelled && job.request.cancelled(); };
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (cancelled(**it)) {
      std::unique_ptr<GenerationJob> job = std::move(*it);
      it = waiting_.erase(it);
      Finish(std::move(job), StopReason::kCancelled, true);
    } else {
      ++it;
    }
  }
  for (size_t i = 0; i < running_.size();) {
    if (cancelled(*running_[i])) {
      std::unique_ptr<GenerationJob> job = std::move(running_[i]);
      running_.erase(running_.begin() + static_cast<ptrdiff_t>(i));
      Finish(std::move(job), StopReason::kCancelled, true);
    } else {
      ++i;
    }
  }
  Admit();
  std::vector<BatchEntry> batch;
  std::vector<GenerationJob*> jobs;
  if (!BuildBatch(&batch, &jobs)) {
    PublishStats(0, 0);
    return false;
  }
  int32_t batch_tokens = 0;
  for (const BatchEntry& e : batch) batch_tokens += static_cast<int32_t>(e.tokens.size());
  PublishStats(static_cast<int32_t>(batch.size()), batch_tokens);
  const absl::Status status = executor_.ForwardBatch(batch);
  if (!status.ok()) {
    // For good (a lost device)? Then the engine says so before any caller hears of the failure, so
    // that a retry is refused at once rather than queued.
    const absl::Status health = executor_.Health();
    if (!health.ok()) {
      std::lock_guard<std::mutex> lock(mutex_);
      broken_ = health;
    }
    // Nothing was computed; every sequence of the step fails with the reason.
    for (GenerationJob* job : jobs) Fail(TakeRunning(job), status);
    if (!health.ok()) {
      // The sequences not in this step, and every later job, fail too.
      while (!running_.empty()) {
        std::unique_ptr<GenerationJob> job = std::move(running_.back());
        running_.pop_back();
        Fail(std::move(job), health);
      }
      PublishStats(0, 0);
    }
    return true;
  }
  for (GenerationJob* job : jobs) {
    if (job->seq->n_past() != static_cast<int32_t>(job->tokens.size())) continue;  // prompt not done yet
    const Outcome outcome = AfterLogits(*job);
    if (outcome.kind == Outcome::kContinue) continue;
    std::unique_ptr<GenerationJob> owned = TakeRunning(job);
    if (outcome.kind == Outcome::kEnd) {
      Finish(std::move(owned), outcome.reason, outcome.stopped);
    } else {
      Fail(std::move(owned), outcome.error);
    }
  }
  if (running_.empty() && waiting_.empty()) PublishStats(0, 0);  // idle: no batch any more
  return true;
}

void Scheduler::Admit() {
  KvPool& pool = executor_.kv_pool();
  while (static_cast<int32_t>(running_.size()) < max_sequences_ && !waiting_.empty()) {
    GenerationJob& job = *waiting_.front();
    job.seq = *executor_.NewSequence(job.request.cache_scope);  // never fails
    // The last token is always computed: its logits are what the step is for.
    const int32_t total = static_cast<int32_t>(job.tokens.size());
    const int32_t cached = job.seq->AdoptPrefix(job.tokens, total - 1);
    const int32_t pending = total - cached;
    if (job.seq->BlocksNeeded(pending) > pool.available() || !job.seq->Reserve(pending)) {
      job.seq.reset();  // not now: wait for blocks (first come, first served)
      break;
    }
    if (!job.prefix_counted) {
      // A preempted sequence is readmitted (even before its prompt was done); it was one query.
      job.prefix_counted = true;
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.prefix_query_tokens += static_cast<uint64_t>(total);
      stats_.prefix_hit_tokens += static_cast<uint64_t>(cached);
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

std::unique_ptr<GenerationJob> Scheduler::TakeRunning(const GenerationJob* job) {
  auto it = std::find_if(running_.begin(), running_.end(), [job](const auto& r) { return r.get() == job; });
  std::unique_ptr<GenerationJob> owned = std::move(*it);
  running_.erase(it);
  return owned;
}

void Scheduler::Preempt(size_t running_index) {
  std::unique_ptr<GenerationJob> job = std::move(running_[running_index]);
  running_.erase(running_.begin() + static_cast<ptrdiff_t>(running_index));
  job->seq.reset();  // its full blocks stay cached: readmission often finds them again
  waiting_.push_front(std::move(job));
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.preemptions;
}

bool Scheduler::BuildBatch(std::vector<BatchEntry>* batch, std::vector<GenerationJob*>* jobs) {
  KvPool& pool = executor_.kv_pool();
  int32_t budget = executor_.options().n_batch;
  std::vector<bool> in_batch(running_.size(), false);
  // Decoding sequences first (one token each, oldest first), then prompt chunks.
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
      GenerationJob& job = *running_[i];
      const int32_t pending = static_cast<int32_t>(job.tokens.size()) - job.seq->n_past();
      const bool decoding = pending == 1 && job.have_first_logits;
      if (decoding != (pass == 0) || in_batch[i]) continue;
      const int32_t take = std::min(pending, budget);
      // A prompt's blocks were reserved at admission; a decode step may need a new block. Then the
      // most recently admitted sequence not in this step gives its blocks back (possibly this one:
      // the youngest not in the step is never older than it).
      bool preempted_self = false;
      while (job.seq->BlocksNeeded(take) > pool.available()) {
        size_t victim = running_.size();
        for (size_t v = running_.size(); v-- > 0;) {
          if (!in_batch[v]) {
            victim = v;
            break;
          }
        }
        if (victim == running_.size()) break;  // all others are in the step: wait for the next
        Preempt(victim);
        in_batch.erase(in_batch.begin() + static_cast<ptrdiff_t>(victim));
        if (victim == i) {
          preempted_self = true;
          break;
        }
      }
      if (preempted_self) {
        --i;  // the next sequence moved into slot i (wraps at 0 and comes back with ++i)
        continue;
      }
      if (!job.seq->Reserve(take)) continue;
      BatchEntry e;
      e.seq = job.seq.get();
      e.tokens = std::span<const int32_t>(job.tokens).subspan(static_cast<size_t>(job.seq->n_past()),
                                                              static_cast<size_t>(take));
      if (job.seq->n_past() + take == static_cast<int32_t>(job.tokens.size())) {
        job.logits.resize(static_cast<size_t>(n_vocab_));
        e.logits = job.logits.data();
      }
      batch->push_back(e);
      jobs->push_back(&job);
      in_batch[i] = true;
      budget -= take;
    }
  }
  return !batch->empty();
}

Scheduler::Outcome Scheduler::AfterLogits(GenerationJob& job) {
  const auto now = Clock::now();
  if (!job.have_first_logits) {
    job.have_first_logits = true;
    job.first_logits = now;
    job.result.prompt_seconds = std::chrono::duration<double>(now - job.started).count();
  }
  GenerateResult& result = job.result;
  const int32_t i = static_cast<int32_t>(result.output_tokens.size());
  if (i >= job.request.max_tokens) return Outcome::End(StopReason::kMaxTokens, false);
  if (job.constraint) job.constraint->Apply(job.logits.data(), n_vocab_);
  const int32_t token = job.sampler.Sample(job.logits.data(), n_vocab_);
  if (token == Sampler::kNoToken) {
    return Outcome::Error(absl::InternalError(
        job.constraint ? "no token the response format allows has a usable logit"
                       : "the model produced no usable logits (all NaN or -inf)"));
  }
  if (job.constraint) {
    if (absl::Status accepted = job.constraint->Accept(token); !accepted.ok()) {
      return Outcome::Error(absl::InternalError(absl::StrCat("the response format refused token ", token, ": ",
                                                             accepted.message())));
    }
  }
  job.sampler.Accept(token);
  result.output_tokens.push_back(token);
  if (tokenizer_.IsEndOfGeneration(token)) return Outcome::End(StopReason::kEndOfGeneration, false);
  const StopMatcher::FeedResult matched = job.stop.Feed(job.detok.Push(token));
  result.text.append(matched.text.data(), matched.text.size());
  if (job.on_piece && !job.on_piece(GeneratedPiece{token, std::string(matched.text)})) {
    return Outcome::End(StopReason::kCancelled, true);
  }
  if (matched.stopped) return Outcome::End(StopReason::kStopString, true);
  if (i + 1 == job.request.max_tokens) return Outcome::End(StopReason::kMaxTokens, false);
  if (job.seq->n_past() >= job.seq->n_ctx()) return Outcome::End(StopReason::kContextFull, false);
  job.tokens.push_back(token);
  return Outcome::Continue();
}

void Scheduler::Finish(std::unique_ptr<GenerationJob> job, StopReason reason, bool stopped) {
  job->seq.reset();
  GenerateResult& result = job->result;
  result.stop_reason = reason;
  if (!stopped) {
    // Text held back for a possible stop string or an unfinished UTF-8 character ends the output.
    const StopMatcher::FeedResult tail = job->stop.Feed(job->detok.Flush());
    std::string rest(tail.text);
    if (!tail.stopped) rest += job->stop.Flush();
    if (tail.stopped) result.stop_reason = StopReason::kStopString;
    if (!rest.empty()) {
      result.text += rest;
      if (job->on_piece) job->on_piece(GeneratedPiece{-1, rest});
    }
  }
  const auto now = Clock::now();
  if (job->have_first_logits) {
    result.generation_seconds = std::chrono::duration<double>(now - job->first_logits).count();
  }
  DoneCallback done = std::move(job->on_done);
  GenerateResult out = std::move(job->result);
  job.reset();
  CountRunning();  // the gauges are current before the caller hears of the end
  if (done) done(std::move(out));
}

void Scheduler::Fail(std::unique_ptr<GenerationJob> job, const absl::Status& status) {
  job->seq.reset();
  DoneCallback done = std::move(job->on_done);
  job.reset();
  CountRunning();
  if (done) done(status);
}

}  // namespace airlock::inference
