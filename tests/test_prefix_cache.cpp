// tests/test_prefix_cache.cpp — pkv's automatic prefix caching: the shared cases of
// prefix_cache_cases.hpp (ported from vLLM's test_prefix_caching.py) with both hash algorithms
// and with verify_tokens, then what is particular to pkv: token mode against the count forms,
// fork and copy-on-write of cached blocks, StreamingLLM, eviction, the lock-free lookups racing
// with reclaim, and verification against a digest collision.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "prefix_cache_cases.hpp"

namespace pkv_test {
namespace {

using pkv::CopyOp;
using pkv::HashAlgorithm;
using pkv::PagedKvCache;

template <HashAlgorithm A, bool Verify>
struct Pkv {
  using Cache = PagedKvCache;
  static std::unique_ptr<Cache> make(std::size_t num_blocks, std::size_t block_size) {
    PagedKvCache::Options o;
    o.prefix.hash = A;
    o.prefix.verify_tokens = Verify;
    return std::make_unique<Cache>(num_blocks, block_size, 4, 8, o);
  }
};

using PkvTypes =
    ::testing::Types<Pkv<HashAlgorithm::sha256, false>, Pkv<HashAlgorithm::xxh3_128, false>,
                     Pkv<HashAlgorithm::xxh3_128, true>>;
INSTANTIATE_TYPED_TEST_SUITE_P(Pkv, PrefixCacheCases, PkvTypes);

std::unique_ptr<PagedKvCache> make(std::size_t blocks, bool verify = false) {
  return verify ? Pkv<HashAlgorithm::xxh3_128, true>::make(blocks, 16)
                : Pkv<HashAlgorithm::xxh3_128, false>::make(blocks, 16);
}

TEST(PkvPrefix, st_count_forms_and_token_mode) {
  auto c = make(8);
  // By count: never publishes, token appends act as the count form.
  ASSERT_TRUE(c->allocate(SeqId{1}, 32));
  const Tokens one = {7};
  ASSERT_TRUE(c->append(SeqId{1}, one));
  EXPECT_EQ(c->commit(SeqId{1}, 33).value(), 0u);
  EXPECT_EQ(c->cached_block_count(), 0u);
  // Token mode: appending by count is refused and changes nothing.
  ASSERT_TRUE(c->allocate(SeqId{2}, range_tokens(0, 20), {}));
  auto by_count = c->append(SeqId{2}, 1);
  ASSERT_FALSE(by_count.has_value());
  EXPECT_EQ(by_count.error().code(), Errc::invalid_operation);
  EXPECT_EQ(c->get_sequence(SeqId{2})->num_tokens, 20u);
  pkv::AppendBatchOutcome out;
  const SeqId both[] = {SeqId{1}, SeqId{2}};
  c->append_batch(both, 1, out);
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0].item, 1u);
  EXPECT_EQ(out.errors[0].error.code(), Errc::invalid_operation);
  // The token form of append_batch: one id per item.
  const TokenId ids[] = {5, 20};
  ASSERT_TRUE(c->append_batch(both, ids, out));
  EXPECT_TRUE(out.errors.empty());
  EXPECT_EQ(c->get_sequence(SeqId{2})->num_tokens, 21u);
  const TokenId too_few[] = {5};
  EXPECT_EQ(c->append_batch(both, too_few, out).error().code(), Errc::invalid_argument);
  EXPECT_EQ(c->validate_unsafe(), "");
}

TEST(PkvPrefix, st_prefix_caching_off_acts_as_count_form) {
  PagedKvCache::Options o;
  o.prefix.enabled = false;
  PagedKvCache c(4, 16, 4, 8, o);
  ASSERT_EQ(c.allocate(SeqId{1}, range_tokens(0, 40), {}).value(), 0u);
  ASSERT_EQ(c.commit(SeqId{1}, 40).value(), 0u);
  const Tokens one = {1};
  ASSERT_TRUE(c.append(SeqId{1}, one));
  ASSERT_TRUE(c.append(SeqId{1}, 1));  // a count-mode sequence: both forms work
  EXPECT_EQ(c.match_prefix(range_tokens(0, 40)), 0u);
  EXPECT_EQ(c.cached_block_count(), 0u);
  ASSERT_TRUE(c.free(SeqId{1}));
  EXPECT_EQ(c.free_block_count(), 4u);
}

// fork shares cached blocks as any block; both children's full blocks stay findable after the
// parent goes; copy-on-write of a shared partial block gives the writer a private block that is
// published only once full and committed.
TEST(PkvPrefix, st_fork_and_copy_on_write_of_cached_blocks) {
  auto c = make(16);
  const Tokens p = range_tokens(0, 40);  // 2 full blocks + 8
  ASSERT_TRUE(c->allocate(SeqId{1}, p, {}));
  ASSERT_TRUE(c->fork(SeqId{1}, SeqId{2}));
  const auto parent = c->get_sequence(SeqId{1})->block_ids;
  EXPECT_EQ(c->block_ref_count(parent[0]), 2u);
  EXPECT_EQ(c->commit(SeqId{1}, 40).value(), 2u);  // publishes the shared full blocks
  EXPECT_EQ(c->commit(SeqId{2}, 40).value(), 0u);  // the sharer finds them published
  // The child diverges: its shared partial block is copied.
  const Tokens t = {900};
  auto r = c->append(SeqId{2}, t);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r.value().has_value());
  const CopyOp cow = *r.value();
  EXPECT_EQ(cow.src, parent[2]);
  // Fill the child's private block to 48 tokens and commit: only the child's content is found.
  Tokens child = cat(p, t);
  for (TokenId x = 901; child.size() < 48; ++x) {
    const Tokens one = {x};
    ASSERT_TRUE(c->append(SeqId{2}, one));
    child.push_back(x);
  }
  EXPECT_EQ(c->commit(SeqId{2}, 48).value(), 1u);
  EXPECT_EQ(c->match_prefix(cat(child, {1})), 48u);
  EXPECT_EQ(c->match_prefix(cat(head(p, 40), repeat(0, 9))), 32u);  // the parent's tail differs
  ASSERT_TRUE(c->free(SeqId{1}));
  ASSERT_TRUE(c->free(SeqId{2}));
  EXPECT_EQ(c->free_block_count(), 16u);
  EXPECT_EQ(c->reclaimable_block_count(), 3u);
  EXPECT_EQ(c->validate_unsafe(), "");
}

// Eviction and StreamingLLM: an evicted token-mode sequence's cached blocks become reclaimable;
// after StreamingLLM a sequence publishes nothing more.
TEST(PkvPrefix, st_evict_and_streaming_llm) {
  auto c = make(16);
  ASSERT_TRUE(c->allocate(SeqId{1}, range_tokens(0, 64), {}));
  EXPECT_EQ(c->commit(SeqId{1}, 64).value(), 4u);
  ASSERT_EQ(c->evict().value(), SeqId{1});
  EXPECT_EQ(c->reclaimable_block_count(), 4u);
  EXPECT_EQ(c->match_prefix(range_tokens(0, 65)), 64u);

  ASSERT_TRUE(c->allocate(SeqId{2}, range_tokens(1000, 1040), {}));
  ASSERT_EQ(c->apply_streaming_llm(SeqId{2}, 4, 20).value(), 16u);
  for (TokenId x = 0; x < 30; ++x) {
    const Tokens one = {2000 + x};
    ASSERT_TRUE(c->append(SeqId{2}, one));
  }
  EXPECT_EQ(c->commit(SeqId{2}, c->get_sequence(SeqId{2})->num_tokens).value(), 0u);
  EXPECT_EQ(c->cached_block_count(), 4u);
  EXPECT_EQ(c->validate_unsafe(), "");
}

// Plain free blocks go first; count-mode allocations also reclaim cached blocks when no plain
// free block is left (no stranding), and a reclaimed block is no longer findable.
TEST(PkvPrefix, st_count_allocation_reclaims_when_plain_blocks_run_out) {
  auto c = make(8);
  ASSERT_TRUE(c->allocate(SeqId{1}, range_tokens(0, 64), {}));
  EXPECT_EQ(c->commit(SeqId{1}, 64).value(), 4u);
  ASSERT_TRUE(c->free(SeqId{1}));
  ASSERT_TRUE(c->allocate(SeqId{2}, 4 * 16));  // the 4 plain free blocks
  EXPECT_EQ(c->reclaimable_block_count(), 4u) << c->pool().free_count();
  ASSERT_TRUE(c->allocate(SeqId{3}, 2 * 16));  // two reclaimed: the deepest blocks first
  EXPECT_EQ(c->reclaimable_block_count(), 2u);
  EXPECT_EQ(c->match_prefix(range_tokens(0, 65)), 32u);
  EXPECT_EQ(c->prefix_stats().reclaimed, 2u);
  auto oom = c->allocate(SeqId{4}, 3 * 16);
  ASSERT_FALSE(oom.has_value());
  EXPECT_EQ(oom.error().code(), Errc::out_of_memory);
  EXPECT_EQ(c->reclaimable_block_count(), 2u);
  ASSERT_TRUE(c->free(SeqId{3}));  // plain blocks: back to the pool
  EXPECT_EQ(c->free_block_count(), 4u);
  EXPECT_EQ(c->validate_unsafe(), "");
}

// The hit path never hands out a reclaimed block: threads hit and release hot prefixes while
// others allocate by count and force reclaims. Every hit's blocks must carry the hashes of the
// prompt it matched (checked through match_prefix of the sequence's own prompt while held) and
// the accounting must close.
TEST(PkvPrefix, mt_hits_race_with_reclaim) {
  constexpr int kThreads = 4;
  constexpr int kIters = 400;
  auto c = make(24);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        const SeqId s{(static_cast<std::uint64_t>(t) << 32) | static_cast<std::uint64_t>(i)};
        if (t % 2 == 0) {
          const Tokens p = range_tokens(static_cast<TokenId>(100 * (i % 3)),
                                        static_cast<TokenId>(100 * (i % 3) + 49));
          auto r = c->allocate(s, p, {});
          if (!r) continue;  // out of memory under the other threads' load
          if (r.value() % 16 != 0 || r.value() > 48) bad.fetch_add(1);
          (void)c->commit(s, p.size());
          // While held, its full committed blocks are findable under its own prompt.
          if (c->match_prefix(p) != 48) bad.fetch_add(1);
          (void)c->free(s);
        } else {
          if (c->allocate(s, 16 * (1 + i % 6))) (void)c->free(s);
        }
      }
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(c->free_block_count(), 24u);
  EXPECT_EQ(c->validate_unsafe(), "");
}

// free_block_count() sums two counters (plain free, reclaimable) read one after the other; a block
// that moves from plain free to reclaimable between the two reads is counted twice. The figures
// must stay in range all the same ("a value within the range the concurrent calls could
// produce"), and peak_blocks_used, derived from them, must never pass total_blocks(). Writers
// cycle blocks through plain free -> held -> reclaimable -> reclaimed as fast as they can.
TEST(PkvPrefix, mt_figures_stay_in_range_while_blocks_change_state) {
  constexpr std::size_t kBlocks = 24;
  PagedKvCache::Options o;
  o.prefix.hash = HashAlgorithm::xxh3_128;
  o.pool.magazine_size = 2;  // blocks move between threads' magazines and the shared stack often
  o.pool.slot_magazines = 2;
  auto c = std::make_unique<PagedKvCache>(kBlocks, 2, 4, 8, o);
  std::atomic<bool> stop{false};
  std::atomic<int> out_of_range{0};
  std::vector<std::thread> ts;
  // More threads than cores, so that readers are preempted between their two loads.
  constexpr int kWriters = 6;
  for (int t = 0; t < kWriters; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 30000; ++i) {
        const SeqId s{(static_cast<std::uint64_t>(t + 1) << 32) | static_cast<std::uint64_t>(i)};
        if (i % 2 == 0) {  // count form: plain blocks through the pool's magazines
          if (c->allocate(s, 2 + i % 5)) (void)c->free(s);
          continue;
        }
        // Distinct prompts: every free leaves reclaimable blocks, every allocate reclaims some.
        const auto first = static_cast<TokenId>(1000 * t + 50 * (i % 7));
        const Tokens p = range_tokens(first, first + 7);
        if (!c->allocate(s, p, {})) continue;
        (void)c->commit(s, p.size());
        (void)c->free(s);
      }
    });
  }
  for (int r = 0; r < 2; ++r)
    ts.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t f = c->free_block_count();
        const double u = c->utilization();
        if (f > kBlocks || c->used_block_count() > kBlocks || !(u >= 0.0 && u <= 1.0) ||
            c->stats().peak_blocks_used > kBlocks)
          out_of_range.fetch_add(1);
      }
    });
  for (int t = 0; t < kWriters; ++t) ts[t].join();
  stop.store(true);
  for (std::size_t t = kWriters; t < ts.size(); ++t) ts[t].join();
  EXPECT_EQ(out_of_range.load(), 0);
  EXPECT_LE(c->stats().peak_blocks_used, kBlocks);
  EXPECT_EQ(c->free_block_count(), kBlocks);
  EXPECT_EQ(c->validate_unsafe(), "");
}

// With verify_tokens, hits compare the stored ids (the collision path itself is tested on the
// prefix cache directly, tests/test_cache_parts.cpp, since no real digest collision is at hand).
TEST(PkvPrefix, st_verify_tokens_hits_only_equal_tokens) {
  auto c = make(8, true);
  ASSERT_TRUE(c->allocate(SeqId{1}, range_tokens(0, 33), {}));
  ASSERT_EQ(c->commit(SeqId{1}, 33).value(), 2u);
  EXPECT_EQ(c->match_prefix(range_tokens(0, 33)), 32u);
  Tokens other = range_tokens(0, 33);
  other[20] = 7777;
  EXPECT_EQ(c->match_prefix(other), 16u);
  EXPECT_EQ(c->prefix_stats().verify_failures, 0u);
  EXPECT_EQ(c->validate_unsafe(), "");
}

// fork_many / free_many / truncate on token-mode sequences: children share the cached blocks (one
// holder each), free_many leaves the published ones reclaimable, and a truncate into a published
// block keeps it full and findable (the next append copies it instead of writing into it).
TEST(PkvPrefix, st_fork_many_free_many_truncate_in_token_mode) {
  auto c = make(32);
  const Tokens p = range_tokens(0, 40);
  ASSERT_TRUE(c->allocate(SeqId{1}, p, {}));
  ASSERT_EQ(c->commit(SeqId{1}, 40).value(), 2u);
  const SeqId kids[] = {SeqId{2}, SeqId{3}, SeqId{4}};
  ASSERT_TRUE(c->fork_many(SeqId{1}, kids));
  const auto table = c->get_sequence(SeqId{1})->block_ids;
  EXPECT_EQ(c->block_ref_count(table[0]), 4u);
  EXPECT_EQ(c->block_ref_count(table[2]), 4u);
  pkv::FreeManyOutcome out;
  const SeqId gone[] = {SeqId{2}, SeqId{9}, SeqId{3}};
  c->free_many(gone, out);
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0].item, 1u);
  EXPECT_EQ(c->block_ref_count(table[0]), 2u);
  EXPECT_EQ(c->validate_unsafe(), "");

  // Truncate S4 back into its second (published, full) block, then append: a copy, and the
  // cached block still holds the original tokens.
  ASSERT_TRUE(c->free(SeqId{1}));
  EXPECT_EQ(c->block_ref_count(table[1]), 1u);
  ASSERT_EQ(c->truncate(SeqId{4}, 10).value(), 1u);  // 30 tokens: block 2 goes
  const Tokens x = {777};
  auto r = c->append(SeqId{4}, x);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r.value().has_value()) << "an append into a findable block must copy it";
  EXPECT_EQ(r.value()->src, table[1]);
  EXPECT_EQ(c->match_prefix(cat(head(p, 32), {1})), 32u);
  EXPECT_EQ(c->get_sequence(SeqId{4})->num_tokens, 31u);
  // S4's own chain now continues from token 30 with 777: its block 1 is no longer p's.
  Tokens mine = cat(head(p, 30), x);
  for (TokenId t = 0; mine.size() < 32; ++t) {
    const Tokens one = {5000 + t};
    ASSERT_TRUE(c->append(SeqId{4}, one));
    mine.push_back(5000 + t);
  }
  EXPECT_EQ(c->commit(SeqId{4}, 32).value(), 1u);
  EXPECT_EQ(c->match_prefix(cat(mine, {1})), 32u);
  EXPECT_EQ(c->match_prefix(cat(head(p, 32), {1})), 32u);
  const SeqId last[] = {SeqId{4}};
  c->free_many(last, out);
  EXPECT_TRUE(out.errors.empty());
  EXPECT_EQ(c->free_block_count(), 32u);
  EXPECT_EQ(c->validate_unsafe(), "");
}

}  // namespace
}  // namespace pkv_test
