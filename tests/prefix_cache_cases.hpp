// tests/prefix_cache_cases.hpp — the behaviour of automatic prefix caching (issue 11) as a typed
// GoogleTest suite, written once for every cache that has the prefix-caching API: the vLLM-style
// baseline (tests/test_prefix_baseline.cpp) and pkv::PagedKvCache.
//
// The cases port what applies of vLLM's tests/v1/core/test_prefix_caching.py (test_prefill,
// test_decode, test_evict, test_hash_block_correct_reuse, test_computed_blocks_not_evicted,
// test_cache_key_salting, test_prefill_not_enough_free_blocks_with_computed_blocks,
// test_reset_prefix_cache) and assert properties (counts, which prefixes stay findable, which
// block ids are shared), never vLLM's block numbering.
//
// Use: a parameter type P with
//     using Cache = ...;
//     static std::unique_ptr<Cache> make(std::size_t num_blocks, std::size_t block_size);
// then
//     using MyTypes = ::testing::Types<P1, P2>;
//     INSTANTIATE_TYPED_TEST_SUITE_P(Name, PrefixCacheCases, MyTypes);
// The cache needs: allocate(SeqId, span<const TokenId>, string_view) -> Result<size_t>,
// append(SeqId, span<const TokenId>) -> Result<...>, commit(SeqId, size_t) -> Result<size_t>,
// free(SeqId) -> Result<void>, get_sequence(SeqId) -> optional<SequenceInfo>,
// match_prefix(span, string_view) -> size_t, cached_block_count(), reclaimable_block_count(),
// free_block_count(), prefix_stats() -> PrefixCacheStats, reset_prefix_cache() -> Result<void>.
// If it has validate() or validate_unsafe() returning a string, the cases call it at quiescent
// points and expect "".
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "pkv/pkv.hpp"

namespace pkv_test {

using pkv::BlockId;
using pkv::Errc;
using pkv::SeqId;
using pkv::TokenId;
using Tokens = std::vector<TokenId>;

inline Tokens range_tokens(TokenId first, TokenId last) {  // [first, last)
  Tokens t(last - first);
  std::iota(t.begin(), t.end(), first);
  return t;
}
inline Tokens repeat(TokenId value, std::size_t n) {
  return Tokens(n, value);
}
inline Tokens cat(Tokens a, const Tokens& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
inline Tokens head(const Tokens& t, std::size_t n) {
  return Tokens(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(n));
}
/// Three full blocks of 16: 0 x16, 1 x16, 2 x16 (vLLM's common_token_ids).
inline Tokens common48() {
  return cat(cat(repeat(0, 16), repeat(1, 16)), repeat(2, 16));
}

template <class C>
void expect_valid(const C& c) {
  if constexpr (requires {
                  { c.validate() } -> std::convertible_to<std::string>;
                }) {
    EXPECT_EQ(c.validate(), "");
  } else if constexpr (requires {
                         { c.validate_unsafe() } -> std::convertible_to<std::string>;
                       }) {
    EXPECT_EQ(c.validate_unsafe(), "");
  }
}

template <class P>
class PrefixCacheCases : public ::testing::Test {
 protected:
  using Cache = typename P::Cache;
  static std::unique_ptr<Cache> make(std::size_t blocks, std::size_t block_size = 16) {
    return P::make(blocks, block_size);
  }

  // allocate that must succeed; returns the cached tokens.
  static std::size_t alloc(Cache& c, std::uint64_t seq, const Tokens& t,
                           std::string_view salt = {}) {
    auto r = c.allocate(SeqId{seq}, t, salt);
    EXPECT_TRUE(r.has_value()) << "allocate S" << seq << ": " << r.error().message();
    return r.has_value() ? r.value() : std::size_t{0};
  }
  static std::size_t commit(Cache& c, std::uint64_t seq, std::size_t n) {
    auto r = c.commit(SeqId{seq}, n);
    EXPECT_TRUE(r.has_value()) << "commit S" << seq << ": " << r.error().message();
    return r.has_value() ? r.value() : std::size_t{0};
  }
  static void append(Cache& c, std::uint64_t seq, const Tokens& t) {
    auto r = c.append(SeqId{seq}, t);
    EXPECT_TRUE(r.has_value()) << "append S" << seq << ": " << r.error().message();
  }
  static void free(Cache& c, std::uint64_t seq) {
    auto r = c.free(SeqId{seq});
    EXPECT_TRUE(r.has_value()) << "free S" << seq << ": " << r.error().message();
  }
  static std::vector<BlockId> ids(const Cache& c, std::uint64_t seq) {
    auto info = c.get_sequence(SeqId{seq});
    EXPECT_TRUE(info.has_value()) << "S" << seq;
    return info ? info->block_ids : std::vector<BlockId>{};
  }
};

TYPED_TEST_SUITE_P(PrefixCacheCases);

// vLLM test_prefill: a hit while the blocks are held, a hit after they were released (revived),
// then a miss that reclaims every cached block.
TYPED_TEST_P(PrefixCacheCases, st_prefill_hit) {
  auto c = this->make(11);
  const Tokens common = common48();
  const Tokens p0 = cat(common, repeat(3, 7));  // 55 tokens: 3 full blocks + 7
  EXPECT_EQ(this->alloc(*c, 0, p0), 0u);
  EXPECT_EQ(c->free_block_count(), 7u);
  EXPECT_EQ(c->cached_block_count(), 0u);  // allocate commits nothing
  EXPECT_EQ(c->match_prefix(p0), 0u);
  EXPECT_EQ(this->commit(*c, 0, 55), 3u);  // the partial 4th block is not published
  EXPECT_EQ(c->cached_block_count(), 3u);
  EXPECT_EQ(c->reclaimable_block_count(), 0u);
  const auto ids0 = this->ids(*c, 0);

  // Hit while S0 still holds the blocks.
  EXPECT_EQ(this->alloc(*c, 1, cat(common, repeat(3, 5))), 48u);
  const auto ids1 = this->ids(*c, 1);
  ASSERT_EQ(ids1.size(), 4u);
  EXPECT_TRUE(std::equal(ids1.begin(), ids1.begin() + 3, ids0.begin()));
  EXPECT_NE(ids1[3], ids0[3]);  // the partial block is private
  EXPECT_EQ(c->free_block_count(), 6u);

  this->free(*c, 0);
  this->free(*c, 1);
  EXPECT_EQ(c->free_block_count(), 11u);  // reclaimable blocks count as free
  EXPECT_EQ(c->reclaimable_block_count(), 3u);
  EXPECT_EQ(c->cached_block_count(), 3u);
  expect_valid(*c);

  // Hit after release: the same blocks are revived.
  EXPECT_EQ(this->alloc(*c, 2, cat(common, repeat(3, 6))), 48u);
  const auto ids2 = this->ids(*c, 2);
  EXPECT_TRUE(std::equal(ids2.begin(), ids2.begin() + 3, ids0.begin()));
  EXPECT_EQ(c->reclaimable_block_count(), 0u);
  EXPECT_EQ(c->free_block_count(), 7u);

  auto st = c->prefix_stats();
  EXPECT_EQ(st.requests, 3u);
  EXPECT_EQ(st.queries, 55u + 53u + 54u);
  EXPECT_EQ(st.hits, 96u);
  EXPECT_EQ(st.published, 3u);
  EXPECT_EQ(st.reclaimed, 0u);
  EXPECT_DOUBLE_EQ(st.hit_rate(), 96.0 / 162.0);

  // A miss that needs every block: plain free ones first, then the 3 cached ones are reclaimed.
  this->free(*c, 2);
  EXPECT_EQ(this->alloc(*c, 3, repeat(99, 16 * 11)), 0u);
  EXPECT_EQ(c->free_block_count(), 0u);
  EXPECT_EQ(c->cached_block_count(), 0u);
  EXPECT_EQ(c->reclaimable_block_count(), 0u);
  EXPECT_EQ(c->prefix_stats().reclaimed, 3u);
  EXPECT_EQ(c->match_prefix(p0), 0u);
  expect_valid(*c);
}

// vLLM test_decode: decoding publishes a block only once it is full and committed.
TYPED_TEST_P(PrefixCacheCases, st_decode_publishes_only_full_blocks) {
  auto c = this->make(11);
  Tokens all = cat(common48(), repeat(3, 7));  // 55
  EXPECT_EQ(this->alloc(*c, 0, all), 0u);
  EXPECT_EQ(this->commit(*c, 0, 55), 3u);
  for (int i = 0; i < 9; ++i) {  // 55 -> 64 tokens: block 3 fills with the 64th token
    this->append(*c, 0, {8});
    all.push_back(8);
  }
  EXPECT_EQ(this->ids(*c, 0).size(), 4u);
  // Each append committed the tokens held before it (<= 63): block 3 is full, not committed.
  EXPECT_EQ(c->cached_block_count(), 3u);
  EXPECT_EQ(c->match_prefix(cat(all, {1})), 48u);

  this->append(*c, 0, {9});  // commits 64 tokens: block 3 becomes findable; takes block 4
  all.push_back(9);
  EXPECT_EQ(c->cached_block_count(), 4u);
  EXPECT_EQ(this->ids(*c, 0).size(), 5u);
  EXPECT_EQ(c->free_block_count(), 6u);
  EXPECT_EQ(c->match_prefix(all), 64u);
  EXPECT_EQ(c->match_prefix(cat(head(all, 64), repeat(5, 30))), 64u);

  EXPECT_EQ(this->commit(*c, 0, 65), 0u);  // block 4 holds 1 token
  EXPECT_EQ(this->commit(*c, 0, 64), 0u);  // already published
  auto over = c->commit(SeqId{0}, 66);
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code(), Errc::invalid_argument);
  EXPECT_EQ(c->cached_block_count(), 4u);

  // Explicit commits: only full blocks among the committed tokens.
  const Tokens t1 = range_tokens(1000, 1032);
  EXPECT_EQ(this->alloc(*c, 1, t1), 0u);
  EXPECT_EQ(this->commit(*c, 1, 31), 1u);
  EXPECT_EQ(this->commit(*c, 1, 32), 1u);

  // One append of many tokens completes several blocks; they wait for a commit.
  EXPECT_EQ(this->alloc(*c, 2, range_tokens(500, 510)), 0u);
  this->append(*c, 2, range_tokens(510, 550));  // 50 tokens: 3 full blocks
  EXPECT_EQ(c->match_prefix(range_tokens(500, 560)), 0u);
  EXPECT_EQ(this->commit(*c, 2, 50), 3u);
  EXPECT_EQ(c->match_prefix(range_tokens(500, 560)), 48u);
  EXPECT_EQ(c->prefix_stats().published, 4u + 2u + 3u);
  expect_valid(*c);
}

// vLLM test_evict: released cached blocks are reclaimed least recently released first, and a
// sequence's blocks are released tail first (the deepest block of its chain goes first).
TYPED_TEST_P(PrefixCacheCases, st_eviction_order) {
  auto c = this->make(10);
  const Tokens t0 = range_tokens(0, 87);    // 5 full blocks + 7
  const Tokens t1 = range_tokens(87, 135);  // 3 full blocks
  const Tokens t1x = cat(t1, {1});          // looks all 3 of t1's blocks up
  EXPECT_EQ(this->alloc(*c, 0, t0), 0u);
  EXPECT_EQ(this->commit(*c, 0, 87), 5u);
  EXPECT_EQ(this->alloc(*c, 1, t1), 0u);
  EXPECT_EQ(this->commit(*c, 1, 48), 3u);
  EXPECT_EQ(c->free_block_count(), 1u);
  this->free(*c, 0);
  EXPECT_EQ(c->free_block_count(), 7u);
  EXPECT_EQ(c->reclaimable_block_count(), 5u);
  this->free(*c, 1);
  EXPECT_EQ(c->free_block_count(), 10u);
  EXPECT_EQ(c->reclaimable_block_count(), 8u);

  // Touch S0's first 2 blocks; the new block comes from the 2 plain free ones.
  EXPECT_EQ(this->alloc(*c, 2, range_tokens(0, 35)), 32u);
  EXPECT_EQ(c->free_block_count(), 7u);
  EXPECT_EQ(c->reclaimable_block_count(), 6u);
  EXPECT_EQ(c->prefix_stats().reclaimed, 0u);

  // 3 blocks: 1 plain + 2 reclaimed, S0's blocks 4 and 3 (released first, deepest first).
  EXPECT_EQ(this->alloc(*c, 3, repeat(7777, 48)), 0u);
  EXPECT_EQ(c->prefix_stats().reclaimed, 2u);
  EXPECT_EQ(c->cached_block_count(), 6u);
  EXPECT_EQ(c->match_prefix(t0), 48u);
  EXPECT_EQ(c->match_prefix(t1x), 48u);
  // Next: S0's block 2, then S1's deepest block.
  EXPECT_EQ(this->alloc(*c, 4, repeat(8888, 16)), 0u);
  EXPECT_EQ(c->match_prefix(t0), 32u);
  EXPECT_EQ(c->match_prefix(t1x), 48u);
  EXPECT_EQ(this->alloc(*c, 5, repeat(9999, 16)), 0u);
  EXPECT_EQ(c->match_prefix(t0), 32u);  // blocks 0 and 1 are held by S2
  EXPECT_EQ(c->match_prefix(t1x), 32u);
  EXPECT_EQ(c->prefix_stats().reclaimed, 4u);
  EXPECT_EQ(c->free_block_count(), 2u);
  EXPECT_EQ(c->reclaimable_block_count(), 2u);
  expect_valid(*c);
}

// vLLM test_hash_block_correct_reuse: a reclaimed block loses its hash.
TYPED_TEST_P(PrefixCacheCases, st_reclaimed_block_is_not_findable) {
  auto c = this->make(1);
  EXPECT_EQ(this->alloc(*c, 0, range_tokens(0, 16)), 0u);
  EXPECT_EQ(this->commit(*c, 0, 16), 1u);
  this->free(*c, 0);
  EXPECT_EQ(c->reclaimable_block_count(), 1u);
  EXPECT_EQ(c->match_prefix(range_tokens(0, 17)), 16u);

  EXPECT_EQ(this->alloc(*c, 1, range_tokens(0, 15)), 0u);  // not a full block: no hit
  EXPECT_EQ(c->prefix_stats().reclaimed, 1u);
  EXPECT_EQ(c->cached_block_count(), 0u);
  EXPECT_EQ(c->match_prefix(range_tokens(0, 17)), 0u);
  EXPECT_EQ(this->commit(*c, 1, 15), 0u);
  EXPECT_EQ(c->cached_block_count(), 0u);
  this->free(*c, 1);
  EXPECT_EQ(c->free_block_count(), 1u);
  EXPECT_EQ(c->reclaimable_block_count(), 0u);
  expect_valid(*c);
}

// Prefixes that end inside a block share only the full blocks before it; the last prompt token is
// always computed.
TYPED_TEST_P(PrefixCacheCases, st_partial_block_reuse) {
  auto c = this->make(10);
  const Tokens t = range_tokens(0, 40);  // 2 full blocks + 8
  EXPECT_EQ(this->alloc(*c, 0, t), 0u);
  EXPECT_EQ(this->commit(*c, 0, 40), 2u);
  const auto ids0 = this->ids(*c, 0);

  EXPECT_EQ(this->alloc(*c, 1, cat(head(t, 36), {1000, 1001})), 32u);
  EXPECT_NE(this->ids(*c, 1)[2], ids0[2]);
  EXPECT_EQ(this->alloc(*c, 2, head(t, 32)), 16u);  // 2 full blocks, but the last token is computed
  EXPECT_EQ(this->alloc(*c, 3, head(t, 33)), 32u);
  EXPECT_EQ(this->alloc(*c, 4, head(t, 20)), 16u);
  EXPECT_EQ(this->alloc(*c, 5, head(t, 16)), 0u);
  EXPECT_EQ(this->alloc(*c, 6, head(t, 1)), 0u);
  EXPECT_EQ(c->match_prefix(head(t, 32)), 16u);
  EXPECT_EQ(c->match_prefix(head(t, 33)), 32u);
  EXPECT_EQ(c->match_prefix({}), 0u);
  EXPECT_EQ(c->prefix_stats().hits, 32u + 16u + 32u + 16u);
  // S0 3 blocks; S1..S6 each 1 private block beyond the shared ones.
  EXPECT_EQ(c->free_block_count(), 10u - 3u - 6u);
  expect_valid(*c);
}

// vLLM test_computed_blocks_not_evicted: the blocks an allocation hits are not the ones it
// reclaims for its new blocks.
TYPED_TEST_P(PrefixCacheCases, st_computed_blocks_not_reclaimed_by_same_allocation) {
  auto c = this->make(2);
  const Tokens a = range_tokens(0, 16);
  const Tokens b = range_tokens(16, 32);
  EXPECT_EQ(this->alloc(*c, 0, a), 0u);
  EXPECT_EQ(this->commit(*c, 0, 16), 1u);
  const BlockId block_a = this->ids(*c, 0)[0];
  EXPECT_EQ(this->alloc(*c, 1, b), 0u);
  EXPECT_EQ(this->commit(*c, 1, 16), 1u);
  const BlockId block_b = this->ids(*c, 1)[0];
  this->free(*c, 0);  // block_a is the least recently released
  this->free(*c, 1);
  EXPECT_EQ(c->reclaimable_block_count(), 2u);

  EXPECT_EQ(this->alloc(*c, 2, cat(a, b)), 16u);
  const auto ids2 = this->ids(*c, 2);
  ASSERT_EQ(ids2.size(), 2u);
  EXPECT_EQ(ids2[0], block_a);
  EXPECT_EQ(ids2[1], block_b);
  EXPECT_EQ(c->prefix_stats().reclaimed, 1u);
  EXPECT_EQ(c->cached_block_count(), 1u);
  EXPECT_EQ(c->match_prefix(cat(a, {0})), 16u);
  EXPECT_EQ(c->match_prefix(cat(b, {0})), 0u);
  expect_valid(*c);
}

// vLLM test_prefill_not_enough_free_blocks_with_computed_blocks: a failed allocation changes no
// reference count (nor anything else).
TYPED_TEST_P(PrefixCacheCases, st_failed_allocation_changes_nothing) {
  auto c = this->make(10);
  const Tokens cc = common48();
  EXPECT_EQ(this->alloc(*c, 0, cc), 0u);
  EXPECT_EQ(this->commit(*c, 0, 48), 3u);
  EXPECT_EQ(this->alloc(*c, 1, cat(cc, cc)), 48u);
  EXPECT_EQ(this->commit(*c, 1, 96), 3u);
  EXPECT_EQ(c->cached_block_count(), 6u);
  this->free(*c, 1);  // its own 3 blocks become reclaimable; S0 still holds the first 3
  EXPECT_EQ(this->alloc(*c, 2, repeat(7, 32)), 0u);
  EXPECT_EQ(c->free_block_count(), 5u);  // 2 plain + 3 reclaimable
  EXPECT_EQ(c->reclaimable_block_count(), 3u);

  const auto before = c->prefix_stats();
  const auto ids0 = this->ids(*c, 0);
  const Tokens c3 = cat(cat(cc, cc), cc);  // hits 6 blocks (3 reclaimable), needs 3 new; 2 left
  auto r = c->allocate(SeqId{3}, c3, {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::out_of_memory);
  EXPECT_FALSE(c->get_sequence(SeqId{3}).has_value());
  EXPECT_EQ(c->free_block_count(), 5u);
  EXPECT_EQ(c->reclaimable_block_count(), 3u);
  EXPECT_EQ(c->cached_block_count(), 6u);
  EXPECT_EQ(c->prefix_stats(), before);
  EXPECT_EQ(this->ids(*c, 0), ids0);
  EXPECT_EQ(c->match_prefix(c3), 96u);
  expect_valid(*c);

  // Had the failure taken references, S0's blocks would stay held after S0 is freed.
  this->free(*c, 0);
  EXPECT_EQ(c->free_block_count(), 8u);
  EXPECT_EQ(c->reclaimable_block_count(), 6u);
  this->free(*c, 2);
  EXPECT_EQ(c->free_block_count(), 10u);
  EXPECT_EQ(this->alloc(*c, 3, c3), 96u);
  expect_valid(*c);
}

// No stranding: k new blocks succeed exactly when plain free + reclaimable - revived >= k.
TYPED_TEST_P(PrefixCacheCases, st_allocation_boundary_with_revived_blocks) {
  auto c = this->make(4);
  const Tokens a = range_tokens(0, 32);
  EXPECT_EQ(this->alloc(*c, 0, a), 0u);
  EXPECT_EQ(this->commit(*c, 0, 32), 2u);
  this->free(*c, 0);                                                   // 2 plain + 2 reclaimable
  auto r = c->allocate(SeqId{1}, cat(a, range_tokens(100, 133)), {});  // 2 hit + 3 new > 2
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::out_of_memory);
  EXPECT_EQ(c->reclaimable_block_count(), 2u);
  EXPECT_EQ(this->alloc(*c, 1, cat(a, range_tokens(100, 132))), 32u);  // 2 hit + 2 new
  EXPECT_EQ(c->free_block_count(), 0u);
  EXPECT_EQ(c->prefix_stats().reclaimed, 0u);
  expect_valid(*c);
}

// vLLM test_cache_key_salting: different salts never share a block.
TYPED_TEST_P(PrefixCacheCases, st_salts_isolate) {
  auto c = this->make(16);
  const Tokens cc = common48();
  EXPECT_EQ(this->alloc(*c, 0, cat(cc, repeat(3, 11)), "salt1"), 0u);
  EXPECT_EQ(this->commit(*c, 0, 59), 3u);
  const Tokens q = cat(cc, repeat(4, 11));
  EXPECT_EQ(c->match_prefix(q, "salt1"), 48u);
  EXPECT_EQ(c->match_prefix(q, "salt2"), 0u);
  EXPECT_EQ(c->match_prefix(q), 0u);
  EXPECT_EQ(this->alloc(*c, 1, q, "salt1"), 48u);
  EXPECT_EQ(this->alloc(*c, 2, q, "salt2"), 0u);
  EXPECT_EQ(this->alloc(*c, 3, q), 0u);
  const auto ids0 = this->ids(*c, 0);
  for (const std::uint64_t s : {2u, 3u}) {
    for (const BlockId b : this->ids(*c, s)) {
      EXPECT_EQ(std::count(ids0.begin(), ids0.end(), b), 0) << "S" << s << " shares " << b;
    }
  }
  expect_valid(*c);
}

// vLLM test_reset_prefix_cache, with pkv's rule: held blocks stay with their sequences.
TYPED_TEST_P(PrefixCacheCases, st_reset_prefix_cache) {
  auto c = this->make(11);
  const Tokens cc = common48();
  EXPECT_EQ(this->alloc(*c, 0, cat(cc, repeat(3, 7))), 0u);
  EXPECT_EQ(this->commit(*c, 0, 55), 3u);
  EXPECT_EQ(this->alloc(*c, 1, cat(cc, repeat(4, 7))), 48u);
  EXPECT_EQ(this->commit(*c, 1, 55), 0u);  // its full blocks are the shared, published ones
  const auto ids0 = this->ids(*c, 0);
  EXPECT_TRUE(c->reset_prefix_cache().has_value());
  EXPECT_EQ(c->cached_block_count(), 0u);
  EXPECT_EQ(c->reclaimable_block_count(), 0u);
  EXPECT_EQ(c->match_prefix(cat(cc, {5})), 0u);
  EXPECT_EQ(this->ids(*c, 0), ids0);
  EXPECT_EQ(this->ids(*c, 1).size(), 4u);
  EXPECT_EQ(c->free_block_count(), 6u);
  EXPECT_EQ(this->commit(*c, 0, 55), 0u);  // forgotten blocks are not published again
  EXPECT_EQ(c->cached_block_count(), 0u);
  this->free(*c, 0);
  this->free(*c, 1);
  EXPECT_EQ(c->free_block_count(), 11u);
  EXPECT_EQ(c->reclaimable_block_count(), 0u);
  EXPECT_EQ(this->alloc(*c, 2, cat(cc, {1})), 0u);
  EXPECT_TRUE(c->reset_prefix_cache().has_value());
  expect_valid(*c);

  // Released cached blocks become plain free.
  EXPECT_EQ(this->commit(*c, 2, 49), 3u);
  this->free(*c, 2);
  EXPECT_EQ(c->reclaimable_block_count(), 3u);
  EXPECT_TRUE(c->reset_prefix_cache().has_value());
  EXPECT_EQ(c->reclaimable_block_count(), 0u);
  EXPECT_EQ(c->free_block_count(), 11u);
  EXPECT_EQ(this->alloc(*c, 3, repeat(6, 16 * 11)), 0u);
  EXPECT_EQ(c->prefix_stats().reclaimed, 0u);  // nothing cached was left to reclaim
  expect_valid(*c);
}

// A hit never hands out a block whose KV is not committed: two sequences prefilling the same
// prompt at once each compute their own copy, and both copies are cached (duplicates allowed).
TYPED_TEST_P(PrefixCacheCases, st_uncommitted_blocks_never_hit) {
  auto c = this->make(20);
  const Tokens p = cat(common48(), repeat(3, 7));
  EXPECT_EQ(this->alloc(*c, 0, p), 0u);
  EXPECT_EQ(this->alloc(*c, 1, p), 0u);
  EXPECT_EQ(c->match_prefix(p), 0u);
  EXPECT_EQ(this->commit(*c, 0, 55), 3u);
  EXPECT_EQ(this->commit(*c, 1, 55), 3u);
  EXPECT_EQ(c->cached_block_count(), 6u);
  EXPECT_EQ(this->alloc(*c, 2, p), 48u);
  const auto ids0 = this->ids(*c, 0), ids1 = this->ids(*c, 1), ids2 = this->ids(*c, 2);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_TRUE(ids2[i] == ids0[i] || ids2[i] == ids1[i]) << i;
  for (const std::uint64_t s : {0u, 1u, 2u}) this->free(*c, s);
  EXPECT_EQ(c->reclaimable_block_count(), 6u);
  EXPECT_EQ(c->free_block_count(), 20u);
  expect_valid(*c);
}

// Bad input is rejected with a clear error and changes nothing.
TYPED_TEST_P(PrefixCacheCases, st_bad_input) {
  auto c = this->make(4);
  auto empty = c->allocate(SeqId{1}, std::span<const TokenId>{}, {});
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), Errc::invalid_argument);
  EXPECT_FALSE(c->get_sequence(SeqId{1}).has_value());
  EXPECT_EQ(c->free_block_count(), 4u);

  EXPECT_EQ(this->alloc(*c, 1, range_tokens(0, 10)), 0u);
  auto dup = c->allocate(SeqId{1}, range_tokens(0, 10), {});
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), Errc::invalid_operation);
  EXPECT_EQ(c->free_block_count(), 3u);

  auto over = c->commit(SeqId{1}, 11);
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code(), Errc::invalid_argument);
  EXPECT_EQ(c->commit(SeqId{9}, 1).error().code(), Errc::sequence_not_found);
  const Tokens one = {1};
  EXPECT_EQ(c->append(SeqId{9}, one).error().code(), Errc::sequence_not_found);
  EXPECT_EQ(c->free(SeqId{9}).error().code(), Errc::sequence_not_found);
  EXPECT_EQ(c->prefix_stats().requests, 1u);
  this->free(*c, 1);
  EXPECT_EQ(c->free(SeqId{1}).error().code(), Errc::sequence_not_found);
  EXPECT_EQ(c->free_block_count(), 4u);
  expect_valid(*c);
}

// A failed append commits nothing (all or nothing).
TYPED_TEST_P(PrefixCacheCases, st_failed_append_commits_nothing) {
  auto c = this->make(1);
  EXPECT_EQ(this->alloc(*c, 0, range_tokens(0, 16)), 0u);
  const Tokens one = {16};
  auto r = c->append(SeqId{0}, one);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::out_of_memory);
  EXPECT_EQ(c->cached_block_count(), 0u);
  EXPECT_EQ(this->ids(*c, 0).size(), 1u);
  EXPECT_EQ(this->commit(*c, 0, 16), 1u);
  EXPECT_EQ(c->cached_block_count(), 1u);
  expect_valid(*c);
}

// Threads allocate, commit, decode and free prompts over 8 shared prefixes at once. Every call
// succeeds (the cache is large enough for every thread's live sequence), every hit is a multiple
// of the block size within the shared prefix, and the accounting closes at the end.
TYPED_TEST_P(PrefixCacheCases, mt_shared_prefixes) {
  constexpr int kThreads = 4;
  constexpr int kIters = 150;
  auto c = this->make(64);
  std::vector<Tokens> prefixes;
  for (TokenId k = 0; k < 8; ++k)
    prefixes.push_back(range_tokens(10000 * (k + 1), 10000 * (k + 1) + 64));
  std::atomic<int> failures{0};
  std::atomic<std::uint64_t> hit_tokens{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        const SeqId seq{static_cast<std::uint64_t>(t) << 32 | static_cast<std::uint64_t>(i)};
        const TokenId unique = static_cast<TokenId>(1000000 + (t * kIters + i) * 32);
        const Tokens prompt =
            cat(prefixes[static_cast<std::size_t>(t + i) % 8], range_tokens(unique, unique + 20));
        auto r = c->allocate(seq, prompt, {});
        if (!r.has_value() || r.value() % 16 != 0 || r.value() > 64) {
          failures.fetch_add(1, std::memory_order_relaxed);  // counter only; read after join
          continue;
        }
        hit_tokens.fetch_add(r.value(), std::memory_order_relaxed);  // counter only
        if (!c->commit(seq, prompt.size()).has_value()) failures.fetch_add(1);
        const Tokens next = {unique + 20, unique + 21, unique + 22};
        if (!c->append(seq, next).has_value()) failures.fetch_add(1);
        if (!c->free(seq).has_value()) failures.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(c->free_block_count(), 64u);
  EXPECT_EQ(c->reclaimable_block_count(), c->cached_block_count());
  const auto st = c->prefix_stats();
  EXPECT_EQ(st.requests, static_cast<std::uint64_t>(kThreads * kIters));
  EXPECT_EQ(st.hits, hit_tokens.load());
  EXPECT_EQ(st.queries, static_cast<std::uint64_t>(kThreads * kIters * 84));
  EXPECT_GT(st.hits, 0u);  // 8 hot prefixes of 4 blocks in a 64-block cache stay cached
  expect_valid(*c);
}

REGISTER_TYPED_TEST_SUITE_P(PrefixCacheCases, st_prefill_hit, st_decode_publishes_only_full_blocks,
                            st_eviction_order, st_reclaimed_block_is_not_findable,
                            st_partial_block_reuse,
                            st_computed_blocks_not_reclaimed_by_same_allocation,
                            st_failed_allocation_changes_nothing,
                            st_allocation_boundary_with_revived_blocks, st_salts_isolate,
                            st_reset_prefix_cache, st_uncommitted_blocks_never_hit, st_bad_input,
                            st_failed_append_commits_nothing, mt_shared_prefixes);

}  // namespace pkv_test
