// tests/support/test_support.cpp — the test-support pieces on their own: the arena's addressing
// and CopyOp copy (against a real cache's block tables), and the gate's exclusion.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "pkv/paged_kv_cache.hpp"
#include "support/gate.hpp"
#include "support/kv_arena.hpp"

namespace pkv::test_support {
namespace {

TEST(KvArena, st_cells_are_distinct_and_start_empty) {
  KvArena<std::uint64_t> a(3, 4);
  EXPECT_EQ(a.num_blocks(), 3u);
  EXPECT_EQ(a.block_size(), 4u);
  std::uint64_t n = 0;
  for (std::uint32_t b = 0; b < 3; ++b)
    for (std::uint64_t o = 0; o < 4; ++o) {
      EXPECT_EQ(a.cell(BlockId{b}, o), 0u);
      a.cell(BlockId{b}, o) = ++n;
    }
  n = 0;
  for (std::uint32_t b = 0; b < 3; ++b)
    for (std::uint64_t o = 0; o < 4; ++o) EXPECT_EQ(a.cell(BlockId{b}, o), ++n);
}

TEST(KvArena, st_token_follows_the_block_table_and_streaming_runs) {
  PagedKvCache cache(8, 4, 1, 1);
  ASSERT_TRUE(cache.allocate(SeqId{1}, 10));
  KvArena<std::uint64_t> a(8, 4);
  SequenceInfo info = cache.get_sequence(SeqId{1}).value();
  for (std::uint64_t i = 0; i < 10; ++i) *a.token(info, i) = 100 + i;
  for (std::uint64_t i = 0; i < 10; ++i) {
    const BlockId b = info.block_ids[i / 4];
    EXPECT_EQ(a.cell(b, i % 4), 100 + i) << i;
  }
  // After StreamingLLM the kept tokens move to other slots; token() follows slot_of.
  ASSERT_EQ(cache.apply_streaming_llm(SeqId{1}, 1, 4).value(), 5u);
  info = cache.get_sequence(SeqId{1}).value();
  ASSERT_EQ(info.num_tokens, 5u);
  EXPECT_EQ(*a.token(info, 0), 100u);  // the sink
  for (std::uint64_t i = 1; i < 5; ++i) EXPECT_EQ(*a.token(info, i), 100 + 5 + i) << i;
}

TEST(KvArena, st_token_beyond_the_table_is_null) {
  KvArena<std::uint64_t> a(4, 2);
  SequenceInfo info;
  info.num_tokens = 3;
  info.block_ids = {BlockId{1}};  // room for 2 tokens only
  info.token_runs = {TokenRun{0, 0, 3}};
  EXPECT_NE(a.token(info, 1), nullptr);
  EXPECT_EQ(a.token(info, 2), nullptr);
}

TEST(KvArena, st_copy_copies_the_first_slots_only) {
  KvArena<std::uint64_t> a(2, 4);
  for (std::uint64_t o = 0; o < 4; ++o) a.cell(BlockId{0}, o) = 10 + o;
  a.copy(CopyOp{BlockId{0}, BlockId{1}}, 2);
  EXPECT_EQ(a.cell(BlockId{1}, 0), 10u);
  EXPECT_EQ(a.cell(BlockId{1}, 1), 11u);
  EXPECT_EQ(a.cell(BlockId{1}, 2), 0u);
  EXPECT_EQ(a.cell(BlockId{1}, 3), 0u);
  a.copy(CopyOp{BlockId{0}, BlockId{1}});
  for (std::uint64_t o = 0; o < 4; ++o) EXPECT_EQ(a.cell(BlockId{1}, o), 10 + o);
  EXPECT_EQ(a.cell(BlockId{0}, 3), 13u);  // the source is left alone
}

TEST(KvArena, st_copy_performs_a_real_copy_on_write) {
  // The CopyOp append returns after fork, performed on the arena, keeps both sequences' tokens.
  PagedKvCache cache(8, 4, 1, 1);
  ASSERT_TRUE(cache.allocate(SeqId{1}, 2));
  KvArena<std::uint64_t> a(8, 4);
  const SequenceInfo root = cache.get_sequence(SeqId{1}).value();
  *a.token(root, 0) = 1;
  *a.token(root, 1) = 2;
  ASSERT_TRUE(cache.fork(SeqId{1}, SeqId{2}));
  auto r = cache.append(SeqId{2}, 1);
  ASSERT_TRUE(r && r.value().has_value());
  a.copy(*r.value());
  const SequenceInfo child = cache.get_sequence(SeqId{2}).value();
  *a.token(child, 2) = 30;
  ASSERT_TRUE(cache.append(SeqId{1}, 1));
  const SequenceInfo parent = cache.get_sequence(SeqId{1}).value();
  *a.token(parent, 2) = 20;
  EXPECT_EQ(*a.token(child, 0), 1u);
  EXPECT_EQ(*a.token(child, 1), 2u);
  EXPECT_EQ(*a.token(child, 2), 30u);
  EXPECT_EQ(*a.token(parent, 2), 20u);
}

TEST(Gate, mt_exclusive_excludes_shared_holders) {
  Gate gate;
  std::atomic<int> shared_in{0};
  std::atomic<bool> overlap{false};
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t)
    writers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        auto g = share_if(gate, true);
        shared_in.fetch_add(1, std::memory_order_relaxed);
        shared_in.fetch_sub(1, std::memory_order_relaxed);
      }
    });
  int exclusive_rounds = 0;
  for (; exclusive_rounds < 2000; ++exclusive_rounds) {
    auto g = exclude_if(gate, true);  // must get in although writers keep coming
    if (shared_in.load(std::memory_order_relaxed) != 0) overlap = true;
  }
  stop = true;
  for (auto& th : writers) th.join();
  EXPECT_FALSE(overlap.load());
  EXPECT_EQ(exclusive_rounds, 2000);
}

TEST(Gate, st_off_holds_nothing) {
  Gate gate;
  auto s = share_if(gate, false);
  EXPECT_FALSE(s.owns_lock());
  auto x = exclude_if(gate, true);  // would deadlock if the shared lock were held
  EXPECT_TRUE(x.owns_lock());
  x.unlock();
  auto s2 = share_if(gate, true);
  EXPECT_TRUE(s2.owns_lock());
  EXPECT_FALSE(exclude_if(gate, false).owns_lock());
}

}  // namespace
}  // namespace pkv::test_support
