// The cache's parts on their own (src/cache/): the sequence table (SeqMap), StreamingLLM's
// compaction, the victim index, the placement and free_many's fold of several tables.
// Single-threaded; internal headers.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "cache/placement.hpp"
#include "cache/prefix_cache.hpp"
#include "cache/refcounts.hpp"
#include "cache/seq_map.hpp"
#include "cache/shard.hpp"
#include "cache/streaming_llm.hpp"
#include "cache/victim_index.hpp"
#include "pkv/block_hash.hpp"

namespace {

using pkv::SeqId;
using pkv::TokenRun;
using pkv::detail::compact_streaming;
using pkv::detail::SeqMap;
using pkv::detail::StreamingCompaction;

TEST(SeqMap, st_matches_std_map_under_random_inserts_and_erases) {
  SeqMap<int> m;
  std::map<std::uint64_t, int> ref;
  std::mt19937_64 rng(7);
  for (int step = 0; step < 20000; ++step) {
    // Small key range: many collisions in the probe runs, many erases of present keys.
    const std::uint64_t k = rng() % 300;
    if (rng() % 3 != 0 && !ref.contains(k)) {
      m.insert_new(SeqId{k}, int{step});
      ref[k] = step;
    } else if (ref.contains(k)) {
      m.erase(SeqId{k});
      ref.erase(k);
    }
    if (step % 97 == 0) {
      ASSERT_EQ(m.validate(), "") << "step " << step;
    }
  }
  ASSERT_EQ(m.validate(), "");
  ASSERT_EQ(m.size(), ref.size());
  for (std::uint64_t k = 0; k < 300; ++k) {
    int* v = m.find_entry(SeqId{k});
    ASSERT_EQ(v != nullptr, ref.contains(k)) << k;
    if (v != nullptr) {
      EXPECT_EQ(*v, ref[k]);
    }
  }
  std::size_t visited = 0;
  for (auto& kv : m) {
    EXPECT_EQ(ref.at(kv.first.value), kv.second);
    ++visited;
  }
  EXPECT_EQ(visited, ref.size());
  EXPECT_LE(2 * m.size(), m.capacity());
}

TEST(SeqMap, st_values_never_move) {
  SeqMap<int> m;
  int* first = &m.insert_new(SeqId{1}, int{10})->second;
  for (std::uint64_t k = 2; k < 1000; ++k) m.insert_new(SeqId{k}, int{0});  // many grows
  EXPECT_EQ(m.find_entry(SeqId{1}), first);
  for (std::uint64_t k = 2; k < 1000; ++k) m.erase(SeqId{k});  // many backward shifts
  EXPECT_EQ(m.find_entry(SeqId{1}), first);
  EXPECT_EQ(*first, 10);
  EXPECT_EQ(m.validate(), "");
}

// 40 tokens in 3 blocks of 16: keep 4 sink + 16 window. Tokens 24..39 sit in slots 24..39
// (blocks 1 and 2), the sink in block 0.
TEST(StreamingCompaction, st_keeps_blocks_of_sink_and_window_only) {
  const std::vector<TokenRun> runs{{0, 0, 40}};
  const StreamingCompaction c = compact_streaming(runs, 3, 16, 40, 4, 16);
  ASSERT_EQ(c.new_index.size(), 3u);
  EXPECT_EQ(c.new_index[0], 0u);
  EXPECT_EQ(c.new_index[1], 1u);
  EXPECT_EQ(c.new_index[2], 2u);
  const std::vector<TokenRun> want{{0, 0, 4}, {4, 24, 16}};
  EXPECT_EQ(c.runs, want);
}

TEST(StreamingCompaction, st_drops_middle_blocks_and_renumbers_slots) {
  // 100 tokens over 7 blocks of 16; keep 16 sink (block 0) + 10 window (tokens 90..99 = slots
  // 90..99, block 5 and 6): blocks 1..4 go; the window moves to compacted blocks 1 and 2.
  const std::vector<TokenRun> runs{{0, 0, 100}};
  const StreamingCompaction c = compact_streaming(runs, 7, 16, 100, 16, 10);
  const std::vector<std::uint64_t> idx{0,
                                       StreamingCompaction::kDropped,
                                       StreamingCompaction::kDropped,
                                       StreamingCompaction::kDropped,
                                       StreamingCompaction::kDropped,
                                       1,
                                       2};
  EXPECT_EQ(c.new_index, idx);
  // Sink ends at slot 16 (block 0 full) and the window starts at slot 90 -> 16 + 10 = 26: the
  // two runs are adjacent in token order but not in slots, so they stay two.
  const std::vector<TokenRun> want{{0, 0, 16}, {16, 26, 10}};
  EXPECT_EQ(c.runs, want);
}

TEST(StreamingCompaction, st_merges_runs_that_become_adjacent) {
  // A second compaction of an already compacted sequence: runs {0,0,4},{4,24,20} (24 tokens,
  // blocks 0..2 of 16 = 48 slots, slots 4..23 dead). Keep 4 + 20: nothing dropped (n == keep is
  // the caller's case), so keep 4 + 19 of 24 instead: token 4 (slot 24) goes; blocks stay.
  const std::vector<TokenRun> runs{{0, 0, 4}, {4, 24, 20}};
  const StreamingCompaction c = compact_streaming(runs, 3, 16, 24, 4, 19);
  const std::vector<TokenRun> want{{0, 0, 4}, {4, 25, 19}};
  EXPECT_EQ(c.runs, want);
  // Keep the sink only in block 0, the window in block 2: block 1 (slots 16..31) still holds
  // window tokens 25..31, so every block stays.
  for (std::uint64_t i : c.new_index) EXPECT_NE(i, StreamingCompaction::kDropped);
}

TEST(VictimIndex, st_list_and_set_kinds_agree_on_the_head) {
  using pkv::detail::Entry;
  using pkv::detail::VictimIndex;
  std::vector<Entry> es;
  for (std::uint64_t i = 0; i < 8; ++i) {
    Entry e(SeqId{i});
    e.last_access = 10 + (i * 5) % 8;  // distinct stamps, not in id order
    e.access_count = 1 + i % 3;
    es.push_back(std::move(e));
  }
  for (auto kind : {VictimIndex::Kind::lru, VictimIndex::Kind::lfu,
                    VictimIndex::Kind::longest_first, VictimIndex::Kind::priority}) {
    VictimIndex idx;
    std::vector<Entry*> ptrs;
    for (Entry& e : es) ptrs.push_back(&e);
    idx.rebuild(kind, ptrs);
    ASSERT_EQ(idx.size(), es.size());
    // The head is the smallest key, whatever the representation.
    pkv::detail::Key best = idx.key_of(es[0]);
    for (const Entry& e : es) best = std::min(best, idx.key_of(e));
    ASSERT_TRUE(idx.head().has_value());
    EXPECT_EQ(*idx.head(), best);
    EXPECT_EQ(idx.validate(es.size(), [](const Entry&) { return true; }), "");
    // Touch the head: it moves behind everyone under LRU.
    Entry* h = nullptr;
    for (Entry& e : es)
      if (idx.key_of(e) == best) h = &e;
    ASSERT_NE(h, nullptr);
    idx.update(*h, [](Entry& x) { x.last_access = 100; });
    EXPECT_NE(idx.head()->seq, kind == VictimIndex::Kind::lru ? h->id.value : ~0ull);
    EXPECT_EQ(idx.validate(es.size(), [](const Entry&) { return true; }), "");
    idx.update(*h, [](Entry& x) { x.last_access = 100 - 90; });  // back to a stamp of 10
    idx.erase(*h);
    EXPECT_EQ(idx.size(), es.size() - 1);
    EXPECT_FALSE(idx.contains(*h));
  }
}

TEST(Placement, st_affine_ids_stay_in_their_owners_slice) {
  using pkv::PagedKvCache;
  const auto off = pkv::detail::Placement::from_affinity_shift(0);
  const auto on = pkv::detail::Placement::from_affinity_shift(8);
  constexpr std::size_t per_slice = PagedKvCache::kShards / PagedKvCache::kAffinitySlices;
  for (std::uint64_t owner = 0; owner < 40; ++owner) {
    for (std::uint64_t n = 0; n < 50; ++n) {
      const SeqId id{(owner << 8) | n};
      const std::size_t h = std::hash<SeqId>{}(id);
      EXPECT_EQ(off.shard(id, h), h & (PagedKvCache::kShards - 1));
      EXPECT_EQ(on.shard(id, h) / per_slice, owner % PagedKvCache::kAffinitySlices);
    }
  }
}

// The per-shard validator (what PKV_ASSERT_EXPENSIVE runs) accepts a consistent shard and
// reports each broken invariant.
TEST(Shard, st_validator_reports_broken_invariants) {
  using pkv::detail::Entry;
  pkv::BlockPool pool(16);
  const auto placement = pkv::detail::Placement::from_affinity_shift(0);
  const SeqId id{42};
  const std::size_t home = placement.shard(id, std::hash<SeqId>{}(id));
  pkv::detail::Shard sh;
  std::atomic<std::uint64_t> occupancy{0};
  sh.head.attach(&occupancy, 1);
  Entry e(id);
  ASSERT_TRUE(pool.acquire(1, e.blocks));
  e.runs.push_back(TokenRun{0, 0, 5});
  e.num_tokens = 5;
  e.end_slot = 5;
  e.last_access = 1;
  Entry& in = sh.insert_locked(id, std::move(e));
  EXPECT_EQ(sh.validate_locked(home, placement, 16, pool, nullptr), "");
  EXPECT_NE(sh.validate_locked(home + 1, placement, 16, pool, nullptr), "");  // wrong shard

  in.end_slot = 4;  // no longer the end of its runs
  EXPECT_NE(sh.validate_locked(home, placement, 16, pool, nullptr), "");
  in.end_slot = 5;
  in.num_tokens = 6;  // runs no longer cover num_tokens
  EXPECT_NE(sh.validate_locked(home, placement, 16, pool, nullptr), "");
  in.num_tokens = 5;
  in.pins = 1;  // pinned but still indexed
  EXPECT_NE(sh.validate_locked(home, placement, 16, pool, nullptr), "");
  in.pins = 0;
  ASSERT_TRUE(pool.release(in.blocks[0]));  // the table now holds a free block
  EXPECT_NE(sh.validate_locked(home, placement, 16, pool, nullptr), "");
  ASSERT_TRUE(pool.acquire(1, in.blocks));
  in.blocks.erase(in.blocks.begin());
  EXPECT_EQ(sh.validate_locked(home, placement, 16, pool, nullptr), "");
  auto released = sh.take_locked(
      sh.map.find(id), [&](std::span<const pkv::BlockId> ids, bool) { (void)pool.release(ids); });
  EXPECT_EQ(released.size(), 1u);
  EXPECT_EQ(pool.free_count(), 16u);
  EXPECT_EQ(occupancy.load(), 0u);
  EXPECT_EQ(sh.validate_locked(home, placement, 16, pool, nullptr), "");
}

// A digest collision: two blocks of different token ids under the same hash. Without
// verify_tokens the digest alone decides (as vLLM, SGLang, TensorRT-LLM); with it the stored ids
// are compared, the lookup misses and the failed comparison is counted.
TEST(PrefixCache, st_verify_tokens_turns_a_digest_collision_into_a_miss) {
  for (const bool verify : {false, true}) {
    pkv::PrefixCachingOptions o;
    o.verify_tokens = verify;
    pkv::detail::PrefixCache pc(4, 2, o);
    const pkv::BlockId b{1};
    pc.adopt(b);
    pkv::BlockHash h;
    h.bytes[0] = 42;
    const std::vector<pkv::TokenId> stored{1, 2}, other{1, 3};
    ASSERT_TRUE(pc.publish(b, h, stored));
    EXPECT_TRUE(pc.peek(h, stored));
    EXPECT_EQ(pc.peek(h, other), !verify);
    const auto hit = pc.try_hit(h, other);
    EXPECT_EQ(static_cast<bool>(hit), !verify);
    EXPECT_EQ(hit.revived, 0u);  // held by its publisher: not reclaimable
    EXPECT_EQ(pc.stats().verify_failures, verify ? 1u : 0u);
    EXPECT_EQ(pc.holders(b), verify ? 1u : 2u);
    const auto hit2 = pc.try_hit(h, stored);
    ASSERT_TRUE(hit2);
    EXPECT_EQ(hit2.block, b.value);
  }
}

// A hit and a reclaim race on one reclaimable block: exactly one of them wins, every time.
TEST(PrefixCache, mt_a_block_is_revived_or_reclaimed_never_both) {
  pkv::PrefixCachingOptions o;
  pkv::detail::PrefixCache pc(1, 2, o);
  const pkv::BlockId b{0};
  pkv::BlockHash h;
  h.bytes[3] = 7;
  const std::vector<pkv::TokenId> toks{5, 6};
  int both = 0, neither = 0;
  for (int round = 0; round < 2000; ++round) {
    pc.adopt(b);
    ASSERT_TRUE(pc.publish(b, h, toks));
    ASSERT_FALSE(pc.release(b));  // reclaimable now
    pkv::detail::PrefixCache::Hit hit;
    std::optional<pkv::BlockId> taken;
    std::thread t1([&] {
      hit = pc.try_hit(h, toks);
      pc.note_revived(hit.revived);
    });
    std::thread t2([&] { taken = pc.reclaim(true); });
    t1.join();
    t2.join();
    both += hit && taken.has_value();
    neither += !hit && !taken.has_value();
    if (hit) {
      EXPECT_EQ(hit.revived, 1u);
    }
    // Put the block back to "held once, unfindable" whichever way it went.
    if (hit) {
      // Revived: still findable; reclaim it for the next round.
      ASSERT_FALSE(pc.release(b));
      ASSERT_TRUE(pc.reclaim(true).has_value());
    }
    ASSERT_TRUE(pc.release(b));  // unfindable, no holder: back to the pool
  }
  EXPECT_EQ(both, 0);
  EXPECT_EQ(neither, 0);
  EXPECT_EQ(pc.validate_unsafe(), "");
  EXPECT_EQ(pc.stats().reclaimed, 2000u);  // every round ends with the block reclaimed once
}

// release_tail_first = release() of each block from the last to the first: the same states, the
// same reclaim order (tail first, also across its chunks of kReleaseChunk), plain blocks handed
// back, held ones untouched, and the reclaimable count exact afterwards.
TEST(PrefixCache, st_release_tail_first_is_release_of_each_block_from_the_tail) {
  constexpr std::uint32_t kN = 150;  // more than two chunks of reclaimable blocks
  pkv::PrefixCachingOptions o;
  pkv::detail::PrefixCache pc(kN, 2, o);
  std::vector<pkv::BlockId> table;
  for (std::uint32_t i = 0; i < kN; ++i) {
    const pkv::BlockId b{i};
    pc.adopt(b);
    table.push_back(b);
    if (i % 10 == 9) continue;  // every tenth stays unpublished: plain free when released
    const std::vector<pkv::TokenId> toks{i, i + 1};
    const pkv::BlockHash h = pkv::chain_hash(pkv::BlockHash{}, toks, pkv::HashAlgorithm::xxh3_128);
    ASSERT_TRUE(pc.publish(b, h, toks));
  }
  pc.retain(pkv::BlockId{7});  // a second holder: the release leaves it held
  std::vector<std::uint32_t> to_pool;
  pc.release_tail_first(table, [&](pkv::BlockId b) { to_pool.push_back(b.value); });
  std::vector<std::uint32_t> want_pool;
  for (std::uint32_t i = kN; i-- > 0;)
    if (i % 10 == 9) want_pool.push_back(i);
  EXPECT_EQ(to_pool, want_pool);
  EXPECT_EQ(pc.holders(pkv::BlockId{7}), 1u);
  const std::size_t reclaimable = kN - kN / 10 - 1;
  EXPECT_EQ(pc.reclaimable(), reclaimable);
  EXPECT_EQ(pc.validate_unsafe(), "");
  // Reclaimed deepest first: 149 is plain, so 148, 147, ... skipping the plain ones and 7.
  std::vector<std::uint32_t> order;
  while (const auto b = pc.reclaim(true)) order.push_back(b->value);
  std::vector<std::uint32_t> want_order;
  for (std::uint32_t i = kN; i-- > 0;)
    if (i % 10 != 9 && i != 7) want_order.push_back(i);
  EXPECT_EQ(order, want_order);
  EXPECT_EQ(pc.reclaimable(), 0u);
}

// ---- the fold of free_many (refcounts.hpp) ------------------------------------------------------

// The fold must give every distinct block exactly once, with its multiplicity over all lists,
// whichever path (aligned index compare, memcmp prefix, hash fold) counted it.
void expect_exact_fold(const std::vector<std::vector<pkv::BlockId>>& lists, bool aligned) {
  std::vector<std::span<const pkv::BlockId>> spans(lists.begin(), lists.end());
  std::map<std::uint32_t, std::uint32_t> want;
  std::size_t total = 0;
  for (const auto& l : lists) {
    for (pkv::BlockId b : l) ++want[b.value];
    total += l.size();
  }
  std::vector<pkv::detail::BlockRefs> out;
  std::vector<pkv::BlockId> rest;
  std::vector<std::uint64_t> table;
  out.reserve(total);
  rest.reserve(total);
  table.reserve(pkv::detail::fold_table_size(total));
  const auto* before = out.data();
  pkv::detail::fold_tables(spans, aligned, out, rest, table);
  EXPECT_EQ(out.data(), before) << "the fold allocated although room was reserved";
  std::map<std::uint32_t, std::uint32_t> got;
  for (const auto& r : out) {
    EXPECT_FALSE(got.contains(r.id.value)) << "B" << r.id.value << " listed twice";
    got[r.id.value] = r.n;
  }
  EXPECT_EQ(got, want);
}

TEST(Fold, st_aligned_tables_fold_exactly) {
  std::mt19937_64 rng(3);
  for (int round = 0; round < 200; ++round) {
    // A family of forks of one table of up to 300 blocks: every child shares a prefix, then has
    // its own blocks (copy-on-write, appends); a few also share an extra block at the same index
    // after a difference (the rare branch). Shared blocks always sit at the same index, as in
    // tables StreamingLLM never compacted.
    std::uint32_t fresh = 1'000'000;
    std::vector<pkv::BlockId> root(rng() % 300);
    for (std::size_t j = 0; j < root.size(); ++j)
      root[j] = pkv::BlockId{static_cast<std::uint32_t>(j)};
    std::vector<std::vector<pkv::BlockId>> lists{root};
    const std::size_t kids = 1 + rng() % 6;
    for (std::size_t k = 0; k < kids; ++k) {
      std::vector<pkv::BlockId> t(
          root.begin(), root.begin() + static_cast<std::ptrdiff_t>(rng() % (root.size() + 1)));
      if (!t.empty() && rng() % 2) t.back() = pkv::BlockId{fresh++};
      if (rng() % 4 == 0 && t.size() + 1 < root.size()) {
        t.push_back(pkv::BlockId{fresh++});
        t.push_back(root[t.size()]);  // equal again after a difference
      }
      for (std::size_t extra = rng() % 5; extra > 0; --extra) t.push_back(pkv::BlockId{fresh++});
      lists.push_back(std::move(t));
      // A sibling forked from that child after its own blocks: the child's blocks at the same
      // indexes (shared blocks that differ from the root's go through the hash fold).
      if (rng() % 3 == 0) {
        std::vector<pkv::BlockId> sib = lists.back();
        if (!sib.empty() && rng() % 2) sib.back() = pkv::BlockId{fresh++};
        sib.push_back(pkv::BlockId{fresh++});
        lists.push_back(std::move(sib));
      }
    }
    std::shuffle(lists.begin() + 1, lists.end(), rng);
    expect_exact_fold(lists, true);
    expect_exact_fold(lists, false);
  }
}

TEST(Fold, st_unaligned_lists_fold_through_the_hash) {
  // Held copy sources and compacted tables: the same blocks at any index.
  std::mt19937_64 rng(4);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::vector<pkv::BlockId>> lists(1 + rng() % 8);
    for (auto& l : lists) {
      std::vector<std::uint32_t> ids(rng() % 100);
      for (auto& x : ids) x = static_cast<std::uint32_t>(rng() % 150);
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());  // no repeats within a list
      std::shuffle(ids.begin(), ids.end(), rng);
      for (auto x : ids) l.push_back(pkv::BlockId{x});
    }
    expect_exact_fold(lists, false);
  }
}

}  // namespace
