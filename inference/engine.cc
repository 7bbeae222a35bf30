// Engine: tokenize -> prefill -> sample/decode loop with streaming detokenisation and stop rules.
#include "inference/engine.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"
#include "inference/sampling/sampler.h"
#include "inference/sampling/stop_matcher.h"
#include "inference/tokenizer/streaming_detokenizer.h"

namespace airlock::inference {

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kMaxTokens: return "max_tokens";
    case StopReason::kEndOfGeneration: return "eog";
    case StopReason::kStopString: return "stop_string";
    case StopReason::kContextFull: return "context_full";
    case StopReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& path, const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  AIRLOCK_ASSIGN_OR_RETURN(e->model_, Model::Load(path));
  auto tokenizer = Tokenizer::FromGguf(e->model_->file());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  e->tokenizer_ = std::move(*tokenizer);
  if (e->tokenizer_->n_vocab() > e->model_->config().n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the tokenizer has ", e->tokenizer_->n_vocab(),
                                                   " tokens but the embedding only ", e->model_->config().n_vocab));
  }
  e->backend_ = CreateCpuBackend();
  ExecutorOptions eo;
  eo.n_threads = options.n_threads;
  eo.n_ctx = options.n_ctx;
  eo.n_batch = options.n_batch;
  eo.kv_type = options.kv_type;
  AIRLOCK_ASSIGN_OR_RETURN(e->executor_, e->backend_->CreateExecutor(*e->model_, eo));
  e->logits_.resize(static_cast<size_t>(e->model_->config().n_vocab));
  return e;
}

absl::StatusOr<GenerateResult> Engine::Generate(const GenerateRequest& request, const PieceCallback& on_piece) {
  AIRLOCK_RETURN_IF_ERROR(ValidateSamplingParams(request.sampling));
  if (request.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ", request.max_tokens));
  }
  AIRLOCK_ASSIGN_OR_RETURN(StopMatcher stop, StopMatcher::Create(request.stop));
  std::lock_guard<std::mutex> lock(mutex_);
  using Clock = std::chrono::steady_clock;
  GenerateResult result;
  const auto cancelled = [&request] { return request.cancelled && request.cancelled(); };
  if (!request.prompt_tokens.empty()) {
    for (size_t i = 0; i < request.prompt_tokens.size(); ++i) {
      if (!tokenizer_->IsValid(request.prompt_tokens[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt_tokens[", i, "] = ", request.prompt_tokens[i], " is not a token of this model"));
      }
    }
    result.prompt_tokens = request.prompt_tokens;
  } else {
    result.prompt_tokens = tokenizer_->Encode(request.prompt, request.add_special, request.parse_special);
  }
  const int32_t n_ctx = executor_->options().n_ctx;
  if (result.prompt_tokens.empty()) {
    return absl::InvalidArgumentError("prompt is empty and the model adds no BOS token: nothing to condition on");
  }
  if (static_cast<int64_t>(result.prompt_tokens.size()) > n_ctx) {
    return absl::OutOfRangeError(absl::StrCat("prompt has ", result.prompt_tokens.size(),
                                              " tokens but the context holds ", n_ctx));
  }
  AIRLOCK_ASSIGN_OR_RETURN(std::unique_ptr<Sequence> seq, executor_->NewSequence());
  // The gauges follow the sequence: set after each forward step, cleared when it is released.
  active_.store(1, std::memory_order_relaxed);
  struct ClearGauges {
    Engine* e;
    ~ClearGauges() {
      e->kv_tokens_.store(0, std::memory_order_relaxed);
      e->active_.store(0, std::memory_order_relaxed);
    }
  } clear_gauges{this};
  const auto t0 = Clock::now();
  // Prefill in batches so that a cancelled request stops within one batch.
  const size_t batch = static_cast<size_t>(std::max<int32_t>(1, executor_->options().n_batch));
  const std::span<const int32_t> prompt(result.prompt_tokens);
  for (size_t at = 0; at < prompt.size(); at += batch) {
    if (cancelled()) {
      result.stop_reason = StopReason::kCancelled;
      return result;
    }
    const size_t n = std::min(batch, prompt.size() - at);
    // Only the last batch needs logits; earlier ones write into the same buffer harmlessly.
    AIRLOCK_RETURN_IF_ERROR(executor_->Forward(*seq, prompt.subspan(at, n), logits_.data(), false));
    kv_tokens_.store(seq->n_past(), std::memory_order_relaxed);
  }
  const auto t1 = Clock::now();
  result.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();

  AIRLOCK_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(request.sampling, model_->config().n_vocab, n_ctx));
  AIRLOCK_RETURN_IF_ERROR(sampler.AcceptPrompt(result.prompt_tokens));
  StreamingDetokenizer detok(*tokenizer_);
  auto emit = [&](int32_t token, std::string_view text) -> bool {
    result.text.append(text.data(), text.size());
    return on_piece ? on_piece(GeneratedPiece{token, std::string(text)}) : true;
  };

  bool stopped = false;
  result.stop_reason = StopReason::kMaxTokens;
  for (int32_t i = 0; i < request.max_tokens; ++i) {
    if (cancelled()) {
      result.stop_reason = StopReason::kCancelled;
      stopped = true;
      break;
    }
    const int32_t token = sampler.Sample(logits_.data(), model_->config().n_vocab);
    if (token == Sampler::kNoToken) {
      return absl::InternalError("the model produced no usable logits (all NaN or -inf)");
    }
    sampler.Accept(token);
    result.output_tokens.push_back(token);
    if (tokenizer_->IsEndOfGeneration(token)) {
      result.stop_reason = StopReason::kEndOfGeneration;
      break;
    }
    const StopMatcher::FeedResult matched = stop.Feed(detok.Push(token));
    if (!emit(token, matched.text)) {
      result.stop_reason = StopReason::kCancelled;
      stopped = true;
      break;
    }
    if (matched.stopped) {
      result.stop_reason = StopReason::kStopString;
      stopped = true;
      break;
    }
    if (i + 1 == request.max_tokens) break;
    if (seq->n_past() >= n_ctx) {
      result.stop_reason = StopReason::kContextFull;
      break;
    }
    AIRLOCK_RETURN_IF_ERROR(executor_->Forward(*seq, std::span<const int32_t>(&token, 1), logits_.data(), false));
    kv_tokens_.store(seq->n_past(), std::memory_order_relaxed);
  }
  if (!stopped) {
    // Text held back for a possible stop string or an unfinished UTF-8 character ends the output.
    const StopMatcher::FeedResult tail = stop.Feed(detok.Flush());
    std::string rest(tail.text);
    if (!tail.stopped) rest += stop.Flush();
    if (tail.stopped) result.stop_reason = StopReason::kStopString;
    if (!rest.empty()) emit(-1, rest);
  }
  result.generation_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

}  // namespace airlock::inference
