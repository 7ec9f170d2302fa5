// PagedKvCache, single-threaded: every method, every error path, the seed's behaviour and the
// seed's defects fixed (../shared/seed/README.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <pkv/pkv.hpp>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <vector>

namespace {

using pkv::BlockId;
using pkv::CopyOp;
using pkv::Errc;
using pkv::EvictionStrategy;
using pkv::PagedKvCache;
using pkv::SeqId;

constexpr std::size_t kMax = std::numeric_limits<std::size_t>::max();

SeqId S(std::uint64_t v) {
  return SeqId{v};
}

std::string str(const PagedKvCache& c) {
  std::ostringstream os;
  os << c;
  return os.str();
}

#define EXPECT_VALID(c) EXPECT_EQ((c).validate_unsafe(), "")

// ---- construction ------------------------------------------------------------------------------

TEST(Cache, st_config_rejects_zero_and_overflow) {
  struct Bad {
    std::size_t nb, bs, h, d;
    const char* msg;
  };
  for (const Bad& b : {Bad{0, 16, 32, 128, "Invalid argument: num_blocks must be at least 1"},
                       Bad{10, 0, 32, 128, "Invalid argument: block_size must be at least 1"},
                       Bad{10, 16, 0, 128, "Invalid argument: num_heads must be at least 1"},
                       Bad{10, 16, 32, 0, "Invalid argument: head_dim must be at least 1"}}) {
    auto r = PagedKvCache::create(b.nb, b.bs, b.h, b.d);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
    EXPECT_EQ(r.error().message(), b.msg);
    EXPECT_THROW(PagedKvCache(b.nb, b.bs, b.h, b.d), std::invalid_argument);
  }
  auto ids = PagedKvCache::create(std::size_t{1} << 33, 1, 1, 1);
  ASSERT_FALSE(ids);
  EXPECT_EQ(ids.error().code(), Errc::invalid_argument);
  auto bytes = PagedKvCache::create(1000, std::size_t{1} << 40, std::size_t{1} << 20, 1);
  ASSERT_FALSE(bytes);
  EXPECT_EQ(bytes.error().code(), Errc::invalid_argument);
  auto ok = PagedKvCache::create(10, 16, 32, 128);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok.value()->total_blocks(), 10u);
}

// Options::affinity_shift: 64 and up are not bit positions of an id; the sequences of one owner
// (the id's bits from the shift up) share one slice of kShards / kAffinitySlices shards, owners
// 0..kAffinitySlices-1 get different slices, and with the option off one owner's sequences spread
// over the whole table.
TEST(Cache, st_affinity_shift_places_an_owners_sequences_in_its_slice) {
  PagedKvCache::Options bad;
  bad.affinity_shift = 64;
  auto r = PagedKvCache::create(10, 16, 1, 1, bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_EQ(r.error().message(),
            "Invalid argument: affinity_shift 64 is not a bit position of a 64-bit id (0..63)");
  EXPECT_THROW(PagedKvCache(10, 16, 1, 1, bad), std::invalid_argument);

  constexpr std::size_t kPerSlice = PagedKvCache::kShards / PagedKvCache::kAffinitySlices;
  PagedKvCache affine(64, 4, 1, 1, PagedKvCache::Options{.affinity_shift = 32});
  PagedKvCache hashed(64, 4, 1, 1);
  std::set<std::size_t> owner0_hashed;
  for (std::uint64_t owner = 0; owner < 2 * PagedKvCache::kAffinitySlices; ++owner) {
    std::set<std::size_t> used;
    for (std::uint64_t n = 0; n < 200; ++n) {
      const SeqId id{(owner << 32) | n};
      const std::size_t sh = affine.shard_index(id);
      EXPECT_EQ(sh / kPerSlice, owner % PagedKvCache::kAffinitySlices) << id;
      used.insert(sh);
      if (owner == 0) owner0_hashed.insert(hashed.shard_index(id));
    }
    EXPECT_EQ(used.size(), kPerSlice) << "owner " << owner << " uses its whole slice";
  }
  EXPECT_GT(owner0_hashed.size(), kPerSlice) << "hashed placement spreads one owner";
  // Placement changes nothing else: the calls of one owner and across owners behave as always.
  const SeqId a{(std::uint64_t{3} << 32) | 1}, b{(std::uint64_t{5} << 32) | 1};
  ASSERT_TRUE(affine.allocate(a, 5));
  ASSERT_TRUE(affine.fork(a, b));  // across slices
  auto copied = affine.append(b, 1);
  ASSERT_TRUE(copied);
  EXPECT_TRUE(copied.value().has_value());
  EXPECT_EQ(affine.select_eviction_target(), a);
  EXPECT_EQ(affine.evict().value(), a);
  EXPECT_VALID(affine);
  ASSERT_TRUE(affine.free(b));
  EXPECT_EQ(affine.used_block_count(), 0u);
}

TEST(Cache, st_sizes_and_memory_match_seed) {
  PagedKvCache c(100, 16, 32, 128);
  EXPECT_EQ(c.block_size(), 16u);
  EXPECT_EQ(c.total_blocks(), 100u);
  EXPECT_EQ(c.block_memory_bytes(), 262144u);  // 2 x 16 x 32 x 128 x 2
  EXPECT_EQ(c.total_memory_bytes(), 100u * 262144u);
  EXPECT_EQ(c.free_block_count(), 100u);
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_EQ(c.used_memory_bytes(), 0u);
  EXPECT_DOUBLE_EQ(c.utilization(), 0.0);
  EXPECT_EQ(c.num_sequences(), 0u);
  EXPECT_EQ(c.eviction_strategy(), EvictionStrategy::lru());
  EXPECT_DOUBLE_EQ(c.eviction_threshold(), 0.9);
  EXPECT_FALSE(c.needs_eviction());
  EXPECT_EQ(c.stats(), pkv::CacheStats{});
}

// ---- allocate
// ------------------------------------------------------------------------------------

TEST(Cache, st_allocate_takes_ceil_blocks) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 33));  // 3 blocks
  auto info = c.get_sequence(S(1));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->seq_id, S(1));
  EXPECT_EQ(info->num_tokens, 33u);
  EXPECT_EQ(info->num_blocks(), 3u);
  EXPECT_EQ(info->access_count, 1u);
  EXPECT_EQ(info->priority, 0u);
  EXPECT_EQ(info->token_runs, (std::vector<pkv::TokenRun>{{0, 0, 33}}));
  EXPECT_EQ(c.used_block_count(), 3u);
  EXPECT_EQ(c.free_block_count(), 7u);
  EXPECT_DOUBLE_EQ(c.utilization(), 0.3);
  EXPECT_EQ(c.used_memory_bytes(), 3u * 262144u);
  EXPECT_EQ(c.num_sequences(), 1u);
  EXPECT_EQ(c.stats().total_allocations, 3u);
  EXPECT_EQ(c.stats().peak_blocks_used, 3u);
  ASSERT_TRUE(c.allocate(S(2), 16));  // exactly one block
  EXPECT_EQ(c.get_sequence(S(2))->num_blocks(), 1u);
  EXPECT_VALID(c);
}

TEST(Cache, st_allocate_errors_change_nothing) {
  PagedKvCache c(4, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 20));
  auto dup = c.allocate(S(1), 5);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code(), Errc::invalid_operation);
  EXPECT_EQ(dup.error().message(), "Invalid operation: Sequence S1 already exists");
  EXPECT_EQ(c.get_sequence(S(1))->num_tokens, 20u);

  auto oom = c.allocate(S(2), 16 * 3 + 1);  // 4 blocks, 2 free
  ASSERT_FALSE(oom);
  EXPECT_EQ(oom.error().code(), Errc::out_of_memory);
  EXPECT_EQ(oom.error().message(), "Out of memory: requested 4 blocks, 2 available");
  EXPECT_FALSE(c.get_sequence(S(2)));
  EXPECT_EQ(c.used_block_count(), 2u);

  auto huge = c.allocate(S(3), kMax);  // token count near SIZE_MAX: no overflow, clear OOM
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), Errc::out_of_memory);
  EXPECT_EQ(huge.error().message(),
            "Out of memory: requested " + std::to_string(kMax / 16 + 1) + " blocks, 2 available");
  EXPECT_EQ(c.num_sequences(), 1u);
  EXPECT_EQ(c.stats().total_allocations, 2u);
  EXPECT_VALID(c);
}

TEST(Cache, st_allocate_zero_tokens_registers_empty_sequence) {
  PagedKvCache c(4, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 0));
  auto info = c.get_sequence(S(1));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->num_tokens, 0u);
  EXPECT_TRUE(info->block_ids.empty());
  EXPECT_TRUE(info->token_runs.empty());
  EXPECT_EQ(c.used_block_count(), 0u);
  auto r = c.append(S(1), 3);  // first tokens take the first block
  ASSERT_TRUE(r);
  EXPECT_FALSE(r.value());
  EXPECT_EQ(c.get_sequence(S(1))->num_blocks(), 1u);
  EXPECT_EQ(c.get_sequence(S(1))->token_runs, (std::vector<pkv::TokenRun>{{0, 0, 3}}));
  EXPECT_VALID(c);
}

// ---- append
// --------------------------------------------------------------------------------------

TEST(Cache, st_append_takes_blocks_only_at_boundaries) {
  PagedKvCache c(10, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 3));
  EXPECT_EQ(c.used_block_count(), 1u);
  ASSERT_TRUE(c.append(S(1), 1));  // 4: fills block 0
  EXPECT_EQ(c.used_block_count(), 1u);
  ASSERT_TRUE(c.append(S(1), 1));  // 5: new block
  EXPECT_EQ(c.used_block_count(), 2u);
  ASSERT_TRUE(c.append(S(1), 7));  // 12: exactly 3 blocks
  EXPECT_EQ(c.used_block_count(), 3u);
  auto info = c.get_sequence(S(1));
  EXPECT_EQ(info->num_tokens, 12u);
  EXPECT_EQ(info->access_count, 4u);
  EXPECT_EQ(c.stats().total_allocations, 3u);
  EXPECT_VALID(c);
}

TEST(Cache, st_append_zero_is_an_access_and_takes_nothing) {
  PagedKvCache c(10, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 4));
  ASSERT_TRUE(c.allocate(S(2), 4));
  auto before = *c.get_sequence(S(1));
  auto r = c.append(S(1), 0);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r.value());
  auto after = *c.get_sequence(S(1));
  EXPECT_EQ(after.num_tokens, 4u);
  EXPECT_EQ(after.block_ids, before.block_ids);
  EXPECT_EQ(after.access_count, 2u);
  EXPECT_GT(after.last_access, c.get_sequence(S(2))->last_access);
  EXPECT_EQ(c.select_eviction_target(), S(2));
}

TEST(Cache, st_append_errors_change_nothing) {
  PagedKvCache c(3, 4, 1, 1);
  auto missing = c.append(S(9), 1);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::sequence_not_found);
  EXPECT_EQ(missing.error().message(), "Sequence not found: S9");

  ASSERT_TRUE(c.allocate(S(1), 6));      // 2 blocks, 2 free slots
  auto oom = c.append(S(1), 2 + 4 + 1);  // needs 2 more blocks, 1 free
  ASSERT_FALSE(oom);
  EXPECT_EQ(oom.error().message(), "Out of memory: requested 2 blocks, 1 available");
  auto info = c.get_sequence(S(1));
  EXPECT_EQ(info->num_tokens, 6u);
  EXPECT_EQ(info->num_blocks(), 2u);
  EXPECT_EQ(info->access_count, 1u);

  auto overflow = c.append(S(1), kMax - 5);
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().code(), Errc::invalid_argument);
  EXPECT_EQ(c.get_sequence(S(1))->num_tokens, 6u);
  auto huge = c.append(S(1), kMax - 6);  // fits size_t, not the pool
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), Errc::out_of_memory);
  EXPECT_EQ(c.used_block_count(), 2u);
  EXPECT_VALID(c);
}

// ---- append_batch ----------------------------------------------------------------------------

// Every item is what append() called in item order would return: a missing id fails alone, a
// duplicate appends twice, out_of_memory changes nothing for that item only, the CopyOp of a
// shared partial block comes back on the item that copies.
TEST(Cache, st_append_batch_equals_appends_in_item_order) {
  auto run = [](bool batch) {
    PagedKvCache c(6, 4, 1, 1);
    EXPECT_TRUE(c.allocate(S(1), 3));  // B: 1 block, 1 free slot
    EXPECT_TRUE(c.allocate(S(2), 4));  // 1 full block
    EXPECT_TRUE(c.fork(S(1), S(3)));   // S3 shares S1's partial block
    const std::vector<SeqId> ids{S(1), S(9), S(2), S(1), S(3), S(2), S(2)};
    std::vector<pkv::Result<std::optional<CopyOp>>> out;
    if (batch) {
      pkv::AppendBatchOutcome step;
      c.append_batch(ids, 2, step);
      EXPECT_EQ(step.items, ids.size());
      // The lists themselves, in item order: S1's copy (item 0); S9 missing (1), S2 out of
      // memory (6).
      EXPECT_EQ(step.copies.size(), 1u);
      if (!step.copies.empty()) {
        EXPECT_EQ(step.copies[0].item, 0u);
      }
      EXPECT_EQ(step.errors.size(), 2u);
      if (step.errors.size() == 2) {
        EXPECT_EQ(step.errors[0].item, 1u);
        EXPECT_EQ(step.errors[1].item, 6u);
      }
      EXPECT_FALSE(step.all_appended());
      out = step.per_item();
    } else {
      for (SeqId id : ids) out.push_back(c.append(id, 2));
    }
    EXPECT_VALID(c);
    return std::make_pair(std::move(out), c.used_block_count());
  };
  auto [batched, used_b] = run(true);
  auto [single, used_s] = run(false);
  ASSERT_EQ(batched.size(), 7u);
  ASSERT_EQ(single.size(), 7u);
  for (std::size_t i = 0; i < 7; ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(batched[i].has_value(), single[i].has_value());
    if (!batched[i]) {
      EXPECT_EQ(batched[i].error(), single[i].error());
    } else {
      EXPECT_EQ(batched[i].value(), single[i].value());  // the same CopyOp, or none
    }
  }
  EXPECT_EQ(used_b, used_s);
  // The expected outcomes themselves (6 blocks of 4): S1 (3 tokens) copies away from the block
  // it shares with S3 and takes one more (4 used); S9 is missing; S2 (4) takes a block (5 used);
  // S1 fits; S3 finds its block private now and takes one (6 used); S2 (6) fits; S2 (8) needs a
  // block and none is free.
  EXPECT_EQ(used_b, 6u);
  ASSERT_TRUE(batched[0]);
  EXPECT_TRUE(batched[0].value().has_value());
  EXPECT_EQ(batched[1].error().code(), Errc::sequence_not_found);
  EXPECT_EQ(batched[1].error().message(), "Sequence not found: S9");
  ASSERT_TRUE(batched[2]);
  ASSERT_TRUE(batched[3]);
  ASSERT_TRUE(batched[4]);
  EXPECT_FALSE(batched[4].value().has_value()) << "S3 is the only holder once S1 copied away";
  ASSERT_TRUE(batched[5]);
  ASSERT_FALSE(batched[6]);
  EXPECT_EQ(batched[6].error().code(), Errc::out_of_memory);
}

// The per-item form: item i appends counts[i] tokens, exactly as append(ids[i], counts[i]) in
// item order (0 tokens, a block boundary, an overflowing count and out of memory included);
// spans of different lengths are rejected and change nothing.
TEST(Cache, st_append_batch_per_item_counts_equal_appends_in_item_order) {
  const std::vector<SeqId> ids{S(1), S(2), S(1), S(3), S(2), S(9)};
  const std::vector<std::size_t> counts{0, 3, 5, std::numeric_limits<std::size_t>::max(), 1, 2};
  auto run = [&](bool batch) {
    PagedKvCache c(5, 4, 1, 1);
    EXPECT_TRUE(c.allocate(S(1), 2));
    EXPECT_TRUE(c.allocate(S(2), 4));
    EXPECT_TRUE(c.allocate(S(3), 1));
    std::vector<pkv::Result<std::optional<CopyOp>>> out;
    if (batch) {
      pkv::AppendBatchOutcome step;
      EXPECT_TRUE(c.append_batch(ids, counts, step));
      EXPECT_EQ(step.items, ids.size());
      out = step.per_item();
    } else {
      for (std::size_t i = 0; i < ids.size(); ++i) out.push_back(c.append(ids[i], counts[i]));
    }
    std::vector<std::uint64_t> tokens;
    for (std::uint64_t k = 1; k <= 3; ++k) tokens.push_back(c.get_sequence(S(k))->num_tokens);
    EXPECT_VALID(c);
    return std::make_tuple(std::move(out), c.used_block_count(), tokens);
  };
  auto [batched, used_b, tokens_b] = run(true);
  auto [single, used_s, tokens_s] = run(false);
  ASSERT_EQ(batched.size(), single.size());
  for (std::size_t i = 0; i < batched.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(batched[i].has_value(), single[i].has_value());
    if (!batched[i]) {
      EXPECT_EQ(batched[i].error(), single[i].error());
    } else {
      EXPECT_EQ(batched[i].value(), single[i].value());
    }
  }
  EXPECT_EQ(used_b, used_s);
  EXPECT_EQ(tokens_b, tokens_s);
  // The outcomes themselves (5 blocks of 4; 3 used): S1 +0; S2 4 -> 7 takes a block (4 used);
  // S1 2 -> 7 takes one (5 used); S3's count overflows; S2 7 -> 8 fits; S9 is missing.
  EXPECT_EQ(tokens_b, (std::vector<std::uint64_t>{7, 8, 1}));
  EXPECT_EQ(used_b, 5u);
  EXPECT_EQ(batched[3].error().code(), Errc::invalid_argument);
  EXPECT_EQ(batched[5].error().code(), Errc::sequence_not_found);

  PagedKvCache c(5, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 2));
  pkv::AppendBatchOutcome step;
  step.items = 7;  // stale content from an earlier step is cleared
  const std::vector<std::size_t> one{1};
  auto bad = c.append_batch(std::vector<SeqId>{S(1), S(1)}, one, step);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_EQ(bad.error().message(),
            "Invalid argument: append_batch: 2 sequences but 1 token counts");
  EXPECT_EQ(step.items, 0u);
  EXPECT_EQ(c.get_sequence(S(1))->num_tokens, 2u) << "nothing appended";
  EXPECT_VALID(c);
}

TEST(Cache, st_append_batch_orders_recency_by_item) {
  PagedKvCache c(16, 4, 1, 1);
  for (std::uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(c.allocate(S(i), 1));
  pkv::AppendBatchOutcome out;
  c.append_batch(std::vector<SeqId>{S(3), S(1), S(4), S(2)}, 1, out);
  EXPECT_TRUE(out.all_appended());
  EXPECT_EQ(out.items, 4u);
  // S3 was touched first in the batch, so it is now the least recently used.
  EXPECT_EQ(c.select_eviction_target(), S(3));
  EXPECT_LT(c.get_sequence(S(3))->last_access, c.get_sequence(S(1))->last_access);
  EXPECT_LT(c.get_sequence(S(1))->last_access, c.get_sequence(S(4))->last_access);
  EXPECT_LT(c.get_sequence(S(4))->last_access, c.get_sequence(S(2))->last_access);
  ASSERT_TRUE(c.append(S(3), 0));  // a later call is more recent than every batch item
  EXPECT_EQ(c.select_eviction_target(), S(1));
  c.append_batch({}, 1, out);
  EXPECT_EQ(out.items, 0u);
  EXPECT_TRUE(out.copies.empty() && out.errors.empty());
  EXPECT_VALID(c);
}

// ---- free
// ----------------------------------------------------------------------------------------

TEST(Cache, st_free_returns_blocks_and_double_free_is_an_error) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 40));
  ASSERT_TRUE(c.free(S(1)));
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_EQ(c.num_sequences(), 0u);
  EXPECT_EQ(c.stats().total_frees, 3u);
  EXPECT_EQ(c.stats().peak_blocks_used, 3u);
  auto twice = c.free(S(1));
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code(), Errc::sequence_not_found);
  EXPECT_EQ(twice.error().message(), "Sequence not found: S1");
  EXPECT_EQ(c.stats().total_frees, 3u);
  EXPECT_VALID(c);
}

// ---- fork and copy-on-write
// ------------------------------------------------------------------------

TEST(Cache, st_fork_shares_every_block) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 40));
  ASSERT_TRUE(c.fork(S(1), S(2)));
  auto a = c.get_sequence(S(1)), b = c.get_sequence(S(2));
  EXPECT_EQ(a->block_ids, b->block_ids);
  EXPECT_EQ(b->num_tokens, 40u);
  EXPECT_EQ(b->access_count, 1u);
  EXPECT_EQ(c.used_block_count(), 3u);  // nothing taken
  for (BlockId id : a->block_ids) EXPECT_EQ(c.pool().ref_count(id), 2u);
  EXPECT_EQ(c.stats().total_forks, 1u);
  EXPECT_EQ(c.stats().total_allocations, 3u);
  // Freeing one keeps the blocks; freeing both returns them.
  ASSERT_TRUE(c.free(S(1)));
  EXPECT_EQ(c.used_block_count(), 3u);
  EXPECT_EQ(c.stats().total_frees, 0u);
  ASSERT_TRUE(c.free(S(2)));
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_EQ(c.stats().total_frees, 3u);
  EXPECT_VALID(c);
}

TEST(Cache, st_fork_errors_change_nothing) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 10));
  ASSERT_TRUE(c.allocate(S(2), 10));
  auto self = c.fork(S(1), S(1));
  ASSERT_FALSE(self);
  EXPECT_EQ(self.error().code(), Errc::invalid_operation);
  EXPECT_EQ(self.error().message(), "Invalid operation: Cannot fork sequence S1 onto itself");
  auto exists = c.fork(S(1), S(2));
  ASSERT_FALSE(exists);
  EXPECT_EQ(exists.error().message(), "Invalid operation: Destination sequence S2 already exists");
  auto missing = c.fork(S(7), S(8));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::sequence_not_found);
  EXPECT_EQ(missing.error().message(), "Sequence not found: S7");
  EXPECT_FALSE(c.get_sequence(S(8)));
  EXPECT_EQ(c.num_sequences(), 2u);
  EXPECT_EQ(c.stats().total_forks, 0u);
  for (SeqId s : {S(1), S(2)}) EXPECT_EQ(c.pool().ref_count(c.get_sequence(s)->block_ids[0]), 1u);
  EXPECT_VALID(c);
}

TEST(Cache, st_cow_copies_shared_partial_last_block) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 40));  // blocks b0 b1 b2, b2 holds 8 of 16
  ASSERT_TRUE(c.fork(S(1), S(2)));
  const auto shared = c.get_sequence(S(1))->block_ids;

  auto r = c.append(S(2), 1);
  ASSERT_TRUE(r);
  ASSERT_TRUE(r.value()) << "a shared, partly filled last block must be copied";
  const CopyOp op = *r.value();
  EXPECT_EQ(op.src, shared[2]);
  EXPECT_NE(op.dst, shared[2]);
  auto b = c.get_sequence(S(2));
  EXPECT_EQ(b->block_ids[0], shared[0]);  // full blocks stay shared
  EXPECT_EQ(b->block_ids[1], shared[1]);
  EXPECT_EQ(b->block_ids[2], op.dst);
  EXPECT_EQ(b->num_tokens, 41u);
  EXPECT_EQ(c.pool().ref_count(shared[0]), 2u);
  EXPECT_EQ(c.pool().ref_count(shared[2]), 1u);  // only S1 now
  EXPECT_EQ(c.pool().ref_count(op.dst), 1u);
  EXPECT_EQ(c.used_block_count(), 4u);
  EXPECT_EQ(c.stats().total_allocations, 4u);

  // S1 now owns its last block alone: it writes in place, no copy.
  auto again = c.append(S(1), 1);
  ASSERT_TRUE(again);
  EXPECT_FALSE(again.value());
  EXPECT_EQ(c.get_sequence(S(1))->block_ids, shared);
  EXPECT_VALID(c);
}

TEST(Cache, st_cow_at_most_one_copy_and_none_for_full_blocks) {
  PagedKvCache c(20, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 8));  // two full blocks
  ASSERT_TRUE(c.fork(S(1), S(2)));
  auto r = c.append(S(2), 5);  // new blocks only: the shared ones are full
  ASSERT_TRUE(r);
  EXPECT_FALSE(r.value());
  EXPECT_EQ(c.get_sequence(S(2))->num_blocks(), 4u);

  ASSERT_TRUE(c.allocate(S(3), 6));  // half-full second block
  ASSERT_TRUE(c.fork(S(3), S(4)));
  auto big = c.append(S(4), 10);  // copy the partial block once, then 2 fresh blocks
  ASSERT_TRUE(big);
  ASSERT_TRUE(big.value());
  auto info = c.get_sequence(S(4));
  EXPECT_EQ(info->num_tokens, 16u);
  EXPECT_EQ(info->num_blocks(), 4u);
  EXPECT_EQ(info->block_ids[1], big.value()->dst);
  EXPECT_VALID(c);
}

TEST(Cache, st_cow_oom_changes_nothing) {
  PagedKvCache c(3, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 6));  // 2 blocks
  ASSERT_TRUE(c.fork(S(1), S(2)));
  // Needs 1 copy + 1 new block, 1 free.
  auto r = c.append(S(2), 3);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Out of memory: requested 2 blocks, 1 available");
  EXPECT_EQ(c.get_sequence(S(2))->block_ids, c.get_sequence(S(1))->block_ids);
  EXPECT_EQ(c.get_sequence(S(2))->num_tokens, 6u);
  EXPECT_VALID(c);
}

TEST(Cache, st_fork_of_empty_sequence) {
  PagedKvCache c(4, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 0));
  ASSERT_TRUE(c.fork(S(1), S(2)));
  auto r = c.append(S(2), 2);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r.value());
  EXPECT_EQ(c.get_sequence(S(1))->num_blocks(), 0u);
  EXPECT_EQ(c.get_sequence(S(2))->num_blocks(), 1u);
  EXPECT_VALID(c);
}

// ---- fork_many, free_many, truncate
// ------------------------------------------------------------------------

TEST(Cache, st_fork_many_equals_forks_in_order) {
  // Same calls into two caches, one forking per child and one with fork_many: every child,
  // every count, the recency order and the counters come out the same.
  for (bool streamed : {false, true}) {
    PagedKvCache one(40, 4, 1, 1), many(40, 4, 1, 1);
    for (PagedKvCache* c : {&one, &many}) {
      ASSERT_TRUE(c->allocate(S(1), 30));
      ASSERT_TRUE(c->set_priority(S(1), 7));
      if (streamed) {
        ASSERT_EQ(c->apply_streaming_llm(S(1), 2, 9).value(), 19u);
      }
      ASSERT_TRUE(c->allocate(S(9), 3));
    }
    const SeqId kids[] = {S(5), S(2), S(8)};
    for (SeqId k : kids) ASSERT_TRUE(one.fork(S(1), k));
    ASSERT_TRUE(many.fork_many(S(1), kids));
    for (SeqId s : {S(1), S(2), S(5), S(8), S(9)}) {
      auto a = one.get_sequence(s), b = many.get_sequence(s);
      ASSERT_TRUE(a && b) << s;
      EXPECT_EQ(a->block_ids, b->block_ids) << s;
      EXPECT_EQ(a->num_tokens, b->num_tokens) << s;
      EXPECT_EQ(a->token_runs, b->token_runs) << s;
      EXPECT_EQ(a->last_access, b->last_access) << s;
      EXPECT_EQ(a->access_count, b->access_count) << s;
      EXPECT_EQ(a->priority, b->priority) << s;
    }
    EXPECT_EQ(many.get_sequence(S(8))->priority, 7u) << "every child inherits the priority";
    EXPECT_LT(many.get_sequence(S(5))->last_access, many.get_sequence(S(2))->last_access);
    EXPECT_LT(many.get_sequence(S(2))->last_access, many.get_sequence(S(8))->last_access);
    const auto src_blocks = many.get_sequence(S(1))->block_ids;
    for (BlockId b : src_blocks) EXPECT_EQ(many.pool().ref_count(b), 4u);
    EXPECT_EQ(one.stats(), many.stats());
    EXPECT_EQ(many.stats().total_forks, 3u);
    EXPECT_EQ(one.used_block_count(), many.used_block_count());
    // The same victims in the same order (S9, then the source, then the children in dsts order).
    for (int i = 0; i < 5; ++i) EXPECT_EQ(one.evict().value(), many.evict().value());
    EXPECT_EQ(many.used_block_count(), 0u);
    EXPECT_VALID(one);
    EXPECT_VALID(many);
  }
}

TEST(Cache, st_fork_many_children_copy_on_write_and_free_releases) {
  PagedKvCache c(20, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 40));  // b0 b1 full, b2 8 of 16
  const auto shared = c.get_sequence(S(1))->block_ids;
  const SeqId kids[] = {S(2), S(3), S(4), S(5)};
  ASSERT_TRUE(c.fork_many(S(1), kids));
  EXPECT_EQ(c.used_block_count(), 3u);
  std::set<std::uint32_t> dsts;
  for (SeqId k : kids) {
    auto r = c.append(k, 1);
    ASSERT_TRUE(r);
    ASSERT_TRUE(r.value()) << k << ": the shared partial block must be copied";
    EXPECT_EQ(r.value()->src, shared[2]);
    dsts.insert(r.value()->dst.value);
  }
  EXPECT_EQ(dsts.size(), 4u);
  auto again = c.append(S(1), 1);  // the source is the last holder of b2 now: in place
  ASSERT_TRUE(again);
  EXPECT_FALSE(again.value());
  EXPECT_EQ(c.pool().ref_count(shared[0]), 5u);
  EXPECT_EQ(c.pool().ref_count(shared[2]), 1u);
  EXPECT_VALID(c);
}

TEST(Cache, st_fork_many_errors_change_nothing) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 10));
  ASSERT_TRUE(c.allocate(S(3), 10));
  const BlockId b1 = c.get_sequence(S(1))->block_ids[0];
  auto unchanged = [&] {
    EXPECT_EQ(c.num_sequences(), 2u);
    EXPECT_EQ(c.stats().total_forks, 0u);
    EXPECT_EQ(c.pool().ref_count(b1), 1u);
    for (std::uint64_t id : {2, 4, 5, 6}) EXPECT_FALSE(c.get_sequence(S(id))) << id;
    EXPECT_VALID(c);
  };
  const SeqId self[] = {S(2), S(1), S(4)};
  auto r = c.fork_many(S(1), self);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_operation);
  EXPECT_EQ(r.error().message(), "Invalid operation: Cannot fork sequence S1 onto itself");
  unchanged();
  const SeqId twice[] = {S(2), S(4), S(2)};
  r = c.fork_many(S(1), twice);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_EQ(r.error().message(),
            "Invalid argument: fork_many: destination S2 appears more than once");
  unchanged();
  // The same beyond the quadratic check (a sorted copy): the first repeated id in dsts order.
  std::vector<SeqId> wide;
  for (std::uint64_t i = 100; i < 140; ++i) wide.push_back(S(i));
  wide.push_back(S(120));
  wide.push_back(S(110));
  r = c.fork_many(S(1), wide);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "Invalid argument: fork_many: destination S110 appears more than once");
  unchanged();
  const SeqId exists[] = {S(2), S(4), S(3), S(5)};
  r = c.fork_many(S(1), exists);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_operation);
  EXPECT_EQ(r.error().message(), "Invalid operation: Destination sequence S3 already exists");
  unchanged();
  const SeqId fresh[] = {S(2), S(4)};
  r = c.fork_many(S(7), fresh);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::sequence_not_found);
  EXPECT_EQ(r.error().message(), "Sequence not found: S7");
  unchanged();
  // An existing dst is reported before a missing src, as fork does.
  r = c.fork_many(S(7), exists);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Invalid operation: Destination sequence S3 already exists");
  unchanged();
  // No destinations: src is checked, nothing changes.
  EXPECT_TRUE(c.fork_many(S(1), std::span<const SeqId>{}));
  r = c.fork_many(S(7), std::span<const SeqId>{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::sequence_not_found);
  unchanged();
}

TEST(Cache, st_fork_many_over_more_shards_than_held_inline) {
  PagedKvCache c(100, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 10));
  std::vector<SeqId> kids;
  for (std::uint64_t i = 0; i < 300; ++i) kids.push_back(S(1000 + i));  // every shard, some twice
  ASSERT_TRUE(c.fork_many(S(1), kids));
  EXPECT_EQ(c.num_sequences(), 301u);
  const auto src_blocks = c.get_sequence(S(1))->block_ids;
  for (BlockId b : src_blocks) EXPECT_EQ(c.pool().ref_count(b), 301u);
  EXPECT_VALID(c);
  const pkv::FreeManyOutcome out = c.free_many(kids);
  EXPECT_TRUE(out.all_freed());
  EXPECT_EQ(out.items, 300u);
  for (BlockId b : src_blocks) EXPECT_EQ(c.pool().ref_count(b), 1u);
  EXPECT_EQ(c.used_block_count(), 3u);
  EXPECT_VALID(c);
}

TEST(Cache, st_free_many_frees_in_order_and_reports_unknown_ids) {
  PagedKvCache c(20, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 10));
  const SeqId kids[] = {S(2), S(3)};
  ASSERT_TRUE(c.fork_many(S(1), kids));
  ASSERT_TRUE(c.allocate(S(4), 5));
  const SeqId ids[] = {S(9), S(2), S(1), S(2), S(3), S(10)};
  pkv::FreeManyOutcome out;
  out.errors.push_back({99, pkv::Error::invalid_argument("stale")});  // cleared by the call
  c.free_many(ids, out);
  EXPECT_EQ(out.items, 6u);
  ASSERT_EQ(out.errors.size(), 3u);
  EXPECT_FALSE(out.all_freed());
  const std::size_t failed[] = {0, 3, 5};
  for (std::size_t j = 0; j < 3; ++j) {
    EXPECT_EQ(out.errors[j].item, failed[j]);
    EXPECT_EQ(out.errors[j].error.code(), Errc::sequence_not_found);
  }
  EXPECT_EQ(out.errors[0].error.message(), "Sequence not found: S9");
  EXPECT_EQ(out.errors[1].error.message(), "Sequence not found: S2");  // freed by item 1
  EXPECT_EQ(out.item(5).error().message(), "Sequence not found: S10");
  EXPECT_TRUE(out.item(1));
  EXPECT_TRUE(out.item(4));
  EXPECT_EQ(c.num_sequences(), 1u);
  EXPECT_EQ(c.used_block_count(), 2u);  // S4's blocks only
  EXPECT_EQ(c.stats().total_frees, 3u);
  EXPECT_VALID(c);
  c.free_many(std::span<const SeqId>{}, out);
  EXPECT_EQ(out.items, 0u);
  EXPECT_TRUE(out.all_freed());
}

TEST(Cache, st_free_many_equals_frees_across_chunks) {
  // Families of forks spread over more than two chunks, with unknown ids and repeats between
  // them; one cache frees per call, the other with free_many: same survivors, counts, figures.
  PagedKvCache one(400, 4, 1, 1), many(400, 4, 1, 1);
  std::vector<SeqId> ids;
  for (PagedKvCache* c : {&one, &many}) {
    for (std::uint64_t f = 0; f < 10; ++f) {
      const SeqId root = S(1000 * (f + 1));
      ASSERT_TRUE(c->allocate(root, 9 + f));
      std::vector<SeqId> kids;
      for (std::uint64_t k = 1; k <= 6; ++k) kids.push_back(S(root.value + k));
      ASSERT_TRUE(c->fork_many(root, kids));
      for (SeqId k : kids) ASSERT_TRUE(c->append(k, k.value % 3));
    }
  }
  std::mt19937_64 rng(5);
  for (std::uint64_t f = 0; f < 10; ++f)
    for (std::uint64_t k = 0; k <= 6; ++k)
      if (rng() % 4 != 0) ids.push_back(S(1000 * (f + 1) + k));
  for (int i = 0; i < 12; ++i) ids.insert(ids.begin() + rng() % ids.size(), S(5 + rng() % 3));
  for (int i = 0; i < 6; ++i) ids.insert(ids.begin() + rng() % ids.size(), ids[rng() % ids.size()]);
  ASSERT_GT(ids.size(), 2 * PagedKvCache::kFreeManyChunk);
  std::vector<std::size_t> failed;
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (!one.free(ids[i])) failed.push_back(i);
  const pkv::FreeManyOutcome out = many.free_many(ids);
  ASSERT_EQ(out.errors.size(), failed.size());
  for (std::size_t j = 0; j < failed.size(); ++j) EXPECT_EQ(out.errors[j].item, failed[j]);
  std::vector<SeqId> left_one = one.sequence_ids(), left_many = many.sequence_ids();
  std::sort(left_one.begin(), left_one.end());
  std::sort(left_many.begin(), left_many.end());
  ASSERT_EQ(left_one, left_many);
  for (SeqId s : left_one) {
    const auto a = one.get_sequence(s)->block_ids, b = many.get_sequence(s)->block_ids;
    ASSERT_EQ(a, b);
    for (BlockId x : a) EXPECT_EQ(one.pool().ref_count(x), many.pool().ref_count(x));
  }
  EXPECT_EQ(one.used_block_count(), many.used_block_count());
  EXPECT_EQ(one.stats().total_frees, many.stats().total_frees);
  EXPECT_VALID(one);
  EXPECT_VALID(many);
}

TEST(Cache, st_free_many_releases_held_copy_sources) {
  PagedKvCache c(10, 4, 1, 1, PagedKvCache::Options{.hold_copy_sources = true});
  ASSERT_TRUE(c.allocate(S(1), 6));
  const SeqId kids[] = {S(2), S(3)};
  ASSERT_TRUE(c.fork_many(S(1), kids));
  for (SeqId k : kids) ASSERT_TRUE(c.append(k, 1).value());  // both copy and hold the source
  const BlockId src = c.get_sequence(S(1))->block_ids[1];
  EXPECT_EQ(c.pool().ref_count(src), 3u);
  const SeqId all[] = {S(1), S(2), S(3)};
  EXPECT_TRUE(c.free_many(all).all_freed());
  EXPECT_EQ(c.pool().ref_count(src), 0u);
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_VALID(c);
}

TEST(Cache, st_truncate_releases_blocks_left_empty) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 40));  // 3 blocks, the last 8 of 16
  ASSERT_TRUE(c.append(S(1), 1));
  const auto before = *c.get_sequence(S(1));
  EXPECT_EQ(c.truncate(S(1), 0).value(), 0u);
  EXPECT_EQ(c.truncate(S(1), 8).value(), 0u);  // 33 kept: still 3 blocks
  EXPECT_EQ(c.get_sequence(S(1))->num_blocks(), 3u);
  EXPECT_EQ(c.truncate(S(1), 1).value(), 1u);  // 32: block 2 holds nothing
  auto info = c.get_sequence(S(1));
  EXPECT_EQ(info->num_tokens, 32u);
  EXPECT_EQ(info->block_ids,
            std::vector<BlockId>(before.block_ids.begin(), before.block_ids.begin() + 2));
  EXPECT_EQ(info->token_runs, (std::vector<pkv::TokenRun>{{0, 0, 32}}));
  EXPECT_EQ(info->last_access, before.last_access) << "truncate is not an access";
  EXPECT_EQ(info->access_count, before.access_count);
  EXPECT_EQ(c.used_block_count(), 2u);
  EXPECT_EQ(c.pool().ref_count(before.block_ids[2]), 0u);
  EXPECT_EQ(c.stats().total_frees, 1u);
  // Appending after a truncate fills the kept last block, then takes fresh ones.
  auto r = c.append(S(1), 17);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r.value());
  EXPECT_EQ(c.get_sequence(S(1))->num_blocks(), 4u);
  EXPECT_EQ(c.truncate(S(1), 49).value(), 4u);  // everything: a sequence with no tokens
  info = c.get_sequence(S(1));
  EXPECT_EQ(info->num_tokens, 0u);
  EXPECT_EQ(info->num_blocks(), 0u);
  EXPECT_TRUE(info->token_runs.empty());
  EXPECT_EQ(c.used_block_count(), 0u);
  ASSERT_TRUE(c.append(S(1), 3));
  EXPECT_EQ(c.get_sequence(S(1))->num_blocks(), 1u);
  EXPECT_VALID(c);
}

TEST(Cache, st_truncate_errors_change_nothing) {
  PagedKvCache c(10, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 6));
  auto too_many = c.truncate(S(1), 7);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code(), Errc::invalid_argument);
  EXPECT_EQ(too_many.error().message(),
            "Invalid argument: truncate: cannot drop 7 tokens from S1, which holds 6");
  auto huge = c.truncate(S(1), kMax);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), Errc::invalid_argument);
  auto missing = c.truncate(S(2), 0);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::sequence_not_found);
  EXPECT_EQ(missing.error().message(), "Sequence not found: S2");
  EXPECT_EQ(c.get_sequence(S(1))->num_tokens, 6u);
  EXPECT_EQ(c.used_block_count(), 2u);
  EXPECT_VALID(c);
}

TEST(Cache, st_truncate_keeps_shared_blocks_shared_and_the_next_append_copies) {
  PagedKvCache c(20, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 8));  // two full blocks
  ASSERT_TRUE(c.fork(S(1), S(2)));
  const auto shared = c.get_sequence(S(1))->block_ids;
  EXPECT_EQ(c.truncate(S(1), 2).value(), 0u);  // block 1 now half full in S1's view
  EXPECT_EQ(c.get_sequence(S(1))->block_ids, shared) << "no copy at truncate";
  EXPECT_EQ(c.pool().ref_count(shared[1]), 2u);
  EXPECT_EQ(c.used_block_count(), 2u);
  EXPECT_VALID(c);
  // S2's tokens 6 and 7 sit where S1 would write next: S1 copies first.
  auto r = c.append(S(1), 1);
  ASSERT_TRUE(r);
  ASSERT_TRUE(r.value()) << "a shared block cut by truncate must be copied before writing";
  EXPECT_EQ(r.value()->src, shared[1]);
  EXPECT_EQ(c.pool().ref_count(shared[1]), 1u);
  EXPECT_EQ(c.get_sequence(S(2))->block_ids, shared);
  EXPECT_EQ(c.get_sequence(S(2))->num_tokens, 8u);
  // Dropping a whole shared block drops one reference; the sibling keeps it.
  ASSERT_TRUE(c.allocate(S(3), 10));  // blocks c0 c1 full, c2 2 of 4
  ASSERT_TRUE(c.fork(S(3), S(4)));
  const auto three = c.get_sequence(S(3))->block_ids;
  EXPECT_EQ(c.truncate(S(3), 4).value(), 1u);  // 6 kept: c2 leaves S3, c1 half full
  EXPECT_EQ(c.pool().ref_count(three[2]), 1u);
  EXPECT_EQ(c.get_sequence(S(4))->block_ids, three);
  auto w = c.append(S(3), 1);
  ASSERT_TRUE(w);
  ASSERT_TRUE(w.value());
  EXPECT_EQ(w.value()->src, three[1]);
  // Back into a shared block after append found its last block private (maybe_shared cleared).
  ASSERT_TRUE(c.allocate(S(6), 8));
  ASSERT_TRUE(c.fork(S(6), S(7)));
  auto grew = c.append(S(6), 1);  // a fresh private block: no copy
  ASSERT_TRUE(grew);
  EXPECT_FALSE(grew.value());
  const auto six = c.get_sequence(S(6))->block_ids;
  EXPECT_EQ(c.truncate(S(6), 3).value(), 1u);  // 6 kept: the shared block 1 is last, half full
  auto back = c.append(S(6), 1);
  ASSERT_TRUE(back);
  ASSERT_TRUE(back.value()) << "the shared block S7 fills must be copied";
  EXPECT_EQ(back.value()->src, six[1]);
  // A private sequence truncated and appended writes in place.
  ASSERT_TRUE(c.allocate(S(5), 6));
  EXPECT_EQ(c.truncate(S(5), 3).value(), 1u);
  auto p = c.append(S(5), 2);
  ASSERT_TRUE(p);
  EXPECT_FALSE(p.value());
  EXPECT_VALID(c);
}

TEST(Cache, st_truncate_after_streaming_llm_cuts_runs_from_the_end) {
  PagedKvCache c(20, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 30));
  // Keep tokens 0..1 (block 0, slots 0-1) and 25..29 (old blocks 6, 7 -> slots 5..9).
  ASSERT_EQ(c.apply_streaming_llm(S(1), 2, 5).value(), 23u);
  using pkv::TokenRun;
  ASSERT_EQ(c.get_sequence(S(1))->token_runs, (std::vector<TokenRun>{{0, 0, 2}, {2, 5, 5}}));
  ASSERT_EQ(c.get_sequence(S(1))->num_blocks(), 3u);
  EXPECT_EQ(c.truncate(S(1), 2).value(), 1u);  // window keeps 3: slots 5..7, block 2 goes
  auto info = c.get_sequence(S(1));
  EXPECT_EQ(info->token_runs, (std::vector<TokenRun>{{0, 0, 2}, {2, 5, 3}}));
  EXPECT_EQ(info->num_tokens, 5u);
  EXPECT_EQ(info->num_blocks(), 2u);
  EXPECT_EQ(c.truncate(S(1), 4).value(), 1u);  // the window run is gone, the sink keeps 1
  info = c.get_sequence(S(1));
  EXPECT_EQ(info->token_runs, (std::vector<TokenRun>{{0, 0, 1}}));
  EXPECT_EQ(info->num_blocks(), 1u);
  // The next append fills the slot after the last kept token.
  ASSERT_TRUE(c.append(S(1), 2));
  info = c.get_sequence(S(1));
  EXPECT_EQ(info->token_runs, (std::vector<TokenRun>{{0, 0, 3}}));
  EXPECT_EQ(c.used_block_count(), 1u);
  EXPECT_VALID(c);
}

TEST(Cache, st_truncate_reorders_longest_first) {
  PagedKvCache c(40, 4, 1, 1);
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::longest_first()));
  ASSERT_TRUE(c.allocate(S(1), 40));
  ASSERT_TRUE(c.allocate(S(2), 30));
  EXPECT_EQ(c.select_eviction_target(), S(1));
  ASSERT_TRUE(c.truncate(S(1), 20));
  EXPECT_EQ(c.select_eviction_target(), S(2));
  ASSERT_TRUE(c.pin(S(2)));
  ASSERT_TRUE(c.truncate(S(2), 25));  // pinned: changed, still out of the index
  EXPECT_EQ(c.select_eviction_target(), S(1));
  ASSERT_TRUE(c.unpin(S(2)));
  EXPECT_EQ(c.select_eviction_target(), S(1));
  EXPECT_VALID(c);
}

// ---- eviction
// --------------------------------------------------------------------------------------

TEST(Cache, st_lru_order_is_exact_without_sleeps) {
  PagedKvCache c(100, 4, 1, 1);
  for (std::uint64_t i = 1; i <= 5; ++i) ASSERT_TRUE(c.allocate(S(i), 4));
  EXPECT_EQ(c.select_eviction_target(), S(1));
  ASSERT_TRUE(c.append(S(1), 1));  // S1 is now the most recent
  EXPECT_EQ(c.select_eviction_target(), S(2));
  EXPECT_EQ(c.evict().value(), S(2));
  EXPECT_EQ(c.evict().value(), S(3));
  ASSERT_TRUE(c.append(S(4), 0));
  EXPECT_EQ(c.evict().value(), S(5));
  EXPECT_EQ(c.evict().value(), S(1));
  EXPECT_EQ(c.evict().value(), S(4));
  auto none = c.evict();
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), Errc::invalid_operation);
  EXPECT_EQ(none.error().message(), "Invalid operation: No sequences to evict");
  EXPECT_FALSE(c.select_eviction_target());
  EXPECT_EQ(c.stats().total_evictions, 5u);
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_VALID(c);
}

TEST(Cache, st_lfu_evicts_least_used_ties_to_lru) {
  PagedKvCache c(100, 4, 1, 1);
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::lfu()));
  for (std::uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(c.allocate(S(i), 1));
  ASSERT_TRUE(c.append(S(1), 1));
  ASSERT_TRUE(c.append(S(1), 1));
  ASSERT_TRUE(c.append(S(3), 1));
  // counts: S1=3, S2=1, S3=2
  EXPECT_EQ(c.select_eviction_target(), S(2));
  ASSERT_TRUE(c.append(S(2), 1));
  ASSERT_TRUE(c.append(S(2), 1));  // S2=3 (more recent than S1), S3=2
  EXPECT_EQ(c.evict().value(), S(3));
  EXPECT_EQ(c.evict().value(), S(1)) << "tie on count 3: the less recent goes first";
  EXPECT_EQ(c.evict().value(), S(2));
}

TEST(Cache, st_longest_first) {
  PagedKvCache c(100, 4, 1, 1);
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::longest_first()));
  ASSERT_TRUE(c.allocate(S(1), 10));
  ASSERT_TRUE(c.allocate(S(2), 30));
  ASSERT_TRUE(c.allocate(S(3), 20));
  ASSERT_TRUE(c.allocate(S(4), 30));
  EXPECT_EQ(c.evict().value(), S(2)) << "tie on length: the less recent goes first";
  EXPECT_EQ(c.evict().value(), S(4));
  ASSERT_TRUE(c.append(S(1), 15));  // 25 > 20
  EXPECT_EQ(c.evict().value(), S(1));
  EXPECT_EQ(c.evict().value(), S(3));
}

TEST(Cache, st_priority_with_set_priority_ties_to_lru) {
  PagedKvCache c(100, 4, 1, 1);
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::priority(3)));
  EXPECT_EQ(c.eviction_strategy(), EvictionStrategy::priority(3));
  for (std::uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(c.allocate(S(i), 4));
  ASSERT_TRUE(c.set_priority(S(1), 2));
  ASSERT_TRUE(c.set_priority(S(2), 1));
  ASSERT_TRUE(c.set_priority(S(3), 2));
  // S4 keeps priority 0.
  EXPECT_EQ(c.get_sequence(S(1))->priority, 2u);
  EXPECT_EQ(c.evict().value(), S(4));
  EXPECT_EQ(c.evict().value(), S(2));
  EXPECT_EQ(c.evict().value(), S(1)) << "tie on priority 2: the less recent goes first";
  EXPECT_EQ(c.evict().value(), S(3));
  auto missing = c.set_priority(S(1), 1);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::sequence_not_found);
}

TEST(Cache, st_fork_inherits_priority) {
  PagedKvCache c(100, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 4));
  ASSERT_TRUE(c.set_priority(S(1), 7));
  ASSERT_TRUE(c.fork(S(1), S(2)));
  EXPECT_EQ(c.get_sequence(S(2))->priority, 7u);
}

TEST(Cache, st_strategy_change_reorders_existing_sequences) {
  PagedKvCache c(100, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 4));
  ASSERT_TRUE(c.allocate(S(2), 40));
  EXPECT_EQ(c.select_eviction_target(), S(1));
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::longest_first()));
  EXPECT_EQ(c.select_eviction_target(), S(2));
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::streaming_llm(4, 16)));
  EXPECT_EQ(c.select_eviction_target(), S(1)) << "StreamingLLM evicts whole sequences by LRU";
  EXPECT_VALID(c);
}

TEST(Cache, st_bad_strategies_and_thresholds_are_rejected) {
  PagedKvCache c(10, 4, 1, 1);
  auto p0 = c.set_eviction_strategy(EvictionStrategy::priority(0));
  ASSERT_FALSE(p0);
  EXPECT_EQ(p0.error().code(), Errc::invalid_argument);
  auto s0 = c.set_eviction_strategy(EvictionStrategy::streaming_llm(0, 0));
  ASSERT_FALSE(s0);
  EXPECT_EQ(s0.error().code(), Errc::invalid_argument);
  auto s_over = c.set_eviction_strategy(EvictionStrategy::streaming_llm(kMax, 1));
  ASSERT_FALSE(s_over);
  EXPECT_EQ(c.eviction_strategy(), EvictionStrategy::lru());

  auto nan = c.set_eviction_threshold(std::nan(""));
  ASSERT_FALSE(nan);
  EXPECT_EQ(nan.error().code(), Errc::invalid_argument);
  EXPECT_DOUBLE_EQ(c.eviction_threshold(), 0.9);
  ASSERT_TRUE(c.set_eviction_threshold(1.5));
  EXPECT_DOUBLE_EQ(c.eviction_threshold(), 1.0);
  ASSERT_TRUE(c.set_eviction_threshold(-2));
  EXPECT_DOUBLE_EQ(c.eviction_threshold(), 0.0);

  for (double bad : {-0.1, 1.1, std::nan("")}) {
    auto r = c.evict_to_threshold(bad);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  }
}

TEST(Cache, st_needs_eviction_is_utilization_at_or_above_threshold) {
  PagedKvCache c(10, 1, 1, 1);
  ASSERT_TRUE(c.set_eviction_threshold(0.5));
  ASSERT_TRUE(c.allocate(S(1), 4));
  EXPECT_FALSE(c.needs_eviction());
  ASSERT_TRUE(c.allocate(S(2), 1));
  EXPECT_TRUE(c.needs_eviction());  // 0.5 >= 0.5
  ASSERT_TRUE(c.set_eviction_threshold(0.0));
  ASSERT_TRUE(c.free(S(1)));
  ASSERT_TRUE(c.free(S(2)));
  EXPECT_TRUE(c.needs_eviction());  // 0 >= 0
}

TEST(Cache, st_evict_to_threshold) {
  PagedKvCache c(10, 1, 1, 1);
  for (std::uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(c.allocate(S(i), 2));  // 80%
  auto r = c.evict_to_threshold(0.5);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.value(), (std::vector<SeqId>{S(1), S(2)}));  // 80 -> 60 -> 40
  EXPECT_DOUBLE_EQ(c.utilization(), 0.4);
  EXPECT_TRUE(c.evict_to_threshold(0.5).value().empty());
  auto all = c.evict_to_threshold(0.0);
  EXPECT_EQ(all.value(), (std::vector<SeqId>{S(3), S(4)}));
  EXPECT_EQ(c.num_sequences(), 0u);
  EXPECT_EQ(c.stats().total_evictions, 4u);
  // Sequences without blocks do not lower utilization; evict_to_threshold stops when none is left.
  ASSERT_TRUE(c.allocate(S(9), 0));
  EXPECT_TRUE(c.evict_to_threshold(0.0).value().empty());
  EXPECT_VALID(c);
}

// ---- StreamingLLM
// ----------------------------------------------------------------------------------

TEST(Cache, st_streaming_llm_keeps_sink_and_window) {
  PagedKvCache c(20, 16, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 160));  // 10 full blocks
  const auto before = c.get_sequence(S(1))->block_ids;
  auto r = c.apply_streaming_llm(S(1), 4, 16);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.value(), 140u);
  auto info = c.get_sequence(S(1));
  EXPECT_EQ(info->num_tokens, 20u);
  ASSERT_EQ(info->num_blocks(), 2u);
  EXPECT_EQ(info->block_ids[0], before[0]);  // sink block
  EXPECT_EQ(info->block_ids[1], before[9]);  // window block
  EXPECT_EQ(info->token_runs, (std::vector<pkv::TokenRun>{{0, 0, 4}, {4, 16, 16}}));
  EXPECT_EQ(c.used_block_count(), 2u);
  EXPECT_EQ(c.stats().total_frees, 8u);
  // The window block is full: the next append takes a new block and overwrites nothing.
  ASSERT_TRUE(c.append(S(1), 1));
  info = c.get_sequence(S(1));
  EXPECT_EQ(info->num_blocks(), 3u);
  EXPECT_EQ(info->slot_of(20), 32u);
  EXPECT_VALID(c);
}

TEST(Cache, st_streaming_llm_sink_multiple_of_block_size) {
  // The seed skipped one block too many here (sink / block_size + 1).
  PagedKvCache c(20, 16, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 100));  // 7 blocks, last holds 4
  auto r = c.apply_streaming_llm(S(1), 16, 10);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.value(), 74u);
  auto info = c.get_sequence(S(1));
  // Kept: tokens 0..15 (block 0), tokens 90..99 (blocks 5 and 6).
  EXPECT_EQ(info->num_blocks(), 3u);
  EXPECT_EQ(info->num_tokens, 26u);
  EXPECT_EQ(info->token_runs, (std::vector<pkv::TokenRun>{{0, 0, 16}, {16, 16 + 10, 10}}));
  // Last block holds tokens 96..99 at offsets 0..3: appends fill offsets 4..15 first.
  EXPECT_EQ(c.used_block_count(), 3u);
  ASSERT_TRUE(c.append(S(1), 12));
  EXPECT_EQ(c.used_block_count(), 3u);
  info = c.get_sequence(S(1));
  EXPECT_EQ(info->slot_of(25), 16u + 16u + 3u);  // last kept token still where it was
  EXPECT_EQ(info->slot_of(26), 16u + 16u + 4u);
  ASSERT_TRUE(c.append(S(1), 1));
  EXPECT_EQ(c.used_block_count(), 4u);
  EXPECT_VALID(c);
}

TEST(Cache, st_streaming_llm_edge_cases) {
  PagedKvCache c(20, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 10));
  auto zero = c.apply_streaming_llm(S(1), 0, 0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code(), Errc::invalid_argument);
  auto overflow = c.apply_streaming_llm(S(1), kMax, 2);
  ASSERT_FALSE(overflow);
  EXPECT_EQ(overflow.error().code(), Errc::invalid_argument);
  auto missing = c.apply_streaming_llm(S(5), 1, 1);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::sequence_not_found);
  // sink + window >= num_tokens: nothing to drop, nothing changes.
  auto same = c.apply_streaming_llm(S(1), 4, 6);
  ASSERT_TRUE(same);
  EXPECT_EQ(same.value(), 0u);
  EXPECT_EQ(c.apply_streaming_llm(S(1), 40, 60).value(), 0u);
  EXPECT_EQ(c.get_sequence(S(1))->num_tokens, 10u);
  EXPECT_EQ(c.used_block_count(), 3u);
  // Window only: keep the last 3 tokens (8, 9 in block 2; 7 in block 1).
  EXPECT_EQ(c.apply_streaming_llm(S(1), 0, 3).value(), 7u);
  EXPECT_EQ(c.get_sequence(S(1))->num_blocks(), 2u);
  // Sink only: keep token 0 of what is left.
  ASSERT_TRUE(c.allocate(S(2), 10));
  EXPECT_EQ(c.apply_streaming_llm(S(2), 1, 0).value(), 9u);
  auto info = c.get_sequence(S(2));
  EXPECT_EQ(info->num_blocks(), 1u);
  ASSERT_TRUE(c.append(S(2), 3));  // fills offsets 1..3 of the sink block
  EXPECT_EQ(c.get_sequence(S(2))->num_blocks(), 1u);
  EXPECT_VALID(c);
}

TEST(Cache, st_streaming_llm_twice_and_on_shared_blocks) {
  PagedKvCache c(40, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 30));
  ASSERT_TRUE(c.fork(S(1), S(2)));
  EXPECT_EQ(c.apply_streaming_llm(S(1), 2, 5).value(), 23u);
  EXPECT_EQ(c.used_block_count(), 8u) << "S2 still holds every block";
  ASSERT_TRUE(c.append(S(1), 9));
  EXPECT_EQ(c.apply_streaming_llm(S(1), 3, 4).value(), 9u);
  auto info = c.get_sequence(S(1));
  EXPECT_EQ(info->num_tokens, 7u);
  // Every kept token has a distinct slot inside the table.
  std::set<std::uint64_t> slots;
  for (std::uint64_t t = 0; t < info->num_tokens; ++t) {
    std::uint64_t s = info->slot_of(t);
    ASSERT_LT(s, info->num_blocks() * 4);
    slots.insert(s);
  }
  EXPECT_EQ(slots.size(), 7u);
  // Appending into a block still shared with S2 copies it first.
  ASSERT_TRUE(c.free(S(1)));
  ASSERT_TRUE(c.free(S(2)));
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_VALID(c);
}

TEST(Cache, st_streaming_then_append_into_shared_block_copies) {
  PagedKvCache c(40, 4, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 16));  // 4 full blocks
  ASSERT_TRUE(c.fork(S(1), S(2)));
  EXPECT_EQ(c.apply_streaming_llm(S(1), 0, 2).value(), 14u);  // keeps tokens 14, 15 (block 3)
  auto r = c.append(S(1), 1);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r.value()) << "block 3 is full in S1's view too: new block, no copy";
  ASSERT_TRUE(c.allocate(S(3), 6));
  ASSERT_TRUE(c.fork(S(3), S(4)));
  EXPECT_EQ(c.apply_streaming_llm(S(3), 0, 1).value(), 5u);  // keeps token 5 at offset 1, block 1
  auto w = c.append(S(3), 1);
  ASSERT_TRUE(w);
  EXPECT_TRUE(w.value()) << "offset 2 of a block S4 still holds: copy before writing";
  EXPECT_VALID(c);
}

// ---- misc
// ------------------------------------------------------------------------------------------

TEST(Cache, st_sequence_ids_and_get_sequence) {
  PagedKvCache c(10, 4, 1, 1);
  EXPECT_TRUE(c.sequence_ids().empty());
  for (std::uint64_t i : {5, 1, 9}) ASSERT_TRUE(c.allocate(S(i), 1));
  auto ids = c.sequence_ids();
  std::set<SeqId> got(ids.begin(), ids.end());
  EXPECT_EQ(got, (std::set<SeqId>{S(1), S(5), S(9)}));
  EXPECT_FALSE(c.get_sequence(S(2)));
  // A snapshot does not change under later calls.
  auto snap = *c.get_sequence(S(5));
  ASSERT_TRUE(c.append(S(5), 10));
  EXPECT_EQ(snap.num_tokens, 1u);
}

TEST(Cache, st_display_matches_seed) {
  PagedKvCache c(10, 16, 32, 128);
  ASSERT_TRUE(c.allocate(S(1), 40));
  ASSERT_TRUE(c.fork(S(1), S(2)));
  EXPECT_EQ(str(c),
            "PagedKvCache\n"
            "  Strategy: LRU (block_size=16)\n"
            "  Blocks: 3/10 (30.0% used)\n"
            "  Memory: 0.79 MB / 2.62 MB\n"
            "  Sequences: 2 active\n"
            "  Stats: allocs=3, frees=0, evictions=0, forks=1\n");
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::streaming_llm(4, 16)));
  EXPECT_NE(str(c).find("Strategy: StreamingLLM(sink=4, window=16) (block_size=16)"),
            std::string::npos);
}

TEST(Cache, st_peak_tracks_high_water_mark) {
  PagedKvCache c(10, 1, 1, 1);
  ASSERT_TRUE(c.allocate(S(1), 3));
  ASSERT_TRUE(c.allocate(S(2), 4));
  ASSERT_TRUE(c.free(S(1)));
  ASSERT_TRUE(c.append(S(2), 1));
  EXPECT_EQ(c.stats().peak_blocks_used, 7u);
  ASSERT_TRUE(c.allocate(S(3), 5));
  EXPECT_EQ(c.stats().peak_blocks_used, 10u);
}

TEST(Cache, st_custom_pool_options) {
  PagedKvCache::Options o;
  o.pool.magazine_size = 0;
  PagedKvCache c(8, 4, 1, 1, o);
  EXPECT_EQ(c.pool().magazine_size(), 0u);
  ASSERT_TRUE(c.allocate(S(1), 32));
  EXPECT_FALSE(c.allocate(S(2), 1));
  o.pool.magazine_size = 1000;
  EXPECT_FALSE(PagedKvCache::create(8, 4, 1, 1, o));
  EXPECT_THROW(PagedKvCache(8, 4, 1, 1, o), std::invalid_argument);
}

// ---- pinning and held copy sources ------------------------------------------------------------

TEST(Cache, st_pinned_sequences_are_never_victims) {
  PagedKvCache c(100, 4, 1, 1);
  for (std::uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(c.allocate(S(i), 4));
  ASSERT_TRUE(c.pin(S(1)));
  ASSERT_TRUE(c.pin(S(1)));  // pins nest
  EXPECT_EQ(c.select_eviction_target(), S(2));
  ASSERT_TRUE(c.append(S(1), 1));  // a pinned sequence works normally
  EXPECT_EQ(c.evict().value(), S(2));
  EXPECT_EQ(c.evict().value(), S(3));
  auto none = c.evict();
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().message(), "Invalid operation: No sequences to evict");
  EXPECT_TRUE(c.evict_to_threshold(0.0).value().empty());
  ASSERT_TRUE(c.unpin(S(1)));
  EXPECT_FALSE(c.select_eviction_target()) << "still pinned once";
  ASSERT_TRUE(c.unpin(S(1)));
  EXPECT_EQ(c.select_eviction_target(), S(1));
  auto extra = c.unpin(S(1));
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.error().code(), Errc::invalid_operation);
  EXPECT_EQ(extra.error().message(), "Invalid operation: Sequence S1 is not pinned");
  EXPECT_EQ(c.pin(S(9)).error().code(), Errc::sequence_not_found);
  EXPECT_EQ(c.unpin(S(9)).error().code(), Errc::sequence_not_found);
  // Pinned sequences can still be freed by their owner; strategy changes keep pins.
  ASSERT_TRUE(c.pin(S(1)));
  ASSERT_TRUE(c.set_eviction_strategy(EvictionStrategy::longest_first()));
  EXPECT_FALSE(c.select_eviction_target());
  EXPECT_VALID(c);
  ASSERT_TRUE(c.free(S(1)));
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_VALID(c);
}

TEST(Cache, st_held_copy_source_until_copy_done) {
  PagedKvCache::Options o;
  o.hold_copy_sources = true;
  PagedKvCache c(10, 4, 1, 1, o);
  ASSERT_TRUE(c.allocate(S(1), 2));
  ASSERT_TRUE(c.fork(S(1), S(2)));
  const BlockId x = c.get_sequence(S(1))->block_ids[0];
  auto r = c.append(S(2), 1);
  ASSERT_TRUE(r && r.value());
  EXPECT_EQ(r.value()->src, x);
  EXPECT_EQ(c.pool().ref_count(x), 2u) << "S2 still holds the source it must copy";
  EXPECT_VALID(c);
  // S1 frees meanwhile: the source survives for S2's copy.
  ASSERT_TRUE(c.free(S(1)));
  EXPECT_EQ(c.pool().ref_count(x), 1u);
  EXPECT_EQ(c.used_block_count(), 2u);
  EXPECT_EQ(c.copy_done(S(2)).value(), 1u);
  EXPECT_EQ(c.pool().ref_count(x), 0u);
  EXPECT_EQ(c.used_block_count(), 1u);
  EXPECT_EQ(c.copy_done(S(2)).value(), 0u);
  EXPECT_EQ(c.copy_done(S(7)).error().code(), Errc::sequence_not_found);
  EXPECT_VALID(c);
}

TEST(Cache, st_held_copy_source_makes_the_sibling_copy_too_and_free_releases_it) {
  PagedKvCache::Options o;
  o.hold_copy_sources = true;
  PagedKvCache c(10, 4, 1, 1, o);
  ASSERT_TRUE(c.allocate(S(1), 2));
  ASSERT_TRUE(c.fork(S(1), S(2)));
  ASSERT_TRUE(c.append(S(2), 1).value());
  // Before copy_done the source is still shared: S1 copies instead of writing under the copy.
  auto r1 = c.append(S(1), 1);
  ASSERT_TRUE(r1);
  EXPECT_TRUE(r1.value());
  EXPECT_VALID(c);
  // free and evict release held sources with the table.
  ASSERT_TRUE(c.free(S(2)));
  EXPECT_EQ(c.evict().value(), S(1));
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_VALID(c);
  // Without the option copy_done is a no-op.
  PagedKvCache plain(4, 4, 1, 1);
  ASSERT_TRUE(plain.allocate(S(1), 2));
  ASSERT_TRUE(plain.fork(S(1), S(2)));
  ASSERT_TRUE(plain.append(S(2), 1).value());
  EXPECT_EQ(plain.copy_done(S(2)).value(), 0u);
  EXPECT_FALSE(plain.append(S(1), 1).value()) << "vLLM semantics: the last holder writes in place";
}

}  // namespace
