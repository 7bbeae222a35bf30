// The backend-independent half of ModelExecutor: sequences and the one-sequence Forward built on
// ForwardBatch.
#include "inference/backend/backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {

double KvBytesPerToken(const ModelConfig& c, KvCacheType type) {
  return 2.0 * c.n_layer * c.n_embd_kv() * (type == KvCacheType::kF16 ? 2 : 4);
}

double PhysicalMemoryBytes() {
  const double bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  return bytes > 0 ? bytes : 0;
}

absl::StatusOr<uint64_t> Backend::DefaultKvPoolBytes(const Model&) const {
  return static_cast<uint64_t>(PhysicalMemoryBytes() / 4);
}

absl::Status CheckForwardTokens(const Sequence& seq, std::span<const int32_t> tokens, int32_t n_vocab) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("forward: token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ", n_vocab, ")"));
    }
  }
  if (static_cast<int64_t>(seq.n_past()) + static_cast<int64_t>(tokens.size()) > seq.n_ctx()) {
    return absl::OutOfRangeError(absl::StrCat("forward: ", tokens.size(), " tokens after ", seq.n_past(),
                                              " do not fit in the context of ", seq.n_ctx()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExecutorOptions> NormalizeExecutorOptions(const ModelConfig& c, ExecutorOptions o) {
  if (o.n_ctx <= 0) o.n_ctx = std::min(c.n_ctx_train, 4096);
  if (o.n_threads < 1 || o.n_threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be in [1, 256], got ", o.n_threads));
  }
  if (o.n_batch < 1 || o.n_batch > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("batch size must be in [1, 4096], got ", o.n_batch));
  }
  if (o.n_ctx > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("context size ", o.n_ctx, " is too large"));
  }
  if (o.kv_block_tokens < 1 || o.kv_block_tokens > 256) {
    return absl::InvalidArgumentError(absl::StrCat("KV block size must be in [1, 256] tokens, got ", o.kv_block_tokens));
  }
  if (o.kv_pool_tokens == 0) o.kv_pool_tokens = 2 * static_cast<int64_t>(o.n_ctx);
  // Whole blocks, rounded up: never fewer positions than asked for.
  o.kv_pool_tokens = (o.kv_pool_tokens + o.kv_block_tokens - 1) / o.kv_block_tokens * o.kv_block_tokens;
  return o;
}

absl::StatusOr<int64_t> CheckBatch(std::span<const BatchEntry> batch, const KvPool& pool, int32_t n_vocab,
                                   int32_t n_batch) {
  if (batch.empty()) return absl::InvalidArgumentError("forward: empty batch");
  int64_t total = 0;
  for (size_t e = 0; e < batch.size(); ++e) {
    const BatchEntry& entry = batch[e];
    if (entry.seq == nullptr || &entry.seq->pool() != &pool) {
      return absl::InvalidArgumentError(absl::StrCat("forward: entry ", e, " has no sequence of this executor"));
    }
    for (size_t f = 0; f < e; ++f) {
      if (batch[f].seq == entry.seq) {
        return absl::InvalidArgumentError(absl::StrCat("forward: entries ", f, " and ", e, " are the same sequence"));
      }
    }
    if (entry.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("forward: entry ", e, " has no tokens"));
    AIRLOCK_RETURN_IF_ERROR(CheckForwardTokens(*entry.seq, entry.tokens, n_vocab));
    const int64_t end = static_cast<int64_t>(entry.seq->n_past()) + static_cast<int64_t>(entry.tokens.size());
    if (static_cast<int64_t>(entry.seq->blocks().size()) * pool.block_tokens() < end ||
        entry.seq->BlocksNeeded(static_cast<int32_t>(entry.tokens.size())) > 0) {
      return absl::FailedPreconditionError(absl::StrCat("forward: entry ", e, "'s KV blocks are not reserved"));
    }
    total += static_cast<int64_t>(entry.tokens.size());
  }
  if (total > n_batch) {
    return absl::InvalidArgumentError(absl::StrCat("forward: ", total, " tokens in one step; at most ", n_batch));
  }
  return total;
}

void CopyLogitsOut(std::span<const BatchEntry> batch, const float* from, int32_t n_vocab) {
  const size_t row = static_cast<size_t>(n_vocab);
  for (const BatchEntry& entry : batch) {
    if (entry.logits == nullptr) continue;
    const size_t rows = entry.all_logits ? entry.tokens.size() : 1;
    std::memcpy(entry.logits, from, rows * row * sizeof(float));
    from += rows * row;
  }
}

absl::StatusOr<std::unique_ptr<Sequence>> ModelExecutor::NewSequence(std::string_view scope) {
  KvPool& pool = kv_pool();
  return std::make_unique<Sequence>(pool, options().n_ctx, pool.ScopeId(scope));
}

absl::Status ModelExecutor::Forward(Sequence& seq, std::span<const int32_t> tokens, float* logits, bool all_logits) {
  if (tokens.empty()) return absl::InvalidArgumentError("forward: no tokens");
  const int32_t n_vocab = model().config().n_vocab;
  AIRLOCK_RETURN_IF_ERROR(CheckForwardTokens(seq, tokens, n_vocab));
  const int32_t n = static_cast<int32_t>(tokens.size());
  if (seq.BlocksNeeded(n) > kv_pool().available() || !seq.Reserve(n)) {
    return absl::ResourceExhaustedError(absl::StrCat("forward: the KV pool has ", kv_pool().available(), " free blocks of ",
                                                     kv_pool().block_tokens(), " tokens; ", tokens.size(),
                                                     " more tokens need ", seq.BlocksNeeded(n)));
  }
  const int64_t step = std::max(1, options().n_batch);
  for (int64_t start = 0; start < n; start += step) {
    const int64_t len = std::min<int64_t>(step, n - start);
    BatchEntry e;
    e.seq = &seq;
    e.tokens = tokens.subspan(static_cast<size_t>(start), static_cast<size_t>(len));
    if (all_logits) {
      e.logits = logits + start * n_vocab;
      e.all_logits = true;
    } else if (start + len == n) {
      e.logits = logits;
    }
    AIRLOCK_RETURN_IF_ERROR(ForwardBatch(std::span<const BatchEntry>(&e, 1)));
  }
  return absl::OkStatus();
}

}  // namespace airlock::inference
