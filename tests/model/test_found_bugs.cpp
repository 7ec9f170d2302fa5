// Regression tests for defects the model tests, pkv-stress and the linearizability checker found
// in src/ (issue 3). Each scenario is the minimal reproducer that failed before the fix: the first
// three were fixed in e42126a; the last two failed on the uncommitted working tree of 01:25 UTC
// (shard-local LRU lists and the maybe_shared shortcut) and fail until that code is fixed. The
// remaining deviations from strict linearizability are listed (and reproduced by the
// DISABLED_mt_strict_* runs) in test_linearizability.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <latch>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"  // test_ids()
#include "pkv/paged_kv_cache.hpp"
#include "support/kv_arena.hpp"

namespace {

using pkv::BlockId;
using pkv::CopyOp;
using pkv::PagedKvCache;
using pkv::SeqId;

// A host KV arena: one 64-bit cookie per token slot of every block.
using Arena = pkv::test_support::KvArena<std::uint64_t>;

}  // namespace

// Was: append() dropped the sequence's reference to the copy-on-write source before the caller
// copied it; another thread freeing the last other holder and allocating got the block and wrote
// its own tokens into it, and the copy then took foreign data. With Options::hold_copy_sources
// the source stays held until copy_done(), so the same interleaving keeps the data.
TEST(FoundBugs, mt_copy_source_survives_until_copy_done) {
  PagedKvCache::Options o;
  o.hold_copy_sources = true;
  PagedKvCache cache(4, 4, 1, 1, o);
  Arena arena(4, 4);
  ASSERT_TRUE(cache.allocate(SeqId{1}, 1));
  const BlockId x = cache.get_sequence(SeqId{1})->block_ids[0];
  arena.cell(x, 0) = 0x5101;  // S1's token 0
  ASSERT_TRUE(cache.fork(SeqId{1}, SeqId{2}));

  std::latch appended(1), reused(1);
  std::optional<CopyOp> op;
  std::thread a([&] {  // the scheduler thread serving S1
    auto r = cache.append(SeqId{1}, 1);
    ASSERT_TRUE(r && r.value());
    op = r.value();
    appended.count_down();
    reused.wait();  // ... the copy kernel is queued behind other work
    arena.copy(*op);
    auto done = cache.copy_done(SeqId{1});
    ASSERT_TRUE(done);
    EXPECT_EQ(done.value(), 1u);
  });
  std::thread b([&] {  // another scheduler thread: S2 finishes, a new request arrives
    appended.wait();
    ASSERT_TRUE(cache.free(SeqId{2}));  // S1 still holds the copy source
    ASSERT_TRUE(cache.allocate(SeqId{3}, 1));
    const BlockId got = cache.get_sequence(SeqId{3})->block_ids[0];
    EXPECT_NE(got, x);
    arena.cell(got, 0) = 0x5301;  // S3's token 0
    reused.count_down();
  });
  a.join();
  b.join();
  ASSERT_TRUE(op.has_value());
  const BlockId y = cache.get_sequence(SeqId{1})->block_ids[0];
  EXPECT_EQ(arena.cell(y, 0), 0x5101u) << "S1's token 0 was replaced by another sequence's data";
  EXPECT_EQ(cache.validate_unsafe(), "");
}

// Was a data race (seen under ThreadSanitizer; this test only fails in a -Db_sanitize=thread
// build): append decided "not shared, write in place" from a relaxed load of the reference count,
// so nothing ordered the last other holder's reads of the block (its copy-on-write copy, its
// attention reads) before this caller's in-place writes. ref_count() is now an acquire load.
TEST(FoundBugs, mt_in_place_append_is_ordered_after_the_last_sharers_reads) {
  PagedKvCache cache(4, 4, 1, 1);
  Arena arena(4, 4);
  ASSERT_TRUE(cache.allocate(SeqId{1}, 1));
  const BlockId x = cache.get_sequence(SeqId{1})->block_ids[0];
  arena.cell(x, 0) = 0x5101;
  ASSERT_TRUE(cache.fork(SeqId{1}, SeqId{2}));
  std::uint64_t seen = 0;
  std::thread reader([&] {  // S1's thread reads the whole block (as a copy would), then frees S1
    for (std::size_t i = 0; i < 4; ++i) seen += arena.cell(x, i);
    ASSERT_TRUE(cache.free(SeqId{1}));
  });
  std::thread writer([&] {  // S2's thread appends once S2 is the only holder
    while (cache.pool().ref_count(x) != 1) std::this_thread::yield();
    auto r = cache.append(SeqId{2}, 1);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r.value().has_value());  // not shared any more: written in place
    arena.cell(x, 1) = 0x5202;
  });
  reader.join();
  writer.join();
  EXPECT_EQ(seen, 0x5101u);
}

// Was: for magazine_size > 64 create() said "magazine_size exceeds 64" while the constructor let
// BlockPool's text through ("magazine_size 65 exceeds 64"); the header promises the same message.
TEST(FoundBugs, st_constructor_message_matches_create) {
  PagedKvCache::Options o;
  o.pool.magazine_size = 65;
  auto r = PagedKvCache::create(4, 2, 1, 1, o);
  ASSERT_FALSE(r.has_value());
  std::string thrown;
  try {
    PagedKvCache c(4, 2, 1, 1, o);
  } catch (const std::invalid_argument& e) {
    thrown = e.what();
  }
  EXPECT_EQ(thrown, r.error().message());
}

// append() must be all or nothing. It cleared the sequence's "maybe shared" flag before taking its
// blocks, so after an out-of-memory failure the next append skipped the copy-on-write check and
// wrote into the block its fork still holds (and asked for one block too few).
// src/paged_kv_cache.cpp, PagedKvCache::append: `if (room > 0 || need > 0) e.maybe_shared = false;`
// runs before `pool_->acquire(need, got)`.
TEST(FoundBugs, st_failed_append_keeps_copy_on_write) {
  PagedKvCache cache(4, 2, 1, 1);
  ASSERT_TRUE(cache.allocate(SeqId{1}, 3));  // B0 full, B1 holds 1 of 2 tokens
  ASSERT_TRUE(cache.fork(SeqId{1}, SeqId{2}));
  ASSERT_TRUE(cache.allocate(SeqId{3}, 1));  // one block left
  auto oom = cache.append(SeqId{1}, 2);      // copy + 1 fresh block: 2 needed
  ASSERT_FALSE(oom.has_value());
  EXPECT_EQ(oom.error().message(), "Out of memory: requested 2 blocks, 1 available");
  auto oom2 = cache.append(SeqId{1}, 4);  // copy + 2 fresh blocks
  ASSERT_FALSE(oom2.has_value());
  EXPECT_EQ(oom2.error().message(), "Out of memory: requested 3 blocks, 1 available");
  ASSERT_TRUE(cache.free(SeqId{3}));
  auto r = cache.append(SeqId{1}, 1);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r.value().has_value()) << "wrote into the block S2 still holds";
  EXPECT_EQ(cache.validate_unsafe(), "");
}

// unpin() re-inserted the sequence at the recency tail of its shard's LRU list although another
// sequence of the same shard had been used more recently, so evict() took the newer one.
// src/paged_kv_cache.cpp, Shard::index_insert (list case: link_tail, asserted only in debug).
TEST(FoundBugs, st_unpin_keeps_lru_order_within_a_shard) {
  const SeqId a{pkv::model::test_ids()[0]}, b{pkv::model::test_ids()[1]};  // one shard
  PagedKvCache cache(8, 2, 1, 1);
  ASSERT_TRUE(cache.allocate(a, 1));
  ASSERT_TRUE(cache.pin(a));
  ASSERT_TRUE(cache.allocate(b, 1));
  ASSERT_TRUE(cache.unpin(a));
  EXPECT_EQ(cache.select_eviction_target(), std::optional<SeqId>(a));
  auto v = cache.evict();
  ASSERT_TRUE(v);
  EXPECT_EQ(v.value(), a) << "evicted the more recently used sequence";
}

// Found by the prefix-caching model (RapidCheck, shrunk): StreamingLLM on a token-mode sequence
// kept the hash chain of tokens it no longer held (validate_unsafe: "token-mode bookkeeping is
// inconsistent"). Fixed in 2c6db83.
TEST(FoundBugs, st_streaming_a_token_mode_sequence_drops_its_chain) {
  PagedKvCache cache(4, 2, 1, 1);
  const std::vector<pkv::TokenId> prompt{100, 101};
  ASSERT_TRUE(cache.allocate(SeqId{1}, prompt));
  ASSERT_TRUE(cache.apply_streaming_llm(SeqId{1}, 1, 0));
  EXPECT_EQ(cache.validate_unsafe(), "");
  auto c = cache.commit(SeqId{1}, 1);
  ASSERT_TRUE(c);
  EXPECT_EQ(c.value(), 0u);
  EXPECT_EQ(cache.validate_unsafe(), "");
}

// Found by the prefix-caching model (RapidCheck, shrunk and replayed by hand): an allocate that
// revives reclaimable hit blocks and then runs out of memory gives them back at the most recently
// released end of the reclaim queue (release_blocks pushes them again), so a failed allocation
// changes which cached blocks are reclaimed next. The contract says allocate is all or nothing
// and bad input changes nothing; the model keeps the queue as it was. FAILS until src/ restores
// the revived blocks' queue positions on that path (PagedKvCache::allocate(seq, prompt, salt)).
TEST(FoundBugs, st_failed_prefix_allocate_keeps_the_reclaim_order) {
  PagedKvCache cache(16, 1, 1, 1);
  auto prompt = [](std::size_t n) {
    std::vector<pkv::TokenId> v;
    for (std::size_t i = 0; i < n; ++i) v.push_back(static_cast<pkv::TokenId>(100 + i));
    return v;
  };
  ASSERT_TRUE(cache.allocate(SeqId{1}, prompt(2), "tb"));
  ASSERT_TRUE(cache.commit(SeqId{1}, 2));  // B0 {100}, B1 {100, 101} findable under "tb"
  ASSERT_TRUE(cache.free(SeqId{1}));       // reclaim queue: B1, B0 (tail first)
  ASSERT_TRUE(cache.allocate(SeqId{4}, prompt(3), "other"));
  ASSERT_TRUE(cache.commit(SeqId{4}, 3));
  ASSERT_TRUE(cache.free(SeqId{4}));          // reclaim queue: B1, B0, C2, C1, C0
  ASSERT_TRUE(cache.allocate(SeqId{2}, 11));  // every plain free block taken
  ASSERT_EQ(cache.reclaimable_block_count(), 5u);
  // Hits B0 and B1 (revived), then needs 8 more with 3 left: out_of_memory.
  auto r = cache.allocate(SeqId{3}, prompt(10), "tb");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), pkv::Errc::out_of_memory);
  EXPECT_EQ(cache.reclaimable_block_count(), 5u);
  // One block more for S2: the least recently released reclaimable block, B1, must be the one
  // reclaimed, as if the failed allocate had not happened; B0 stays findable.
  ASSERT_TRUE(cache.append(SeqId{2}, 1));
  EXPECT_EQ(cache.match_prefix(prompt(3), "tb"), 1u)
      << "the failed allocate moved B0 and B1 behind C2, C1, C0 in the reclaim queue";
}

// Found by the linearizability checker's prefix-caching histories (test_linearizability.cpp,
// early_reclaim, history seed 8001661): a count-form allocate that needs one plain block and
// the one reclaimable block races with an allocate that takes the plain block. In either
// sequential order the cached block survives unless the first call succeeds: B then A, A fails
// and changes nothing; A then B, A reclaims it and B fails. But A checks "plain free +
// reclaimable >= 2" first, then B takes the plain block, then A reclaims the cached block, finds
// no second one and fails, giving it back as a plain free block: a failed allocation forgot
// cached content (no data is ever wrong; the prefix is recomputed). The header now states this
// weakening (its prefix-caching paragraph); this test asserts the stronger property that a
// two-phase reclaim (reserve the reclaimable blocks, forget their hashes only once the call can
// no longer fail) would restore. Probabilistic: needs the two calls to overlap. DISABLED until
// then; run with --gtest_also_run_disabled_tests.
TEST(FoundBugs, DISABLED_mt_failed_allocate_forgets_no_cached_block) {
  constexpr int kRounds = 200'000;
  std::uint64_t races = 0, forgotten = 0;
  std::unique_ptr<PagedKvCache> cache;
  std::atomic<int> round{-1}, done{0};
  std::atomic<bool> a_ok{false}, b_ok{false};
  // Two spinning threads (a thread started per round rarely overlaps the other); B waits a
  // varying number of pauses so that its allocate lands anywhere in A's.
  auto worker = [&](bool is_a) {
    for (int seen = -1;;) {
      int r;
      while ((r = round.load(std::memory_order_acquire)) == seen) {
      }
      if (r == kRounds) return;
      seen = r;
      if (is_a) {
        a_ok.store(cache->allocate(SeqId{2}, 2).has_value(), std::memory_order_relaxed);
      } else {
        for (int k = 0; k < r % 97; ++k) __builtin_ia32_pause();
        b_ok.store(cache->allocate(SeqId{3}, 1).has_value(), std::memory_order_relaxed);
      }
      done.fetch_add(1, std::memory_order_acq_rel);
    }
  };
  std::thread ta(worker, true), tb(worker, false);
  const std::vector<pkv::TokenId> prompt{7, 8};
  for (int i = 0; i < kRounds && forgotten == 0; ++i) {
    PagedKvCache::Options o;
    o.pool.magazine_size = 0;  // the plain block is in the shared list, where both can take it
    cache = std::make_unique<PagedKvCache>(2, 1, 1, 1, o);
    ASSERT_TRUE(cache->allocate(SeqId{1}, std::span<const pkv::TokenId>(prompt.data(), 1)));
    ASSERT_TRUE(cache->commit(SeqId{1}, 1));
    ASSERT_TRUE(cache->free(SeqId{1}));  // one reclaimable block {7}, one plain free block
    done.store(0);
    round.store(i, std::memory_order_release);
    while (done.load(std::memory_order_acquire) < 2) std::this_thread::yield();
    EXPECT_NE(a_ok.load(), b_ok.load());  // exactly one of them fits
    if (a_ok.load()) continue;
    ++races;
    if (cache->match_prefix(prompt) != 1) ++forgotten;  // B then A: {7} must still be cached
  }
  round.store(kRounds, std::memory_order_release);
  ta.join();
  tb.join();
  EXPECT_EQ(forgotten, 0u) << "a failed allocate reclaimed the cached block (in " << races
                           << " rounds where the 1-block allocate won)";
}
