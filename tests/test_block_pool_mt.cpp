// BlockPool, multi-threaded: exact capacity, no stranding, all-or-nothing, refcounts, churn.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <latch>
#include <mutex>
#include <pkv/pkv.hpp>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace {

using pkv::BlockId;
using pkv::BlockPool;

constexpr unsigned kThreads = 8;  // more than the 2 cores of CI machines: preemption happens

class BlockPoolMt : public ::testing::TestWithParam<std::uint32_t> {
 protected:
  BlockPool::Options opts() const { return BlockPool::Options{GetParam()}; }
};

TEST_P(BlockPoolMt, mt_exhaustion_hands_out_exactly_capacity) {
  const std::size_t n = 5000;
  BlockPool pool(n, opts());
  std::vector<std::vector<BlockId>> got(kThreads);
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937 rng(t);
      // Mixed single and batch acquisitions until the pool is exhausted.
      for (;;) {
        std::size_t k = rng() % 3 == 0 ? 1 + rng() % 7 : 1;
        if (!pool.acquire(k, got[t])) {
          if (k == 1) break;
        }
      }
    });
  }
  for (auto& th : ts) th.join();
  std::set<BlockId> all;
  std::size_t total = 0;
  for (auto& v : got) {
    total += v.size();
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(total, n) << "threads together must get every block exactly once";
  EXPECT_EQ(all.size(), n);
  EXPECT_EQ(pool.free_count(), 0u);
  EXPECT_EQ(pool.validate_unsafe(), "");
  for (auto& v : got) ASSERT_TRUE(pool.release(std::span<const BlockId>(v)));
  EXPECT_EQ(pool.free_count(), n);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolMt, mt_no_stranding_after_cross_thread_frees) {
  // Every free block sits in other (live) threads' magazines or the shared list; one thread
  // must still get all of them, in one all-or-nothing call and one by one.
  const std::size_t n = 600;
  BlockPool pool(n, opts());
  std::vector<BlockId> ids;
  ASSERT_TRUE(pool.acquire(n, ids));
  std::latch freed(kThreads - 1);
  std::latch done(1);
  std::vector<std::thread> holders;
  for (unsigned t = 0; t + 1 < kThreads; ++t) {
    holders.emplace_back([&, t] {
      // Each holder frees a share into its own magazine, then stays alive (keeps its slot).
      // EXPECT, not ASSERT: the latch must be counted down even when a check fails.
      for (std::size_t i = t; i < n; i += kThreads - 1) EXPECT_TRUE(pool.release(ids[i]));
      freed.count_down();
      done.wait();
    });
  }
  freed.wait();
  EXPECT_EQ(pool.free_count(), n);
  std::thread taker([&] {
    std::vector<BlockId> all;
    ASSERT_TRUE(pool.acquire(n, all)) << "blocks stranded in other threads' caches";
    EXPECT_EQ(all.size(), n);
    ASSERT_TRUE(pool.release(std::span<const BlockId>(all)));
    std::vector<BlockId> singles;
    for (std::size_t i = 0; i < n; ++i) {
      auto b = pool.acquire();
      ASSERT_TRUE(b) << "single acquire " << i << " stranded";
      singles.push_back(b.value());
    }
    EXPECT_FALSE(pool.acquire());
    ASSERT_TRUE(pool.release(std::span<const BlockId>(singles)));
  });
  taker.join();
  done.count_down();
  for (auto& th : holders) th.join();
  EXPECT_EQ(pool.free_count(), n);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolMt, mt_all_or_nothing_under_contention) {
  // Demand exceeds supply: every call gets all k or none; the winners' total fits the pool, and
  // since nobody releases, the pool ends with fewer than k free (nothing was refused wrongly).
  const std::size_t n = 1000, k = 37;
  for (int round = 0; round < 20; ++round) {
    BlockPool pool(n, opts());
    std::vector<std::vector<BlockId>> got(kThreads);
    std::barrier start(kThreads);
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < kThreads; ++t) {
      ts.emplace_back([&, t] {
        start.arrive_and_wait();
        for (int i = 0; i < 10; ++i) {
          std::size_t before = got[t].size();
          if (pool.acquire(k, got[t])) {
            ASSERT_EQ(got[t].size(), before + k);
          } else {
            ASSERT_EQ(got[t].size(), before) << "a failed acquire kept blocks";
          }
        }
      });
    }
    for (auto& th : ts) th.join();
    std::size_t total = 0;
    for (auto& v : got) total += v.size();
    EXPECT_EQ(total % k, 0u);
    EXPECT_EQ(total, (n / k) * k) << "every batch that fit was granted";
    EXPECT_EQ(pool.free_count(), n - total);
    EXPECT_EQ(pool.validate_unsafe(), "");
  }
}

TEST_P(BlockPoolMt, mt_shared_refcount) {
  BlockPool pool(4, opts());
  BlockId b = pool.acquire().value();
  const int per = 20000;
  std::vector<std::thread> ts;
  std::atomic<int> freed{0};
  for (unsigned t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < per; ++i) {
        ASSERT_TRUE(pool.retain(b));
        auto r = pool.release(b);
        ASSERT_TRUE(r);
        if (r.value()) freed.fetch_add(1);
      }
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_EQ(freed.load(), 0) << "the owner's reference kept the block alive";
  EXPECT_EQ(pool.ref_count(b), 1u);
  EXPECT_TRUE(pool.release(b).value());
  EXPECT_EQ(pool.free_count(), 4u);
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolMt, mt_churn_with_cross_thread_release) {
  // Threads acquire blocks and hand them to a random other thread, which releases them.
  const std::size_t n = 256;
  BlockPool pool(n, opts());
  std::vector<std::mutex> mus(kThreads);
  std::vector<std::vector<BlockId>> inbox(kThreads);
  std::atomic<std::uint64_t> oom{0};
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      std::vector<BlockId> mine;
      for (int i = 0; i < 4000; ++i) {
        std::size_t k = 1 + rng() % 8;
        mine.clear();
        if (!pool.acquire(k, mine)) {
          oom.fetch_add(1);
        } else {
          unsigned to = rng() % kThreads;
          std::lock_guard<std::mutex> g(mus[to]);
          inbox[to].insert(inbox[to].end(), mine.begin(), mine.end());
        }
        std::vector<BlockId> drop;
        {
          std::lock_guard<std::mutex> g(mus[t]);
          drop.swap(inbox[t]);
        }
        ASSERT_TRUE(pool.release(std::span<const BlockId>(drop)));
      }
    });
  }
  for (auto& th : ts) th.join();
  for (auto& v : inbox) ASSERT_TRUE(pool.release(std::span<const BlockId>(v)));
  EXPECT_EQ(pool.free_count(), n);
  EXPECT_EQ(pool.total_acquired(), pool.total_released());
  EXPECT_EQ(pool.validate_unsafe(), "");
}

TEST_P(BlockPoolMt, mt_threads_beyond_the_cached_slots) {
  // More live threads than kMaxCachedThreads: the later ones share one slot. Each churns, then
  // keeps some blocks freed into its slot and stays alive; one more thread must still get every
  // free block (none stranded in the shared slot), and the accounting stays exact.
  const std::size_t live = BlockPool::kMaxCachedThreads + 8;
  const std::size_t n = live * 6;
  BlockPool pool(n, opts());
  std::latch parked(static_cast<std::ptrdiff_t>(live));
  std::latch done(1);
  std::vector<std::thread> ts;
  std::vector<std::vector<BlockId>> kept(live);
  for (std::size_t t = 0; t < live; ++t) {
    ts.emplace_back([&, t] {
      std::vector<BlockId> mine;
      for (int i = 0; i < 50; ++i) {
        mine.clear();
        if (pool.acquire(1 + (t + i) % 5, mine)) {
          EXPECT_TRUE(pool.release(std::span<const BlockId>(mine)));
        }
      }
      // Keep 2 blocks, free 2 more into this thread's (possibly shared) slot.
      EXPECT_TRUE(pool.acquire(4, kept[t]));
      EXPECT_TRUE(pool.release(kept[t].back()));
      kept[t].pop_back();
      EXPECT_TRUE(pool.release(kept[t].back()));
      kept[t].pop_back();
      parked.count_down();
      done.wait();
      EXPECT_TRUE(pool.release(std::span<const BlockId>(kept[t])));
    });
  }
  parked.wait();
  const std::size_t free_now = n - 2 * live;
  EXPECT_EQ(pool.free_count(), free_now);
  std::thread taker([&] {
    std::vector<BlockId> all;
    EXPECT_TRUE(pool.acquire(free_now, all)) << "blocks stranded in a slot";
    EXPECT_FALSE(pool.acquire());
    EXPECT_TRUE(pool.release(std::span<const BlockId>(all)));
  });
  taker.join();
  done.count_down();
  for (auto& th : ts) th.join();
  EXPECT_EQ(pool.free_count(), n);
  EXPECT_EQ(pool.total_acquired(), pool.total_released());
  EXPECT_EQ(pool.validate_unsafe(), "");
}

INSTANTIATE_TEST_SUITE_P(Magazines, BlockPoolMt, ::testing::Values(0u, 4u, 32u),
                         [](const auto& info) { return "mag" + std::to_string(info.param); });

}  // namespace
