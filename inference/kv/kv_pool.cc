// KvPool / KvSequence: block allocation, reference counts, LRU eviction and the exact-key prefix
// cache of the paged KV cache.
#include "inference/kv/kv_pool.h"

#include <algorithm>
#include <cstdlib>

#include "absl/hash/hash.h"
#include "absl/types/span.h"

namespace airlock::inference {

KvPool::KvPool(int64_t n_blocks, int32_t block_tokens, bool prefix_cache,
               std::function<void(int32_t src, int32_t dst)> copy_block)
    : block_tokens_(block_tokens), prefix_cache_(prefix_cache), copy_block_(std::move(copy_block)),
      blocks_(static_cast<size_t>(n_blocks)) {
  free_.reserve(blocks_.size());
  // Popped from the back: block 0 first.
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int32_t KvPool::ScopeId(std::string_view scope) {
  auto [it, inserted] = scopes_.try_emplace(std::string(scope), static_cast<int32_t>(scopes_.size()));
  return it->second;
}

int32_t KvPool::Allocate() {
  int32_t b = -1;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    b = lru_.front();
    lru_.pop_front();
    cached_.fetch_sub(1, std::memory_order_relaxed);
    Unregister(b);
  } else {
    return -1;
  }
  ++blocks_[b].generation;  // whatever named this block before names something else now
  blocks_[b].refs = 1;
  used_.fetch_add(1, std::memory_order_relaxed);
  return b;
}

void KvPool::Ref(int32_t block) {
  Block& k = blocks_[block];
  if (k.refs++ == 0) {
    // Only a registered block can be referenced again at zero (through Match).
    lru_.erase(k.lru);
    cached_.fetch_sub(1, std::memory_order_relaxed);
    used_.fetch_add(1, std::memory_order_relaxed);
  }
}

void KvPool::Unref(int32_t block) {
  Block& k = blocks_[block];
  if (k.refs <= 0) std::abort();  // a bookkeeping bug: never hand one block out twice
  if (--k.refs > 0) return;
  used_.fetch_sub(1, std::memory_order_relaxed);
  if (k.registered) {
    k.lru = lru_.insert(lru_.end(), block);
    cached_.fetch_add(1, std::memory_order_relaxed);
  } else {
    free_.push_back(block);
  }
}

bool KvPool::Shared(int32_t block) const { return blocks_[block].refs > 1 || blocks_[block].registered; }

size_t KvPool::KeyHash(int32_t scope, int32_t parent, uint32_t parent_generation,
                       std::span<const int32_t> tokens) const {
  // absl::Hash is seeded per process, so a caller cannot choose tokens that all land in one bucket.
  return absl::HashOf(scope, parent, parent_generation, absl::MakeConstSpan(tokens.data(), tokens.size()));
}

int32_t KvPool::Find(int32_t scope, int32_t parent, uint32_t parent_generation,
                     std::span<const int32_t> tokens) const {
  const auto [begin, end] = index_.equal_range(KeyHash(scope, parent, parent_generation, tokens));
  for (auto it = begin; it != end; ++it) {
    const Block& k = blocks_[it->second];
    if (k.scope == scope && k.parent == parent && k.parent_generation == parent_generation &&
        std::equal(tokens.begin(), tokens.end(), k.tokens.begin(), k.tokens.end())) {
      return it->second;
    }
  }
  return -1;
}

std::vector<int32_t> KvPool::Match(int32_t scope, std::span<const int32_t> tokens, int64_t max_tokens) {
  std::vector<int32_t> chain;
  if (!prefix_cache_) return chain;
  const int64_t n_full = std::min<int64_t>(max_tokens, static_cast<int64_t>(tokens.size())) / block_tokens_;
  int32_t parent = -1;
  uint32_t parent_generation = 0;
  for (int64_t i = 0; i < n_full; ++i) {
    const int32_t b = Find(scope, parent, parent_generation, tokens.subspan(i * block_tokens_, block_tokens_));
    if (b < 0) break;
    Ref(b);
    chain.push_back(b);
    parent = b;
    parent_generation = blocks_[b].generation;
  }
  return chain;
}

int32_t KvPool::Register(int32_t block, int32_t scope, int32_t parent, uint32_t parent_generation,
                         std::span<const int32_t> tokens) {
  if (!prefix_cache_) return -1;
  if (parent >= 0 && (!blocks_[parent].registered || blocks_[parent].generation != parent_generation)) return -1;
  if (const int32_t existing = Find(scope, parent, parent_generation, tokens); existing >= 0) return existing;
  Block& k = blocks_[block];
  if (k.registered) return -1;  // already registered under another key (cannot happen: full blocks are immutable)
  k.registered = true;
  k.scope = scope;
  k.parent = parent;
  k.parent_generation = parent_generation;
  k.tokens.assign(tokens.begin(), tokens.end());
  k.hash = KeyHash(scope, parent, parent_generation, tokens);
  index_.emplace(k.hash, block);
  return block;
}

void KvPool::Unregister(int32_t block) {
  Block& k = blocks_[block];
  const auto [begin, end] = index_.equal_range(k.hash);
  for (auto it = begin; it != end; ++it) {
    if (it->second == block) {
      index_.erase(it);
      break;
    }
  }
  k.registered = false;
  k.tokens.clear();
}

// ---- KvSequence -------------------------------------------------------------------------------

int32_t KvSequence::AdoptPrefix(std::span<const int32_t> tokens, int32_t max_tokens) {
  if (n_past_ != 0 || !blocks_.empty()) return 0;
  blocks_ = pool_.Match(scope_, tokens, std::min(max_tokens, n_ctx_));
  n_past_ = static_cast<int32_t>(blocks_.size()) * pool_.block_tokens();
  tokens_.assign(tokens.begin(), tokens.begin() + n_past_);
  for (int32_t b : blocks_) keys_.push_back(Key{b, pool_.generation(b)});
  return n_past_;
}

int64_t KvSequence::BlocksNeeded(int32_t n) const {
  const int64_t have = static_cast<int64_t>(blocks_.size());
  int64_t need = std::max<int64_t>(0, pool_.BlocksFor(static_cast<int64_t>(n_past_) + n) - have);
  const int32_t bt = pool_.block_tokens();
  if (n > 0 && n_past_ % bt != 0 && pool_.Shared(blocks_[n_past_ / bt])) ++need;  // copy-on-write
  return need;
}

bool KvSequence::Reserve(int32_t n) {
  const int32_t bt = pool_.block_tokens();
  if (n > 0 && n_past_ % bt != 0) {
    const int32_t tail = blocks_[n_past_ / bt];
    if (pool_.Shared(tail)) {
      const int32_t copy = pool_.Allocate();
      if (copy < 0) return false;
      pool_.CopyBlock(tail, copy);
      blocks_[n_past_ / bt] = copy;
      pool_.Unref(tail);
    }
  }
  const int64_t want = pool_.BlocksFor(static_cast<int64_t>(n_past_) + n);
  while (static_cast<int64_t>(blocks_.size()) < want) {
    const int32_t b = pool_.Allocate();
    if (b < 0) return false;
    blocks_.push_back(b);
  }
  return true;
}

void KvSequence::Commit(std::span<const int32_t> tokens) {
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  n_past_ += static_cast<int32_t>(tokens.size());
  const int32_t bt = pool_.block_tokens();
  const size_t full = static_cast<size_t>(n_past_ / bt);
  while (keys_.size() < full) {
    const size_t i = keys_.size();
    const int32_t parent = i == 0 ? -1 : keys_[i - 1].block;
    const uint32_t parent_generation = i == 0 ? 0 : keys_[i - 1].generation;
    const int32_t canonical = pool_.Register(blocks_[i], scope_, parent, parent_generation,
                                             std::span<const int32_t>(tokens_).subspan(i * bt, bt));
    if (canonical < 0) break;
    keys_.push_back(Key{canonical, pool_.generation(canonical)});
  }
}

void KvSequence::Truncate(int32_t n) {
  n = std::clamp(n, 0, n_past_);
  const int64_t keep = pool_.BlocksFor(n);
  while (static_cast<int64_t>(blocks_.size()) > keep) {
    pool_.Unref(blocks_.back());
    blocks_.pop_back();
  }
  n_past_ = n;
  tokens_.resize(static_cast<size_t>(n));
  keys_.resize(std::min(keys_.size(), static_cast<size_t>(n / pool_.block_tokens())));
}

}  // namespace airlock::inference
