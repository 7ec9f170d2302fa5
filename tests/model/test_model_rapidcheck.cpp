// Property-based state-machine tests: random programs over every public method of PagedKvCache,
// each call compared with the sequential ReferenceModel (tests/model/reference_model.hpp), the
// whole observable state and the KV arena checked after every step. Single-threaded (st_).
//
// RapidCheck shrinks a failing program to a minimal one. RC_PARAMS tunes the run, e.g.
//   RC_PARAMS="max_success=2000 max_size=200" build/tests/model/pkv-test-model-rc
//   RC_PARAMS="reproduce=..." (printed by a failure) replays one counterexample.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gen_ops.hpp"
#include "harness.hpp"
#include "pkv/paged_kv_cache.hpp"
#include "reference_model.hpp"

namespace {

using pkv::BlockId;
using pkv::CacheStats;
using pkv::EvictionStrategy;
using pkv::PagedKvCache;
using pkv::SeqId;
using pkv::model::CacheConfig;
using pkv::model::Harness;
using pkv::model::Op;
using pkv::model::OpKind;

// Runs `ops` on a fresh harness; "" or "step i: op: difference".
std::string run_program(const CacheConfig& cfg, const std::vector<Op>& ops) {
  Harness h(cfg);
  if (!h.init_error().empty()) return h.init_error();
  if (std::string e = h.check(); !e.empty()) return "initial state: " + e;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    std::string e = h.step(ops[i]);
    if (e.empty()) e = h.check();
    if (!e.empty())
      return "step " + std::to_string(i) + ": " + pkv::model::to_string(ops[i]) + ": " + e;
  }
  return {};
}

Op op(OpKind k, std::uint64_t seq = 0, std::uint64_t n = 0, std::uint64_t m = 0) {
  Op o;
  o.kind = k;
  o.seq = o.seq2 = seq;
  o.n = n;
  o.m = m;
  if (k == OpKind::fork) {
    o.seq2 = n;
    o.n = 0;
  }
  return o;
}

}  // namespace

// ---- the main property
// ---------------------------------------------------------------------------

RC_GTEST_PROP(ModelRc, st_random_programs_match_reference_model, ()) {
  const CacheConfig cfg = *pkv::model::gen::config();
  const std::vector<Op> ops = *rc::gen::container<std::vector<Op>>(pkv::model::gen::op());
  const std::string e = run_program(cfg, ops);
  if (!e.empty()) RC_FAIL(e);
}

// Long programs under LFU / LongestFirst / Priority reach states the mixed program rarely does.
RC_GTEST_PROP(ModelRc, st_random_programs_under_each_strategy, ()) {
  CacheConfig cfg = *pkv::model::gen::config();
  const auto kind = *rc::gen::inRange<std::uint8_t>(0, 5);
  std::vector<Op> ops;
  Op set;
  set.kind = OpKind::set_strategy;
  set.strategy = kind;
  set.n = 3;
  set.m = 2;
  ops.push_back(set);
  const std::vector<Op> rest = *rc::gen::container<std::vector<Op>>(pkv::model::gen::op());
  for (const Op& o : rest)
    if (o.kind != OpKind::set_strategy) ops.push_back(o);
  const std::string e = run_program(cfg, ops);
  if (!e.empty()) RC_FAIL(e);
}

// create() and the constructor accept exactly the configurations the header allows, with the same
// message, and size the memory as 2 x block_size x heads x head_dim x 2 bytes per block.
RC_GTEST_PROP(ModelRc, st_create_validates_configuration, ()) {
  using pkv::model::gen::kHuge;
  auto dim = [] {
    return rc::gen::weightedOneOf<std::uint64_t>(
        {{8, rc::gen::inRange<std::uint64_t>(0, 9)},
         {2, rc::gen::elementOf(std::vector<std::uint64_t>{
                 1u << 20, std::uint64_t{1} << 31, std::uint64_t{1} << 40, kHuge, kHuge / 3})}});
  };
  const std::uint64_t blocks = *rc::gen::weightedOneOf<std::uint64_t>(
      {{8, rc::gen::inRange<std::uint64_t>(0, 40)},
       {1, rc::gen::elementOf(std::vector<std::uint64_t>{0xFFFFFFFEull, 0xFFFFFFFFull, kHuge})}});
  const std::uint64_t bs = *dim();
  const std::uint64_t heads = *dim();
  const std::uint64_t hd = *dim();
  const auto mag = *rc::gen::elementOf(std::vector<std::uint32_t>{0, 1, 32, 64, 65, 1000});
  std::uint64_t bytes = 0;
  const auto expect = pkv::model::config_error(blocks, bs, heads, hd, mag, &bytes);
  // Never build a valid cache with billions of blocks: only the error path is cheap there.
  RC_PRE(expect.has_value() || blocks <= 64);
  PagedKvCache::Options o;
  o.pool.magazine_size = mag;
  auto r = PagedKvCache::create(blocks, bs, heads, hd, o);
  RC_ASSERT(r.has_value() == !expect.has_value());
  if (!r) {
    RC_ASSERT(r.error().code() == pkv::Errc::invalid_argument);
    RC_ASSERT(r.error().message().rfind("Invalid argument: ", 0) == 0);
    std::string thrown;
    try {
      PagedKvCache c(blocks, bs, heads, hd, o);
    } catch (const std::invalid_argument& ex) {
      thrown = ex.what();
    }
    // The constructor throws "with the same message".
    RC_ASSERT(thrown == r.error().message());
    return;
  }
  RC_ASSERT(r.value()->block_memory_bytes() == bytes);
  RC_ASSERT(r.value()->total_memory_bytes() == bytes * blocks);
  RC_ASSERT(r.value()->free_block_count() == blocks);
  RC_ASSERT(r.value()->validate_unsafe().empty());
}

// ---- the generator reaches every interesting outcome
// ---------------------------------------------

TEST(ModelRc, st_generator_reaches_every_outcome) {
  pkv::model::Coverage total;
  const auto gen_cfg = pkv::model::gen::config();
  const auto gen_ops = rc::gen::container<std::vector<Op>>(pkv::model::gen::op());
  // 250 programs (150 before the op mix grew by nine kinds: the bounds below stay as they were).
  std::uint64_t reclaimed = 0;
  for (std::uint64_t seed = 1; seed <= 250; ++seed) {
    rc::Random rnd(seed);
    const rc::Random other = rnd.split();
    const CacheConfig cfg = gen_cfg(rnd, 50).value();
    const std::vector<Op> ops = gen_ops(other, 100).value();
    Harness h(cfg);
    for (const Op& o : ops) {
      std::string e = h.step(o);
      if (e.empty()) e = h.check();
      ASSERT_EQ(e, "") << "seed " << seed << ": " << o;
    }
    const pkv::model::Coverage& c = h.coverage();
    total.steps += c.steps;
    total.copies += c.copies;
    total.oom += c.oom;
    total.not_found += c.not_found;
    total.invalid_operation += c.invalid_operation;
    total.invalid_argument += c.invalid_argument;
    total.evicted += c.evicted;
    total.streamed += c.streamed;
    total.forks += c.forks;
    total.shared_appends += c.shared_appends;
    total.copies_done += c.copies_done;
    total.truncated += c.truncated;
    total.forked_many += c.forked_many;
    total.freed_many_mixed += c.freed_many_mixed;
    total.prefix_hits += c.prefix_hits;
    total.published += c.published;
    total.token_batch_items += c.token_batch_items;
    reclaimed += h.model().prefix_stats().reclaimed;  // equal to the cache's (check())
  }
  EXPECT_GT(total.copies, 20u);
  EXPECT_GT(total.oom, 20u);
  EXPECT_GT(total.not_found, 20u);
  EXPECT_GT(total.invalid_operation, 20u);
  EXPECT_GT(total.invalid_argument, 5u);
  EXPECT_GT(total.evicted, 20u);
  EXPECT_GT(total.streamed, 20u);
  EXPECT_GT(total.forks, 20u);
  EXPECT_GT(total.copies_done, 0u);
  EXPECT_GT(total.truncated, 20u);
  EXPECT_GT(total.prefix_hits, 20u);
  EXPECT_GT(total.published, 20u);
  EXPECT_GT(total.token_batch_items, 20u);  // append_batch(tokens) items on publishing sequences
  EXPECT_GT(reclaimed, 20u);
  EXPECT_GT(total.forked_many, 8u);  // needs 2+ of the 3 other ids free
  EXPECT_GT(total.freed_many_mixed, 20u);
  std::printf(
      "coverage over %llu steps: copies=%llu oom=%llu not_found=%llu invalid_op=%llu "
      "invalid_arg=%llu evicted=%llu streamed=%llu forks=%llu shared_appends=%llu "
      "copy_sources_released=%llu truncated=%llu fork_many(>=2)=%llu free_many(mixed)=%llu "
      "prefix_hits=%llu published=%llu reclaimed=%llu token_batch_items=%llu\n",
      static_cast<unsigned long long>(total.steps), static_cast<unsigned long long>(total.copies),
      static_cast<unsigned long long>(total.oom), static_cast<unsigned long long>(total.not_found),
      static_cast<unsigned long long>(total.invalid_operation),
      static_cast<unsigned long long>(total.invalid_argument),
      static_cast<unsigned long long>(total.evicted),
      static_cast<unsigned long long>(total.streamed), static_cast<unsigned long long>(total.forks),
      static_cast<unsigned long long>(total.shared_appends),
      static_cast<unsigned long long>(total.copies_done),
      static_cast<unsigned long long>(total.truncated),
      static_cast<unsigned long long>(total.forked_many),
      static_cast<unsigned long long>(total.freed_many_mixed),
      static_cast<unsigned long long>(total.prefix_hits),
      static_cast<unsigned long long>(total.published), static_cast<unsigned long long>(reclaimed),
      static_cast<unsigned long long>(total.token_batch_items));
}

// ---- fixed scenarios: the seed's defects, through the same harness ------------------------------

// Seed defect 1: after fork, append into the shared partly filled block must copy, on either side.
TEST(ModelScenario, st_cow_on_both_sides_keeps_kv_data) {
  CacheConfig cfg{8, 4, 1, 1, 32};
  const std::vector<Op> ops = {op(OpKind::allocate, 1, 6), op(OpKind::fork, 1, 2),
                               op(OpKind::append, 1, 1),   op(OpKind::append, 2, 3),
                               op(OpKind::append, 1, 2),   op(OpKind::fork, 2, 3),
                               op(OpKind::append, 3, 0),   op(OpKind::append, 3, 5),
                               op(OpKind::free, 2),        op(OpKind::append, 3, 1)};
  Harness h(cfg);
  for (const Op& o : ops) {
    std::string e = h.step(o);
    if (e.empty()) e = h.check();
    ASSERT_EQ(e, "") << o;
  }
  EXPECT_EQ(h.coverage().copies, 2u);  // S1 after the fork, S3 after its fork
}

// Seed defect 2: StreamingLLM with sink a multiple of block_size, window 0, sink 0, and appends
// into the free slots of the last kept block afterwards; also on a forked (shared) sequence.
TEST(ModelScenario, st_streaming_keeps_exact_blocks_and_appends_after_last_kept_token) {
  for (std::uint64_t bs = 1; bs <= 4; ++bs) {
    for (std::uint64_t sink = 0; sink <= 5; ++sink) {
      for (std::uint64_t window = 0; window <= 5; ++window) {
        if (sink + window == 0) continue;
        CacheConfig cfg{16, bs, 1, 1, 4};
        const std::vector<Op> ops = {op(OpKind::allocate, 1, 11),
                                     op(OpKind::fork, 1, 2),
                                     op(OpKind::streaming, 1, sink, window),
                                     op(OpKind::append, 1, 3),
                                     op(OpKind::streaming, 1, sink, window),
                                     op(OpKind::append, 1, bs + 1),
                                     op(OpKind::append, 2, 2),
                                     op(OpKind::streaming, 2, window, sink),
                                     op(OpKind::free, 1),
                                     op(OpKind::append, 2, 1)};
        const std::string e = run_program(cfg, ops);
        ASSERT_EQ(e, "") << "bs=" << bs << " sink=" << sink << " window=" << window;
      }
    }
  }
}

// Seed defect 4 and 5: exact recency and settable priority decide the victim.
TEST(ModelScenario, st_victim_order_under_every_strategy) {
  for (std::uint8_t kind = 0; kind < 5; ++kind) {
    CacheConfig cfg{16, 2, 1, 1, 32};
    Op set;
    set.kind = OpKind::set_strategy;
    set.strategy = kind;
    set.n = 3;
    set.m = 1;
    Op prio;
    prio.kind = OpKind::set_priority;
    prio.seq = 3;
    prio.priority = 0;
    Op prio2 = prio;
    prio2.seq = 1;
    prio2.priority = 2;
    const std::vector<Op> ops = {set,
                                 op(OpKind::allocate, 1, 3),
                                 op(OpKind::allocate, 2, 5),
                                 op(OpKind::allocate, 3, 1),
                                 op(OpKind::append, 1, 0),
                                 op(OpKind::append, 3, 2),
                                 prio,
                                 prio2,
                                 op(OpKind::select_target),
                                 op(OpKind::evict),
                                 op(OpKind::allocate, 4, 2),
                                 op(OpKind::fork, 4, 5),
                                 op(OpKind::select_target),
                                 op(OpKind::evict),
                                 op(OpKind::evict),
                                 op(OpKind::evict),
                                 op(OpKind::evict),
                                 op(OpKind::evict)};
    const std::string e = run_program(cfg, ops);
    ASSERT_EQ(e, "") << "strategy " << int(kind);
  }
}

// Edge cases the header defines: empty sequences, append 0, overflow, bad arguments.
TEST(ModelScenario, st_defined_edge_cases) {
  constexpr std::uint64_t kHuge = std::numeric_limits<std::size_t>::max();
  CacheConfig cfg{4, 3, 1, 1, 0};
  Op thr;
  thr.kind = OpKind::evict_to_threshold;
  thr.x = std::numeric_limits<double>::quiet_NaN();
  Op thr2 = thr;
  thr2.x = 1.5;
  Op set_thr;
  set_thr.kind = OpKind::set_threshold;
  set_thr.x = std::numeric_limits<double>::quiet_NaN();
  Op set_thr2 = set_thr;
  set_thr2.x = -3;
  Op bad_prio;
  bad_prio.kind = OpKind::set_strategy;
  bad_prio.strategy = 3;
  bad_prio.n = 0;
  Op bad_stream = bad_prio;
  bad_stream.strategy = 4;
  bad_stream.n = 0;
  bad_stream.m = 0;
  Op overflow_stream = bad_stream;
  overflow_stream.n = kHuge;
  overflow_stream.m = 1;
  const std::vector<Op> ops = {op(OpKind::allocate, 1, 0),
                               op(OpKind::append, 1, 0),
                               op(OpKind::fork, 1, 1),
                               op(OpKind::fork, 1, 2),
                               op(OpKind::fork, 3, 2),
                               op(OpKind::fork, 3, 4),
                               op(OpKind::allocate, 1, 1),
                               op(OpKind::allocate, 3, 13),
                               op(OpKind::allocate, 3, kHuge),
                               op(OpKind::append, 1, kHuge),
                               op(OpKind::append, 1, 7),
                               op(OpKind::append, 1, kHuge),
                               op(OpKind::append, 1, kHuge - 6),
                               op(OpKind::append, 2, 6),
                               op(OpKind::streaming, 1, 0, 0),
                               op(OpKind::streaming, 1, kHuge, 1),
                               op(OpKind::streaming, 9, 1, 1),
                               op(OpKind::streaming, 1, 7, 0),
                               op(OpKind::streaming, 1, 1, 1),
                               op(OpKind::append, 1, 5),
                               op(OpKind::free, 9),
                               op(OpKind::append, 9, 1),
                               thr,
                               thr2,
                               set_thr,
                               set_thr2,
                               bad_prio,
                               bad_stream,
                               overflow_stream,
                               op(OpKind::display),
                               op(OpKind::evict),
                               op(OpKind::evict),
                               op(OpKind::evict),
                               op(OpKind::select_target)};
  const std::string e = run_program(cfg, ops);
  ASSERT_EQ(e, "");
}

// Empty sequences (allocate(s, 0)) have no token runs; the header's "one run {0, 0, num_tokens}"
// is read as "no run" when num_tokens == 0. Pinned here so a change is noticed.
TEST(ModelScenario, st_empty_sequence_has_no_runs) {
  PagedKvCache c(4, 2, 1, 1);
  ASSERT_TRUE(c.allocate(SeqId{1}, 0));
  auto info = c.get_sequence(SeqId{1});
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->num_tokens, 0u);
  EXPECT_TRUE(info->block_ids.empty());
  EXPECT_TRUE(info->token_runs.empty());
}

// Found by RapidCheck (shrunk; it failed about once in a few runs of 5000 programs): with
// hold_copy_sources, an append with token ids into a truncated, findable last block copies it
// and keeps the old copy as a held source; when the sequence goes, pkv releases that source
// first and then the table tail first (Shard::take_locked), so the deepest cached block is the
// first reclaimed. The model released the source last and reclaimed a parent instead.
TEST(ModelScenario, st_held_copy_source_is_released_before_the_table) {
  CacheConfig cfg{5, 2, 1, 1, 1, true, 1};
  const std::vector<Op> ops = {op(OpKind::allocate_tokens, 1, 9, 0),
                               op(OpKind::commit, 1, 8),
                               op(OpKind::truncate, 1, 2),
                               op(OpKind::append_tokens, 1, 1, 0),  // copies B3, holds it
                               op(OpKind::evict),                   // B3 first, then B2, B1, B0
                               op(OpKind::allocate, 2, 3),          // reclaims B3, not B2
                               op(OpKind::allocate_tokens, 3, 7, 0)};
  const std::string e = run_program(cfg, ops);
  ASSERT_EQ(e, "");
}

TEST(ModelScenario, st_allocate_after_truncated_shared_prefix_sees_every_reclaimable_block) {
  // Found by st_random_programs_match_reference_model (CI run at 3dd3833): the allocate at the
  // end refused 3 blocks with "2 available" where the model had them.
  CacheConfig cfg{10, 1, 1, 1, 64, false, 1};
  auto batch = [](std::uint64_t a, std::uint64_t b) {
    Op o = op(OpKind::append_batch_tokens, a, 0, 0);
    o.seq2 = b;
    return o;
  };
  const std::vector<Op> ops = {op(OpKind::allocate_tokens, 2, 2, 0),
                               op(OpKind::allocate_tokens, 1, 4, 0),
                               op(OpKind::append_tokens, 1, 0, 0),
                               op(OpKind::truncate, 1, 4),
                               op(OpKind::allocate_tokens, 2627, 3, 0),
                               batch(2627, 2),
                               batch(2, 7745),
                               op(OpKind::evict),
                               op(OpKind::truncate, 2, 3),
                               op(OpKind::allocate_tokens, 1, 7, 0)};
  const std::string e = run_program(cfg, ops);
  ASSERT_EQ(e, "");
}
