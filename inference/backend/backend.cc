// The backend-independent half of ModelExecutor: sequences and the one-sequence Forward built on
// ForwardBatch.
#include "inference/backend/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "inference/base/status.h"

namespace airlock::inference {

double KvBytesPerToken(const ModelConfig& c, KvCacheType type) {
  return 2.0 * c.n_layer * c.n_embd_kv() * (type == KvCacheType::kF16 ? 2 : 4);
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
