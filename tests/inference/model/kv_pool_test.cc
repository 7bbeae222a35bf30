// KvPool / KvSequence bookkeeping: allocation and reference counts, exact prefix matching (scope,
// parent, tokens), eviction order, copy-on-write after truncation, and that nothing leaks.
#include "inference/kv/kv_pool.h"

#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace airlock::inference {
namespace {

using ::testing::ElementsAre;

std::vector<int32_t> Tokens(int32_t n, int32_t base = 100) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) t[i] = base + i;
  return t;
}

class KvPoolTest : public ::testing::Test {
 protected:
  // 8 blocks of 4 tokens; copies are recorded instead of moving numbers.
  KvPool pool_{8, 4, true, [this](int32_t src, int32_t dst) { copies_.emplace_back(src, dst); }};
  std::vector<std::pair<int32_t, int32_t>> copies_;
};

TEST_F(KvPoolTest, SequencesTakeBlocksAsTheyGrowAndGiveThemBack) {
  {
    KvSequence seq(pool_, 64, pool_.ScopeId(""));
    ASSERT_TRUE(seq.Reserve(5));
    EXPECT_EQ(seq.blocks().size(), 2u);  // 5 tokens in blocks of 4
    EXPECT_EQ(pool_.used(), 2);
    seq.Commit(Tokens(5));
    EXPECT_EQ(seq.n_past(), 5);
    EXPECT_EQ(seq.BlocksNeeded(3), 0);  // the second block has room for 3 more
    EXPECT_EQ(seq.BlocksNeeded(4), 1);
  }
  // The full first block stays cached for reuse; the partial one is free again.
  EXPECT_EQ(pool_.used(), 0);
  EXPECT_EQ(pool_.cached(), 1);
  EXPECT_EQ(pool_.available(), 8);
}

TEST_F(KvPoolTest, AFullPoolRefusesWithoutLosingBlocks) {
  KvSequence a(pool_, 64, 0), b(pool_, 64, 0);
  ASSERT_TRUE(a.Reserve(28));  // 7 blocks
  EXPECT_EQ(b.BlocksNeeded(8), 2);
  EXPECT_FALSE(b.Reserve(8));  // takes the last block, then finds none
  EXPECT_EQ(pool_.used(), 8);
  a.Release();
  b.Release();
  EXPECT_EQ(pool_.used(), 0);
  EXPECT_EQ(pool_.cached(), 0);  // nothing was committed, nothing registered
}

TEST_F(KvPoolTest, PrefixMatchesOnlyExactTokensInTheSameScope) {
  const int32_t alice = pool_.ScopeId("alice"), bob = pool_.ScopeId("bob");
  const std::vector<int32_t> doc = Tokens(10);
  {
    KvSequence first(pool_, 64, alice);
    ASSERT_TRUE(first.Reserve(10));
    first.Commit(doc);
  }
  // Same scope, same start: two whole blocks (8 tokens); the partial third block is never shared.
  KvSequence again(pool_, 64, alice);
  EXPECT_EQ(again.AdoptPrefix(doc, 10), 8);
  EXPECT_EQ(again.n_past(), 8);
  // Another scope sees nothing, even with the very same tokens.
  KvSequence other(pool_, 64, bob);
  EXPECT_EQ(other.AdoptPrefix(doc, 10), 0);
  // One token different in the second block: only the first block matches.
  std::vector<int32_t> changed = doc;
  changed[5] = 7;
  KvSequence partial(pool_, 64, alice);
  EXPECT_EQ(partial.AdoptPrefix(changed, 10), 4);
  // The same second block after a different first block does not match (keys chain the parent).
  std::vector<int32_t> other_start = doc;
  other_start[0] = 1;
  KvSequence chained(pool_, 64, alice);
  EXPECT_EQ(chained.AdoptPrefix(other_start, 10), 0);
  // max_tokens caps the match at a block boundary below it.
  KvSequence capped(pool_, 64, alice);
  EXPECT_EQ(capped.AdoptPrefix(doc, 7), 4);
}

TEST_F(KvPoolTest, EvictionTakesLeastRecentlyReleasedLeavesAndForgetsTheirChildren) {
  const int32_t s = pool_.ScopeId("");
  {
    KvSequence seq(pool_, 64, s);
    ASSERT_TRUE(seq.Reserve(16));
    seq.Commit(Tokens(16));  // 4 registered blocks
  }
  EXPECT_EQ(pool_.cached(), 4);
  // Take every block: 4 free ones first, then the cached ones, leaves before roots.
  KvSequence hog(pool_, 64, pool_.ScopeId("other"));
  ASSERT_TRUE(hog.Reserve(4 * 5));  // 5 blocks: one cached block (the last one) is evicted
  EXPECT_EQ(pool_.cached(), 3);
  KvSequence probe(pool_, 64, s);
  EXPECT_EQ(probe.AdoptPrefix(Tokens(16), 16), 12);  // the first three blocks are still there
  probe.Release();
  ASSERT_TRUE(hog.Reserve(4 * 8));  // every block
  KvSequence late(pool_, 64, s);
  EXPECT_EQ(late.AdoptPrefix(Tokens(16), 16), 0);
}

TEST_F(KvPoolTest, AReusedBlockNeverMatchesItsOldChildren) {
  const int32_t s = pool_.ScopeId("");
  std::vector<int32_t> old_chain;
  {
    KvSequence seq(pool_, 64, s);
    ASSERT_TRUE(seq.Reserve(8));
    seq.Commit(Tokens(8));  // root R = tokens 100..103, child C = 104..107
    old_chain = seq.blocks();
  }
  const int32_t root = old_chain[0], child = old_chain[1];
  // Keep C cached but evict R: hold C, take every other block, give them back with R last so
  // that R's block is the next one handed out.
  pool_.Ref(child);
  std::vector<int32_t> taken;
  for (int i = 0; i < 7; ++i) taken.push_back(pool_.Allocate());
  ASSERT_THAT(taken, ::testing::Contains(root));
  for (int32_t b : taken) {
    if (b != root) pool_.Unref(b);
  }
  pool_.Unref(root);
  pool_.Unref(child);
  // R's block now holds a different first block; C's tokens follow it.
  std::vector<int32_t> tokens = Tokens(4, 500);
  const std::vector<int32_t> tail = Tokens(4, 104);
  tokens.insert(tokens.end(), tail.begin(), tail.end());
  KvSequence reuse(pool_, 64, s);
  ASSERT_TRUE(reuse.Reserve(8));
  ASSERT_EQ(reuse.blocks()[0], root);
  reuse.Commit(tokens);
  // C was computed after the old R: it must not be found after the new one.
  KvSequence probe(pool_, 64, s);
  ASSERT_EQ(probe.AdoptPrefix(tokens, 8), 8);
  EXPECT_EQ(probe.blocks()[0], root);
  EXPECT_NE(probe.blocks()[1], child);
  EXPECT_EQ(probe.blocks()[1], reuse.blocks()[1]);
}

TEST_F(KvPoolTest, TruncatingIntoASharedBlockCopiesItBeforeWriting) {
  const int32_t s = pool_.ScopeId("");
  KvSequence a(pool_, 64, s);
  ASSERT_TRUE(a.Reserve(8));
  a.Commit(Tokens(8));
  KvSequence b(pool_, 64, s);
  ASSERT_EQ(b.AdoptPrefix(Tokens(9), 9), 8);
  EXPECT_EQ(a.blocks(), b.blocks());
  // b rewinds into the second (shared) block and writes a different token there.
  b.Truncate(6);
  EXPECT_EQ(b.BlocksNeeded(1), 1);  // the copy
  ASSERT_TRUE(b.Reserve(1));
  ASSERT_EQ(copies_.size(), 1u);
  EXPECT_EQ(copies_[0].first, a.blocks()[1]);
  EXPECT_EQ(copies_[0].second, b.blocks()[1]);
  EXPECT_NE(a.blocks()[1], b.blocks()[1]);
  EXPECT_EQ(a.blocks()[0], b.blocks()[0]);  // the untouched block stays shared
  const std::vector<int32_t> diverged = {999};
  b.Commit(diverged);
  // a's block still holds the original tokens: a third sequence finds a's chain, not b's.
  KvSequence c(pool_, 64, s);
  EXPECT_EQ(c.AdoptPrefix(Tokens(8), 8), 8);
  EXPECT_THAT(c.blocks(), ElementsAre(a.blocks()[0], a.blocks()[1]));
}

TEST_F(KvPoolTest, TwoSequencesComputingTheSamePrefixRegisterItOnce) {
  const int32_t s = pool_.ScopeId("");
  KvSequence a(pool_, 64, s), b(pool_, 64, s);
  ASSERT_TRUE(a.Reserve(8));
  ASSERT_TRUE(b.Reserve(8));
  a.Commit(Tokens(8));
  b.Commit(Tokens(8));  // duplicates: b's blocks stay private
  a.Release();
  b.Release();
  EXPECT_EQ(pool_.cached(), 2);  // a's two blocks; b's went back to the free list
  EXPECT_EQ(pool_.used(), 0);
}

TEST(KvPoolOffTest, WithThePrefixCacheOffNothingIsShared) {
  KvPool pool(4, 4, false, [](int32_t, int32_t) {});
  {
    KvSequence seq(pool, 64, 0);
    ASSERT_TRUE(seq.Reserve(8));
    seq.Commit(Tokens(8));
  }
  EXPECT_EQ(pool.cached(), 0);
  KvSequence again(pool, 64, 0);
  EXPECT_EQ(again.AdoptPrefix(Tokens(8), 8), 0);
}

}  // namespace
}  // namespace airlock::inference
