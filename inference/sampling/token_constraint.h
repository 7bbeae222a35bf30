// Grammar-constrained decoding at the token level: which tokens of a model's vocabulary the grammar
// accepts next, as a mask over the logits (-inf on every refused token).
//
// Three pieces, by lifetime:
//   - TokenVocabulary: per model, built once from the bytes each token contributes to the output;
//     tokens sorted by bytes so that tokens sharing a prefix share the matcher's walk.
//   - TokenMaskCache: per (grammar, vocabulary), shared by every sequence using that grammar; holds
//     the mask of each matcher state met so far (a bitset), least recently used evicted past a
//     memory bound. A miss walks the sorted vocabulary once.
//   - TokenConstraint: per sequence, the matcher state; Apply() masks a row of logits, Accept()
//     advances by the token sampled.
//
// Typical use, per decode step: constraint.Apply(logits, n); token = sampler.Sample(logits, n);
// constraint.Accept(token). Stop when an end-of-generation token is accepted (IsFinished()); a
// caller may also stop as soon as IsComplete() && !CanContinue() (then only the end is allowed).
// If Apply() leaves no token at all (a vocabulary that cannot spell a needed byte, or a vocabulary
// without end-of-generation tokens once complete), Sampler::Sample returns kNoToken: fail the
// request rather than sample unconstrained.
//
// One TokenMaskCache per (schema, model) pair, shared by every request with that schema, is what
// makes the cache pay: the first request walks the vocabulary once per new matcher state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/sampling/grammar.h"

namespace airlock::inference {

// The output bytes of every token of one model. Immutable after Create(); shareable by any number
// of threads.
class TokenVocabulary {
 public:
  // Largest vocabulary accepted (as the Sampler's).
  static constexpr int32_t kMaxVocabSize = 1 << 24;

  // token_bytes[id]: the exact bytes token `id` adds to the output (the caller derives them from
  // its tokenizer: SentencePiece's `▁` as a space, a byte-fallback token such as <0xE2> as that
  // one raw byte, byte-level BPE as its decoded bytes).
  // end_of_generation: ids that end the output (EOS, EOT, ...); their bytes are ignored, and the
  //   mask allows them exactly when the output so far is complete.
  // never_produce: ids the mask always refuses (control and special tokens, unused slots).
  // Tokens with no bytes that are not end-of-generation are refused too: they would let a model
  // make no progress forever. INVALID_ARGUMENT on an empty or oversized vocabulary or an id out of
  // range.
  static absl::StatusOr<std::shared_ptr<const TokenVocabulary>> Create(
      std::vector<std::string> token_bytes, std::span<const int32_t> end_of_generation,
      std::span<const int32_t> never_produce);

  int32_t n_vocab() const { return static_cast<int32_t>(kind_.size()); }
  bool IsEndOfGeneration(int32_t id) const { return kind_[static_cast<size_t>(id)] == kEog; }
  bool IsNeverProduced(int32_t id) const { return kind_[static_cast<size_t>(id)] == kNever; }
  // The bytes of a token that carries text ("" for end-of-generation and refused ones).
  std::string_view bytes(int32_t id) const;
  const std::vector<int32_t>& end_of_generation() const { return eog_; }
  // Tokens that carry text, and the longest of them in bytes.
  int32_t n_text_tokens() const { return static_cast<int32_t>(sorted_ids_.size()); }
  int32_t max_token_bytes() const { return max_token_bytes_; }

 private:
  friend class TokenMaskCache;
  enum Kind : uint8_t { kText, kEog, kNever };
  TokenVocabulary() = default;

  std::vector<Kind> kind_;  // by id
  std::vector<int32_t> eog_;
  // Text tokens sorted by their bytes: ids, bytes concatenated (offsets_[i] .. offsets_[i+1]),
  // and lcp_[i], the length of the prefix token i shares with token i - 1 (0 for the first).
  std::vector<int32_t> sorted_ids_;
  std::vector<uint32_t> offsets_;
  std::vector<uint32_t> lcp_;
  std::string sorted_bytes_;
  std::vector<int32_t> position_;  // id -> index in sorted order, -1 when not text
  int32_t max_token_bytes_ = 0;
};

// Which tokens a matcher state accepts: bit `id` of words (id / 64, id % 64).
struct TokenMask {
  std::vector<uint64_t> words;
  bool Allows(int32_t id) const {
    return (words[static_cast<size_t>(id) >> 6] >> (static_cast<uint32_t>(id) & 63)) & 1;
  }
};

// Working memory of a mask walk; each TokenConstraint keeps its own so that concurrent sequences
// share nothing mutable but the cache. Copying one gives empty buffers (they are only scratch).
class MaskWalker {
 public:
  MaskWalker() = default;
  MaskWalker(const MaskWalker&) {}
  MaskWalker& operator=(const MaskWalker&) { return *this; }

 private:
  friend class TokenMaskCache;
  friend class TokenConstraint;
  // After the first d bytes of the current token: states_[d], or, while the walk follows one
  // thread through plain states (inside a string, a number, a key), only the top of that thread:
  // then light_[d] is set and the state is states_[anchor_[d]] with its top replaced by top_[d].
  std::vector<MatcherState> states_;
  std::vector<char> light_;
  std::vector<int32_t> top_;
  std::vector<int32_t> anchor_;
  std::vector<int32_t> scratch_;
};

struct TokenMaskCacheOptions {
  // Memory the cached masks may use; least recently used ones are evicted past it (one mask is
  // n_vocab / 8 bytes: 16 KiB for a 128k vocabulary). 0 disables the cache: every Apply() walks
  // the vocabulary. Default: 64 MiB.
  size_t max_bytes = 64u << 20;
};

// Masks per matcher state for one grammar and one vocabulary. Thread-safe: any number of
// TokenConstraints on any threads may share one (a mutex guards the table; walks on a miss run
// outside it, so two threads missing on the same state may both walk, and one result is kept).
class TokenMaskCache {
 public:
  TokenMaskCache(std::shared_ptr<const Grammar> grammar,
                 std::shared_ptr<const TokenVocabulary> vocabulary,
                 TokenMaskCacheOptions options = {});

  // The mask of `state`: from the cache, or computed with `walker` and then cached.
  std::shared_ptr<const TokenMask> Get(const MatcherState& state, MaskWalker* walker);
  // The mask of `state` computed now, bypassing the cache (the reference the cache must equal).
  void Compute(const MatcherState& state, MaskWalker* walker, TokenMask* mask) const;

  struct Stats {
    int64_t hits = 0;
    int64_t misses = 0;
    int64_t evictions = 0;
    int64_t entries = 0;
    size_t bytes = 0;
  };
  Stats stats() const;

  const Grammar& grammar() const { return *grammar_; }
  const std::shared_ptr<const Grammar>& grammar_ptr() const { return grammar_; }
  const TokenVocabulary& vocabulary() const { return *vocabulary_; }
  const std::shared_ptr<const TokenVocabulary>& vocabulary_ptr() const { return vocabulary_; }

 private:
  struct Entry {
    MatcherState state;
    std::shared_ptr<const TokenMask> mask;
    size_t bytes = 0;
  };
  using Lru = std::list<Entry>;  // most recently used first

  std::shared_ptr<const Grammar> grammar_;
  std::shared_ptr<const TokenVocabulary> vocabulary_;
  const TokenMaskCacheOptions options_;

  mutable std::mutex mutex_;
  Lru lru_ ABSL_GUARDED_BY(mutex_);
  std::unordered_map<MatcherState, Lru::iterator, MatcherStateHash> index_ ABSL_GUARDED_BY(mutex_);
  size_t bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  Stats stats_ ABSL_GUARDED_BY(mutex_);
};

// The constraint of one sequence. Not thread-safe: used by the thread decoding that sequence.
// Copyable (a copy continues from the same state and shares the cache); copies are independent.
class TokenConstraint {
 public:
  explicit TokenConstraint(std::shared_ptr<TokenMaskCache> masks);

  // Sets logits[id] to -INFINITY for every token the grammar cannot accept next, and for every id
  // >= the vocabulary's size (rows padded past the tokenizer). End-of-generation tokens stay only
  // when the output so far is complete; when it is complete and nothing can extend it, they are
  // all that stays. Entries allowed are left untouched. Deterministic: equal states give equal
  // masks. On a cache hit it allocates nothing; a miss walks the vocabulary (see the benchmark).
  // After IsFinished(), only end-of-generation tokens stay.
  void Apply(float* logits, int32_t n_vocab);

  // Advances by `token`. INVALID_ARGUMENT, with the state unchanged, for an id out of range, a
  // token the mask refuses (its bytes, or end of generation before the output is complete), or any
  // token after the end of generation.
  absl::Status Accept(int32_t token);

  // Whether `token` would be accepted now (the same answer as the mask; walks its bytes).
  bool Allows(int32_t token);

  // The output so far is a complete instance (an end-of-generation token is allowed).
  bool IsComplete() const { return state_.complete; }
  // Some token with text can follow.
  bool CanContinue() const { return !finished_ && state_.CanContinue(); }
  // An end-of-generation token was accepted.
  bool IsFinished() const { return finished_; }
  // Back to the empty output.
  void Reset();

  const MatcherState& state() const { return state_; }
  const TokenMaskCache& masks() const { return *masks_; }

 private:
  // Steps the bytes of `token` from state_ into next_; false when a byte is refused.
  bool StepToken(int32_t token);

  std::shared_ptr<TokenMaskCache> masks_;
  MatcherState state_;
  MatcherState next_;
  MatcherState spare_;
  bool finished_ = false;
  MaskWalker walker_;
};

}  // namespace airlock::inference
