// The backend seam: everything device-specific about running a model sits behind these interfaces.
// The CPU backend implements them now; a CUDA backend is a new folder under backend/, not a rewrite.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "inference/model/model.h"

namespace airlock::inference {

enum class KvCacheType { kF16, kF32 };
const char* KvCacheTypeName(KvCacheType type);

struct ExecutorOptions {
  int32_t n_threads = 1;                   // Default: 1. CPU worker threads, the caller's included.
  int32_t n_ctx = 0;                       // Default: 0 = min(model context, 4096). Positions per sequence.
  int32_t n_batch = 512;                   // Default: 512. Tokens processed per forward step at most.
  KvCacheType kv_type = KvCacheType::kF16; // Default: F16, as llama.cpp.
};

// One sequence's state on a device (its KV cache). Created by an executor, used only with it.
class Sequence {
 public:
  virtual ~Sequence() = default;
  virtual int32_t n_ctx() const = 0;   // capacity in positions
  virtual int32_t n_past() const = 0;  // positions already filled
  // Forgets positions >= n (n <= n_past()); e.g. to reuse a cached prompt prefix.
  virtual void Truncate(int32_t n) = 0;
};

// Runs one loaded model on one device. Not thread-safe: one Forward at a time per executor.
class ModelExecutor {
 public:
  virtual ~ModelExecutor() = default;
  virtual const ExecutorOptions& options() const = 0;
  virtual absl::StatusOr<std::unique_ptr<Sequence>> NewSequence() = 0;
  // Appends `tokens` to `seq` (positions n_past .. n_past+size-1) and computes logits.
  // `logits` receives n_vocab floats for the last token, or size*n_vocab when all_logits.
  // Fails with OUT_OF_RANGE when the tokens do not fit in the sequence's context, and with
  // INVALID_ARGUMENT for a token id outside the vocabulary; the sequence is unchanged then.
  virtual absl::Status Forward(Sequence& seq, std::span<const int32_t> tokens, float* logits,
                               bool all_logits) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // `model` must outlive the executor.
  virtual absl::StatusOr<std::unique_ptr<ModelExecutor>> CreateExecutor(
      const Model& model, const ExecutorOptions& options) = 0;
};

std::unique_ptr<Backend> CreateCpuBackend();

}  // namespace airlock::inference
