// BlockPool, single-threaded: every method and error path, with and without magazines.
#include <gtest/gtest.h>

#include <algorithm>
#include <pkv/pkv.hpp>
#include <set>
#include <stdexcept>

namespace {

using pkv::BlockId;
using pkv::BlockPool;
using pkv::Errc;

class BlockPoolSt : public ::testing::TestWithParam<std::uint32_t> {
 protected:
  BlockPool::Options opts() const { return BlockPool::Options{GetParam()}; }
};

TEST(BlockPool, st_create_rejects_bad_config) {
  auto zero = BlockPool::create(0);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code(), Errc::invalid_argument);
  EXPECT_EQ(zero.error().message(), "Invalid argument: num_blocks must be at least 1");
  auto huge = BlockPool::create(std::size_t{1} << 33);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), Errc::invalid_argument);
  auto mag = BlockPool::create(10, BlockPool::Options{BlockPool::kMaxMagazine + 1});
  ASSERT_FALSE(mag);
  EXPECT_EQ(mag.error().code(), Errc::invalid_argument);
  for (std::uint32_t bad : {0u, 1u, BlockPool::kMaxSlotMagazines + 1}) {
    auto slots = BlockPool::create(10, BlockPool::Options{.slot_magazines = bad});
    ASSERT_FALSE(slots);
    EXPECT_EQ(slots.error().code(), Errc::invalid_argument);
  }
  EXPECT_THROW(BlockPool(0), std::invalid_argument);
  auto ok = BlockPool::create(10);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok.value()->capacity(), 10u);
  EXPECT_EQ(ok.value()->magazine_size(), 32u);
}

TEST_P(BlockPoolSt, st_fresh_pool_hands_out_in_order) {
  BlockPool pool(8, opts());
  EXPECT_EQ(pool.free_count(), 8u);
  EXPECT_EQ(pool.used_count(), 0u);
  for (std::uint32_t i = 0; i < 3; ++i) {
    auto b = pool.acquire();
    ASSERT_TRUE(b);
    EXPECT_EQ(b.value(), BlockId{i});
    EXPECT_EQ(pool.ref_count(b.value()), 1u);
  }
  EXPECT_EQ(pool.free_count(), 5u);
  EXPECT_EQ(pool.used_count(), 3u);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolSt, st_capacity_then_oom_changes_nothing) {
  BlockPool pool(10, opts());
  std::vector<BlockId> got;
  auto too_many = pool.acquire(11, got);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().message(), "Out of memory: requested 11 blocks, 10 available");
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(pool.free_count(), 10u);

  ASSERT_TRUE(pool.acquire(7, got));
  ASSERT_EQ(got.size(), 7u);
  auto three_more = pool.acquire(4, got);
  ASSERT_FALSE(three_more);
  EXPECT_EQ(three_more.error().message(), "Out of memory: requested 4 blocks, 3 available");
  EXPECT_EQ(got.size(), 7u);
  EXPECT_EQ(pool.free_count(), 3u);
  ASSERT_TRUE(pool.acquire(3, got));
  auto one = pool.acquire();
  ASSERT_FALSE(one);
  EXPECT_EQ(one.error().message(), "Out of memory: requested 1 blocks, 0 available");
  std::set<BlockId> distinct(got.begin(), got.end());
  EXPECT_EQ(distinct.size(), 10u);
  EXPECT_EQ(pool.validate_unsafe(), "");
  ASSERT_TRUE(pool.acquire(0, got));  // k == 0: success, nothing taken
  EXPECT_EQ(got.size(), 10u);
}

TEST_P(BlockPoolSt, st_retain_release_counts) {
  BlockPool pool(4, opts());
  BlockId b = pool.acquire().value();
  ASSERT_TRUE(pool.retain(b));
  ASSERT_TRUE(pool.retain(b));
  EXPECT_EQ(pool.ref_count(b), 3u);
  EXPECT_EQ(pool.release(b).value(), false);
  EXPECT_EQ(pool.release(b).value(), false);
  EXPECT_EQ(pool.free_count(), 3u);
  EXPECT_EQ(pool.release(b).value(), true);  // last reference: back on the free list
  EXPECT_EQ(pool.free_count(), 4u);
  EXPECT_EQ(pool.ref_count(b), 0u);
  EXPECT_EQ(pool.total_acquired(), 1u);
  EXPECT_EQ(pool.total_released(), 1u);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolSt, st_bad_ids_are_errors_and_change_nothing) {
  BlockPool pool(4, opts());
  BlockId b = pool.acquire().value();
  // Double release: the second finds count 0.
  ASSERT_TRUE(pool.release(b));
  auto twice = pool.release(b);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code(), Errc::block_not_found);
  EXPECT_EQ(twice.error().message(), "Block not found: B0");
  // Out of range.
  EXPECT_EQ(pool.release(BlockId{4}).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.retain(BlockId{99}).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.ref_count(BlockId{99}), 0u);
  // Retaining a free block would resurrect it.
  EXPECT_EQ(pool.retain(BlockId{1}).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.free_count(), 4u);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolSt, st_span_retain_and_release) {
  BlockPool pool(8, opts());
  std::vector<BlockId> ids;
  ASSERT_TRUE(pool.acquire(5, ids));
  ASSERT_TRUE(pool.retain(std::span<const BlockId>(ids)));
  EXPECT_EQ(pool.release(std::span<const BlockId>(ids)).value(), 0u);  // all still at 1
  EXPECT_EQ(pool.free_count(), 3u);
  // A span with a bad id: nothing is retained.
  std::vector<BlockId> with_free = {ids[0], BlockId{7}};
  EXPECT_EQ(pool.retain(std::span<const BlockId>(with_free)).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.ref_count(ids[0]), 1u);
  // Release reports the bad id after releasing the others.
  std::vector<BlockId> mixed = {ids[0], ids[1], BlockId{100}};
  auto r = pool.release(std::span<const BlockId>(mixed));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Block not found: B100");
  EXPECT_EQ(pool.free_count(), 5u);
  EXPECT_EQ(pool.release(std::span<const BlockId>(ids.data() + 2, 3)).value(), 3u);
  EXPECT_EQ(pool.free_count(), 8u);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolSt, st_retain_release_n_in_one_update) {
  BlockPool pool(4, opts());
  BlockId b = pool.acquire().value();
  ASSERT_TRUE(pool.retain(b, 5));
  EXPECT_EQ(pool.ref_count(b), 6u);
  EXPECT_EQ(pool.release(b, 4).value(), false);
  EXPECT_EQ(pool.ref_count(b), 2u);
  // More than held: refused, nothing changes.
  auto over = pool.release(b, 3);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code(), Errc::invalid_operation);
  EXPECT_EQ(over.error().message(),
            "Invalid operation: release of 3 references of B0, which holds fewer");
  EXPECT_EQ(pool.ref_count(b), 2u);
  // n == 0 checks the id only.
  ASSERT_TRUE(pool.retain(b, 0));
  EXPECT_EQ(pool.release(b, 0).value(), false);
  EXPECT_EQ(pool.ref_count(b), 2u);
  EXPECT_EQ(pool.free_count(), 3u);
  EXPECT_EQ(pool.release(b, 2).value(), true);  // the last two: free again
  EXPECT_EQ(pool.free_count(), 4u);
  // Free or out-of-range blocks: block_not_found, for any n.
  EXPECT_EQ(pool.retain(b, 3).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.release(b, 3).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.release(b, 0).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.retain(b, 0).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.retain(BlockId{4}, 2).error().code(), Errc::block_not_found);
  EXPECT_EQ(pool.release(BlockId{4}, 2).error().code(), Errc::block_not_found);
  // Overflow of the 32-bit count: refused, nothing changes.
  BlockId c = pool.acquire().value();
  ASSERT_TRUE(pool.retain(c, 0xFFFFFFFEu));
  EXPECT_EQ(pool.ref_count(c), 0xFFFFFFFFu);
  EXPECT_EQ(pool.retain(c, 1).error().code(), Errc::invalid_operation);
  EXPECT_EQ(pool.retain(std::span<const BlockId>(&c, 1), 1).error().code(),
            Errc::invalid_operation);
  EXPECT_EQ(pool.ref_count(c), 0xFFFFFFFFu);
  EXPECT_EQ(pool.release(c, 0xFFFFFFFFu).value(), true);
  EXPECT_EQ(pool.free_count(), 4u);
  EXPECT_EQ(pool.total_acquired(), pool.total_released());
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolSt, st_span_retain_n_and_release_counts) {
  BlockPool pool(8, opts());
  std::vector<BlockId> ids;
  ASSERT_TRUE(pool.acquire(4, ids));
  // A fork into 3 children: every block + 3 in one update each.
  ASSERT_TRUE(pool.retain(std::span<const BlockId>(ids), 3));
  for (BlockId b : ids) EXPECT_EQ(pool.ref_count(b), 4u);
  // A span with a free block: nothing is retained.
  std::vector<BlockId> with_free = {ids[0], BlockId{7}};
  EXPECT_EQ(pool.retain(std::span<const BlockId>(with_free), 2).error().code(),
            Errc::block_not_found);
  EXPECT_EQ(pool.ref_count(ids[0]), 4u);
  // Mismatched spans: invalid_argument, nothing released.
  const std::vector<std::uint32_t> short_counts = {1};
  auto mismatch = pool.release(std::span<const BlockId>(ids), short_counts);
  ASSERT_FALSE(mismatch);
  EXPECT_EQ(mismatch.error().code(), Errc::invalid_argument);
  for (BlockId b : ids) EXPECT_EQ(pool.ref_count(b), 4u);
  // Folded drops: ids[0] and ids[1] lose all four, ids[2] one, ids[3] asks for too many.
  const std::vector<std::uint32_t> counts = {4, 4, 1, 5};
  auto r = pool.release(std::span<const BlockId>(ids), counts);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_operation);
  EXPECT_EQ(pool.ref_count(ids[0]), 0u);
  EXPECT_EQ(pool.ref_count(ids[1]), 0u);
  EXPECT_EQ(pool.ref_count(ids[2]), 3u);
  EXPECT_EQ(pool.ref_count(ids[3]), 4u) << "the refused entry changed nothing";
  EXPECT_EQ(pool.free_count(), 6u);
  // Free and out-of-range ids: block_not_found after the others were released.
  const std::vector<BlockId> rest = {ids[2], ids[0], ids[3], BlockId{100}};
  const std::vector<std::uint32_t> rest_counts = {3, 1, 4, 1};
  auto r2 = pool.release(std::span<const BlockId>(rest), rest_counts);
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().code(), Errc::block_not_found);
  EXPECT_EQ(r2.error().message(), "Block not found: " + pkv::to_string(ids[0]));
  EXPECT_EQ(pool.free_count(), 8u);
  EXPECT_EQ(pool.total_acquired(), pool.total_released());
  EXPECT_EQ(pool.validate_unsafe(), "");
  // Success returns how many went free.
  ids.clear();
  ASSERT_TRUE(pool.acquire(2, ids));
  ASSERT_TRUE(pool.retain(ids[0], 1));
  const std::vector<std::uint32_t> both = {2, 1};
  EXPECT_EQ(pool.release(std::span<const BlockId>(ids), both).value(), 2u);
  EXPECT_EQ(pool.free_count(), 8u);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolSt, st_slow_path_counted) {
  // One thread alone: its own magazine and the shared stack hold everything, so only a request
  // for more than is free reaches the freezing slow path (and fails there).
  BlockPool pool(100, opts());
  std::vector<BlockId> ids;
  ASSERT_TRUE(pool.acquire(60, ids));
  EXPECT_EQ(pool.slow_path_count(), 0u);
  EXPECT_FALSE(pool.acquire(41, ids));
  EXPECT_EQ(pool.slow_path_count(), GetParam() == 0 ? 0u : 1u);
  ASSERT_TRUE(pool.acquire(40, ids));
  ASSERT_TRUE(pool.release(std::span<const BlockId>(ids)));
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolSt, st_magazine_overflow_goes_to_shared_list) {
  // More releases than a magazine holds: the overflow moves to the shared list in batches and a
  // single later acquire of everything still succeeds.
  const std::size_t n = 1000;
  BlockPool pool(n, opts());
  std::vector<BlockId> ids;
  ASSERT_TRUE(pool.acquire(n, ids));
  EXPECT_EQ(pool.free_count(), 0u);
  for (BlockId b : ids) ASSERT_TRUE(pool.release(b));
  EXPECT_EQ(pool.free_count(), n);
  EXPECT_EQ(pool.validate_unsafe(), "");
  ids.clear();
  ASSERT_TRUE(pool.acquire(n, ids));
  std::set<BlockId> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), n);
  EXPECT_EQ(pool.validate_unsafe(), "");
  ASSERT_TRUE(pool.release(std::span<const BlockId>(ids)));
  EXPECT_EQ(pool.free_count(), n);
  EXPECT_EQ(pool.total_acquired(), 2 * n);
  EXPECT_EQ(pool.total_released(), 2 * n);
}

TEST_P(BlockPoolSt, st_single_block_pool) {
  BlockPool pool(1, opts());
  for (int round = 0; round < 100; ++round) {
    BlockId b = pool.acquire().value();
    EXPECT_EQ(b, BlockId{0});
    EXPECT_FALSE(pool.acquire());
    ASSERT_TRUE(pool.release(b));
  }
  EXPECT_EQ(pool.validate_unsafe(), "");
}

INSTANTIATE_TEST_SUITE_P(Magazines, BlockPoolSt, ::testing::Values(0u, 1u, 4u, 32u, 64u),
                         [](const auto& info) { return "mag" + std::to_string(info.param); });

}  // namespace
