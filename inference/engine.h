// The engine facade: load a GGUF model and generate text from it. The daemon and the CLI see the
// inference engine only through this header.
//
// Thread-safety: Generate() may be called from any thread; calls are serialised per engine (one
// executor) until the continuous-batching scheduler replaces this.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/backend/backend.h"
#include "inference/model/model.h"
#include "inference/sampling/sampling_params.h"
#include "inference/tokenizer/tokenizer.h"

namespace airlock::inference {

struct EngineOptions {
  int32_t n_threads = 1;                    // Default: 1.
  int32_t n_ctx = 0;                        // Default: 0 = min(model context, 4096).
  int32_t n_batch = 512;                    // Default: 512 tokens per prefill step.
  KvCacheType kv_type = KvCacheType::kF16;  // Default: F16, as llama.cpp.
};

enum class StopReason {
  kMaxTokens,        // max_tokens generated
  kEndOfGeneration,  // the model produced EOS/EOT
  kStopString,       // one of the request's stop strings appeared
  kContextFull,      // no room left in the context window
  kCancelled,        // the caller's callback asked to stop
};
const char* StopReasonName(StopReason reason);

struct GenerateRequest {
  std::string prompt;
  // When non-empty, the prompt already tokenized (chat prompts); `prompt`, add_special and
  // parse_special are then ignored. Every id must be valid for the vocabulary.
  std::vector<int32_t> prompt_tokens;
  int32_t max_tokens = 128;          // Default: 128; must be >= 0.
  SamplingParams sampling;
  std::vector<std::string> stop;     // stop strings; the text stops before the first match
  bool add_special = true;           // BOS etc. as the vocabulary says
  bool parse_special = false;        // text spelling a control token stays text
  // Polled before prefill, between prefill batches and before every decoded token; when it returns
  // true Generate stops with StopReason::kCancelled. May be empty. Lets a caller cancel a long
  // prefill (client gone, deadline passed), which the piece callback cannot.
  std::function<bool()> cancelled;
};

struct GeneratedPiece {
  int32_t token = -1;  // the token that completed this text (-1 for text flushed at the end)
  std::string text;    // valid UTF-8, possibly empty (a byte token mid-character)
};

struct GenerateResult {
  std::vector<int32_t> prompt_tokens;  // BOS included when the model adds it
  std::vector<int32_t> output_tokens;  // includes a final EOS/EOT token when that ended generation
  std::string text;
  StopReason stop_reason = StopReason::kMaxTokens;
  double prompt_seconds = 0;
  double generation_seconds = 0;
};

// Called for every generated piece; return false to cancel.
using PieceCallback = std::function<bool(const GeneratedPiece&)>;

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::string& path, const EngineOptions& options);

  absl::StatusOr<GenerateResult> Generate(const GenerateRequest& request, const PieceCallback& on_piece);

  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ExecutorOptions& executor_options() const { return executor_->options(); }
  // Tokens a prompt plus its output may use.
  int32_t context_length() const { return executor_->options().n_ctx; }
  // What the engine holds now, for metrics (read from any thread, while Generate runs): tokens in
  // the KV cache of the running sequence, and sequences in the current forward batch (0 or 1 until
  // continuous batching).
  int32_t kv_tokens_in_use() const { return kv_tokens_.load(std::memory_order_relaxed); }
  int32_t active_sequences() const { return active_.load(std::memory_order_relaxed); }

 private:
  Engine() = default;

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<ModelExecutor> executor_;
  std::mutex mutex_;  // serialises Generate (one executor, one sequence at a time)
  std::vector<float> logits_;
  std::atomic<int32_t> kv_tokens_{0};
  std::atomic<int32_t> active_{0};
};

}  // namespace airlock::inference
