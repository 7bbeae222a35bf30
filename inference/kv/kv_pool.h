// The paged KV cache's bookkeeping, independent of where the K/V numbers live: a pool of
// fixed-size blocks (each holds `block_tokens` positions of every layer), a block table per
// sequence, reference counts, and the prefix cache that lets a new sequence adopt the blocks of an
// earlier one whose tokens it starts with.
//
// Prefix cache: a block is registered once it is full (its positions are never written again). Its
// key is exact, never a bare hash: (scope, the registered block before it and that block's
// generation, its own tokens), compared in full on lookup. A block's generation changes whenever it
// is evicted and reused, so a key naming an evicted parent can never match again. A sequence writes
// only positions it has not filled, so it never writes a shared block, except after Truncate() into
// one: the next Reserve() then copies that block first (copy-on-write at the divergent block).
// Blocks nobody references stay registered, in least-recently-released order, until an allocation
// needs them; a sequence releases its last blocks first, so eviction eats prefixes from the leaves.
//
// Thread-safety: none; a pool and its sequences are used by one thread at a time (the executor's
// owner). The counters are atomics so that metrics may read them from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace airlock::inference {

class KvPool {
 public:
  // copy_block(src, dst) copies every layer's K/V of block src into block dst (the backend's
  // storage); used for copy-on-write.
  KvPool(int64_t n_blocks, int32_t block_tokens, bool prefix_cache,
         std::function<void(int32_t src, int32_t dst)> copy_block);
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  int64_t n_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int32_t block_tokens() const { return block_tokens_; }
  bool prefix_cache() const { return prefix_cache_; }
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // Blocks referenced by a sequence; unreferenced blocks kept for the prefix cache; blocks an
  // allocation can take now (never used or merely cached).
  int64_t used() const { return used_.load(std::memory_order_relaxed); }
  int64_t cached() const { return cached_.load(std::memory_order_relaxed); }
  int64_t available() const { return n_blocks() - used(); }

  // A small id for a cache scope: blocks are matched only within one scope.
  int32_t ScopeId(std::string_view scope);

  // A block with reference count 1, evicting the least recently released cached block when no
  // block is free; -1 when every block is referenced.
  int32_t Allocate();
  void Ref(int32_t block);
  void Unref(int32_t block);
  // Referenced by more than one sequence, or registered (then it may be adopted at any time).
  bool Shared(int32_t block) const;
  void CopyBlock(int32_t src, int32_t dst) { copy_block_(src, dst); }

  // The chain of registered blocks that holds tokens[0, n) for the longest n <= max_tokens that is
  // a whole number of blocks, each with a reference taken for the caller.
  std::vector<int32_t> Match(int32_t scope, std::span<const int32_t> tokens, int64_t max_tokens);

  // Registers full block `block` holding `tokens` after registered block `parent` (-1: the first
  // block of the scope). Returns the block now registered under that key: `block`, or an equal
  // block registered earlier (then `block` stays private). Returns -1 when the cache is off or the
  // parent is no longer registered (evicted meanwhile).
  int32_t Register(int32_t block, int32_t scope, int32_t parent, uint32_t parent_generation,
                   std::span<const int32_t> tokens);
  uint32_t generation(int32_t block) const { return blocks_[block].generation; }
  bool registered(int32_t block) const { return blocks_[block].registered; }

 private:
  struct Block {
    int32_t refs = 0;
    uint32_t generation = 0;
    bool registered = false;
    int32_t scope = 0;
    int32_t parent = -1;
    uint32_t parent_generation = 0;
    size_t hash = 0;
    std::vector<int32_t> tokens;
    std::list<int32_t>::iterator lru;  // valid while registered with refs == 0
  };
  size_t KeyHash(int32_t scope, int32_t parent, uint32_t parent_generation, std::span<const int32_t> tokens) const;
  int32_t Find(int32_t scope, int32_t parent, uint32_t parent_generation, std::span<const int32_t> tokens) const;
  void Unregister(int32_t block);

  const int32_t block_tokens_;
  const bool prefix_cache_;
  std::function<void(int32_t, int32_t)> copy_block_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;            // never used, or released without registration
  std::list<int32_t> lru_;               // registered, unreferenced; front = least recently released
  std::unordered_multimap<size_t, int32_t> index_;  // key hash -> registered blocks
  std::unordered_map<std::string, int32_t> scopes_;
  std::atomic<int64_t> used_{0};
  std::atomic<int64_t> cached_{0};
};

// One sequence's positions in a KvPool: its block table and the tokens it holds. The pool must
// outlive it. Not thread-safe (see KvPool).
class KvSequence {
 public:
  KvSequence(KvPool& pool, int32_t n_ctx, int32_t scope) : pool_(pool), n_ctx_(n_ctx), scope_(scope) {}
  ~KvSequence() { Release(); }
  KvSequence(const KvSequence&) = delete;
  KvSequence& operator=(const KvSequence&) = delete;

  int32_t n_ctx() const { return n_ctx_; }    // capacity in positions
  int32_t n_past() const { return n_past_; }  // positions already filled
  const std::vector<int32_t>& blocks() const { return blocks_; }
  const KvPool& pool() const { return pool_; }

  // On an empty sequence: adopts the cached blocks holding the longest whole-block prefix of
  // tokens[0, max_tokens). Returns the positions now filled.
  int32_t AdoptPrefix(std::span<const int32_t> tokens, int32_t max_tokens);
  // New blocks Reserve(n) would take.
  int64_t BlocksNeeded(int32_t n) const;
  // Makes positions [n_past, n_past + n) writable: allocates blocks, and copies a shared block the
  // first of them falls in. False when the pool has too few blocks (blocks taken so far are kept).
  bool Reserve(int32_t n);
  // After the forward pass wrote K/V for `tokens` at positions n_past..: advances n_past and
  // registers the blocks that became full.
  void Commit(std::span<const int32_t> tokens);
  // Forgets positions >= n (n <= n_past), returning the blocks no longer needed.
  void Truncate(int32_t n);
  // Returns every block (last first, so eviction takes the ends of prefixes first).
  void Release() { Truncate(0); }

 private:
  KvPool& pool_;
  const int32_t n_ctx_;
  const int32_t scope_;
  int32_t n_past_ = 0;
  std::vector<int32_t> blocks_;
  std::vector<int32_t> tokens_;  // the tokens at positions [0, n_past)
  // For the first `keys_.size()` blocks: the block registered under their key (the parent of the
  // next block's key) and its generation then. Stops at the first full block that could not
  // register (cache off, or its parent evicted); Commit retries it.
  struct Key {
    int32_t block;
    uint32_t generation;
  };
  std::vector<Key> keys_;
};

}  // namespace airlock::inference
