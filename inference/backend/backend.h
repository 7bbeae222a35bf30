// The backend seam: everything device-specific about running a model sits behind these interfaces.
// The CPU backend implements them now; a CUDA backend is a new folder under backend/, not a rewrite.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/kv/kv_pool.h"
#include "inference/model/model.h"

namespace airlock::inference {

enum class KvCacheType { kF16, kF32 };
const char* KvCacheTypeName(KvCacheType type);
// Bytes the KV cache holds per position of one sequence (K and V, every layer).
double KvBytesPerToken(const ModelConfig& c, KvCacheType type);

// The machine's physical memory in bytes (sysconf), 0 when unknown.
double PhysicalMemoryBytes();

struct ExecutorOptions {
  int32_t n_threads = 1;                   // Default: 1. CPU worker threads, the caller's included.
  int32_t n_ctx = 0;                       // Default: 0 = min(model context, 4096). Positions per sequence.
  int32_t n_batch = 512;                   // Default: 512. Tokens one forward step computes at most.
  KvCacheType kv_type = KvCacheType::kF16; // Default: F16, as llama.cpp.
  int64_t kv_pool_tokens = 0;              // Default: 0 = 2 * n_ctx. Positions in the KV pool, all sequences.
  int32_t kv_block_tokens = 16;            // Default: 16. Positions per KV block (1..256).
  bool prefix_cache = true;                // Default: true. Register full blocks for prefix reuse.
  // Tests of the failure path only: > 0 makes a device backend count its (first) device as lost
  // at that forward step (Engine::Load sets it from AIRLOCK_TEST_VULKAN_LOST_AT_STEP).
  int64_t test_device_lost_at_step = 0;    // Default: 0 (never).
};

// A sequence's KV cache: a block table in the executor's pool (inference/kv/kv_pool.h).
using Sequence = KvSequence;

// The checks every forward call makes before touching a sequence: each token id inside
// [0, n_vocab) (INVALID_ARGUMENT naming the first one outside) and the tokens fitting after the
// sequence's positions (OUT_OF_RANGE).
absl::Status CheckForwardTokens(const Sequence& seq, std::span<const int32_t> tokens, int32_t n_vocab);

// The options a backend runs with: defaults filled in (n_ctx from the model, the pool from
// n_ctx, rounded up to whole blocks) and every field checked against its range
// (INVALID_ARGUMENT naming the field). Memory limits are each backend's to check.
absl::StatusOr<ExecutorOptions> NormalizeExecutorOptions(const ModelConfig& c, ExecutorOptions o);

// One sequence's part of a batched forward step.
struct BatchEntry {
  Sequence* seq = nullptr;  // distinct per entry; Reserve()d for tokens.size() more positions
  std::span<const int32_t> tokens;  // at positions seq->n_past() ..; committed to seq on success
  // nullptr: no logits. Else n_vocab floats for the last token, or tokens.size() * n_vocab when
  // all_logits.
  float* logits = nullptr;
  bool all_logits = false;
};

// Runs one loaded model on one device. Not thread-safe: one call at a time per executor, and its
// sequences are used only by that same caller.
class ModelExecutor {
 public:
  virtual ~ModelExecutor() = default;
  virtual const ExecutorOptions& options() const = 0;
  virtual const Model& model() const = 0;
  // The pool every sequence of this executor lives in.
  virtual KvPool& kv_pool() = 0;

  // One forward step for several sequences at once: the weights are read once for all their
  // tokens; attention runs per sequence over its own cache. Each output row is computed in the
  // same order whatever else is in the batch, so a sequence's logits do not depend on its batch.
  // At most n_batch tokens in all. Fails with INVALID_ARGUMENT (bad token id, empty entry, too
  // many tokens, a sequence twice), OUT_OF_RANGE (past the context) or FAILED_PRECONDITION (blocks
  // not reserved), and then no sequence is changed.
  virtual absl::Status ForwardBatch(std::span<const BatchEntry> batch) = 0;

  // OK while the executor can run steps; UNAVAILABLE, naming the cause, once it never can again
  // (a lost GPU). Called after a failed ForwardBatch, on the thread that runs the steps.
  virtual absl::Status Health() const { return absl::OkStatus(); }

  // What a model holds and uses on each device it runs on (for metrics); empty on the CPU. Any
  // thread.
  struct DeviceUsage {
    std::string device;              // the device's label, "vulkan:N (name)"
    uint64_t memory_used_bytes = 0;  // device-local memory this executor's buffers hold
    uint64_t memory_total_bytes = 0; // the device's device-local memory
    double busy_seconds = 0;         // time the device spent on this executor's steps
  };
  virtual std::vector<DeviceUsage> device_usage() const { return {}; }

  // A new, empty sequence in the pool, with the executor's n_ctx and the prefix-cache scope `scope`.
  absl::StatusOr<std::unique_ptr<Sequence>> NewSequence(std::string_view scope = {});
  // Appends `tokens` to `seq` (any number: split into steps of n_batch) and computes logits:
  // n_vocab floats for the last token, or size*n_vocab when all_logits. Fails with OUT_OF_RANGE
  // when the tokens do not fit in the sequence's context, RESOURCE_EXHAUSTED when the pool has no
  // room, INVALID_ARGUMENT for a token id outside the vocabulary; the sequence is unchanged then.
  absl::Status Forward(Sequence& seq, std::span<const int32_t> tokens, float* logits, bool all_logits);
};

// The checks of ForwardBatch's contract that do not depend on the device (entries of this pool,
// distinct, not empty, token ids and context, blocks reserved, at most n_batch tokens); returns
// the number of tokens in the batch.
absl::StatusOr<int64_t> CheckBatch(std::span<const BatchEntry> batch, const KvPool& pool, int32_t n_vocab,
                                   int32_t n_batch);

// Hands out the logits of a step, computed in batch order for the rows that want them (all rows
// of an all_logits entry, else its last row), to each entry's `logits` buffer.
void CopyLogitsOut(std::span<const BatchEntry> batch, const float* from, int32_t n_vocab);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The bytes a default-sized KV pool for `model` may take (configuration left the pool size to the
  // engine): a quarter of the machine's memory for the CPU (the weights are mapped from the file);
  // for a device, half of what its memory holds beside the weights, within what its per-buffer
  // limit allows for the K and V buffers.
  virtual absl::StatusOr<uint64_t> DefaultKvPoolBytes(const Model& model) const;
  // `model` must outlive the executor.
  virtual absl::StatusOr<std::unique_ptr<ModelExecutor>> CreateExecutor(
      const Model& model, const ExecutorOptions& options) = 0;
};

std::unique_ptr<Backend> CreateCpuBackend();

}  // namespace airlock::inference
