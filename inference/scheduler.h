// The continuous-batching scheduler behind Engine: one step thread per engine that, step after
// step, admits waiting generations, builds one batch from every running sequence (a decode token
// each, then prompt chunks up to the per-step token budget), runs it through the executor, and
// samples, streams and finishes what the step produced.
//
// Admission is first come, first served (the daemon decides the order in which work arrives) and
// bounded by sequence slots and free KV blocks: a sequence is admitted only when its whole pending
// prompt fits, so prefill never waits for blocks. A decoding sequence that needs a new block when
// none is free preempts the most recently admitted sequence not in the step (its blocks return to
// the pool, the full ones stay cached, and it is recomputed when readmitted first in line); the
// oldest sequence always progresses, so nothing deadlocks. Cancellation is polled for every
// sequence before each step and frees its blocks at once.
//
// Batch invariance: a sequence's tokens depend only on its own request. Kernels compute each row
// in a fixed order; attention reads only the sequence's own positions; a recomputed or
// prefix-shared position holds the same numbers as one computed in place.
//
// Thread-safety: Submit() and stats() from any thread; everything else on the step thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "inference/backend/backend.h"
#include "inference/engine.h"
#include "inference/sampling/sampler.h"
#include "inference/sampling/stop_matcher.h"
#include "inference/tokenizer/streaming_detokenizer.h"
#include "inference/tokenizer/tokenizer.h"

namespace airlock::inference {

// One generation from Start() to on_done. Built by Engine::Start (validated, tokenized).
struct GenerationJob {
  GenerationJob(const Tokenizer& tokenizer, Sampler s, StopMatcher m)
      : sampler(std::move(s)), stop(std::move(m)), detok(tokenizer) {}
  GenerateRequest request;
  PieceCallback on_piece;
  DoneCallback on_done;
  GenerateResult result;  // prompt_tokens set by Start
  Sampler sampler;
  StopMatcher stop;
  StreamingDetokenizer detok;
  // What the cache must hold: the prompt and every output token; the last output token is the
  // next input while decoding.
  std::vector<int32_t> tokens;
  std::unique_ptr<Sequence> seq;  // while admitted
  std::vector<float> logits;
  std::chrono::steady_clock::time_point started, first_logits;
  bool have_first_logits = false;
  bool prefix_counted = false;  // in the prefix-cache statistics (once, whatever the readmissions)
  // Structured output (GenerateRequest::response_format): masks each row of logits before the
  // draw and follows the tokens drawn. Kept across a preemption (it follows the output, not the
  // KV cache).
  std::optional<TokenConstraint> constraint;
};

class Scheduler {
 public:
  Scheduler(ModelExecutor& executor, const Tokenizer& tokenizer, int32_t max_sequences);
  ~Scheduler();  // ends every job with UNAVAILABLE and joins the step thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void Submit(std::unique_ptr<GenerationJob> job);
  EngineStats stats() const;
  // OK while steps can run; once the executor reports a lasting failure (a lost device) after a
  // failed step, that error: every job then waiting or submitted later fails with it at once.
  absl::Status health() const;
  int32_t max_sequences() const { return max_sequences_; }

 private:
  void Loop();
  // One iteration on the step thread: false when there was nothing to do.
  bool Step();
  void Admit();
  bool BuildBatch(std::vector<BatchEntry>* batch, std::vector<GenerationJob*>* jobs);
  void Preempt(size_t running_index);
  // Removes `job` from running_ and hands over its ownership.
  std::unique_ptr<GenerationJob> TakeRunning(const GenerationJob* job);
  // What a sequence does after a step gave it logits.
  struct Outcome {
    enum Kind { kContinue, kEnd, kError } kind = kContinue;
    StopReason reason = StopReason::kMaxTokens;
    bool stopped = false;  // ended by a stop string or cancellation: held-back text is dropped
    absl::Status error;
    static Outcome Continue() { return {}; }
    static Outcome End(StopReason r, bool s) { return {kEnd, r, s, absl::OkStatus()}; }
    static Outcome Error(absl::Status e) { return {kError, StopReason::kMaxTokens, false, std::move(e)}; }
  };
  // The step computed the logits after job.tokens: sample and stream the next token, or end.
  Outcome AfterLogits(GenerationJob& job);
  void Finish(std::unique_ptr<GenerationJob> job, StopReason reason, bool stopped);
  void Fail(std::unique_ptr<GenerationJob> job, const absl::Status& status);
  void PublishStats(int32_t batch_sequences, int32_t batch_tokens);
  void CountRunning();
  void CountRunningLocked();  // mutex_ held

  ModelExecutor& executor_;
  const Tokenizer& tokenizer_;
  const int32_t max_sequences_;
  const int32_t n_vocab_;

  // Step thread only.
  std::deque<std::unique_ptr<GenerationJob>> waiting_;
  std::vector<std::unique_ptr<GenerationJob>> running_;  // admission order

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<GenerationJob>> incoming_;  // guarded by mutex_
  bool stopping_ = false;                                 // guarded by mutex_
  absl::Status broken_;                                   // guarded by mutex_
  EngineStats stats_;                                     // guarded by mutex_
  std::thread thread_;
};

}  // namespace airlock::inference
