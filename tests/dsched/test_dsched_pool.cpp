// BasicBlockPool under a deterministic scheduler: thousands of seeded interleavings of 3 threads
// acquiring (single and batches), releasing, and handing blocks over through the lock-free
// shared list, the magazines and the stealing slow path. A failing seed replays exactly:
//   PKV_DSCHED_SEED=<seed> ./test_dsched_pool
// The ABA mutation (meson -Dmutation=aba: the list's tag never changes) makes this test fail;
// scripts/mutation-check.sh shows it.
#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <string>

#include "dsched.hpp"
#include "block_pool_impl.hpp"

namespace {

using pkv::BlockId;
using pkv::test::DAtomic;
using pkv::test::DSched;
using Pool = pkv::BasicBlockPool<DAtomic>;

constexpr std::size_t kBlocks = 4;
constexpr int kThreads = 3;

struct Outcome {
  std::string violation;  // empty when every check held
  bool finished = true;
};

// One schedule: each thread runs a seeded random program of acquire / release operations and
// checks that no block it receives is held by anyone else (exclusive ownership).
Outcome run_one(std::uint64_t seed, std::uint32_t magazine) {
  Pool pool(kBlocks, Pool::Options{magazine});
  std::array<std::atomic<int>, kBlocks> owner{};  // not scheduled: the checker's own state
  for (auto& o : owner) o.store(-1);
  std::mutex vmu;
  std::string violation;
  auto fail = [&](const std::string& why) {
    std::lock_guard<std::mutex> g(vmu);
    if (violation.empty()) violation = why;
  };
  std::vector<std::function<void()>> fns;
  for (int t = 0; t < kThreads; ++t) {
    fns.emplace_back([&, t] {
      std::mt19937 rng(static_cast<std::uint32_t>(seed * 7919 + static_cast<std::uint64_t>(t)));
      std::vector<BlockId> held;
      for (int op = 0; op < 8; ++op) {
        unsigned r = rng() % 4;
        if (r < 2 || held.empty()) {
          std::vector<BlockId> got;
          std::size_t k = r == 1 ? 2 : 1;
          if (k == 1) {
            auto b = pool.acquire();
            if (b) got.push_back(b.value());
          } else if (!pool.acquire(k, got)) {
            if (!got.empty()) fail("failed batch acquire returned blocks");
          }
          for (BlockId b : got) {
            if (b.value >= kBlocks) {
              fail("block id out of range");
              continue;
            }
            int prev = owner[b.value].exchange(t);
            if (prev != -1)
              fail("B" + std::to_string(b.value) + " handed to thread " + std::to_string(t) +
                   " while thread " + std::to_string(prev) + " holds it");
            held.push_back(b);
          }
        } else {
          std::size_t i = rng() % held.size();
          BlockId b = held[i];
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
          owner[b.value].store(-1);
          auto rel = pool.release(b);
          if (!rel || !rel.value()) fail("release of an exclusively held block did not free it");
        }
      }
      for (BlockId b : held) {
        owner[b.value].store(-1);
        (void)pool.release(b);
      }
    });
  }
  DSched sched(seed);
  Outcome out;
  out.finished = sched.run(fns);
  out.violation = violation;
  if (out.violation.empty() && out.finished) {
    std::string v = pool.validate_unsafe();
    if (!v.empty())
      out.violation = "validate_unsafe: " + v;
    else if (pool.free_count() != kBlocks)
      out.violation = "blocks lost at the end";
  }
  return out;
}

void explore(std::uint32_t magazine, std::uint64_t seeds) {
  std::uint64_t first = 0;
  if (const char* s = std::getenv("PKV_DSCHED_SEED")) {
    first = std::strtoull(s, nullptr, 10);
    seeds = 1;
  }
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    Outcome o = run_one(seed, magazine);
    ASSERT_TRUE(o.finished) << "schedule did not finish (livelock?) seed=" << seed
                            << " magazine=" << magazine;
    ASSERT_EQ(o.violation, "") << "seed=" << seed << " magazine=" << magazine
                               << " (replay: PKV_DSCHED_SEED=" << seed << ")";
  }
}

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr std::uint64_t kSeeds = 300;  // sanitizers slow every switch down
#else
constexpr std::uint64_t kSeeds = 3000;
#endif

TEST(DSchedPool, det_shared_list_only) {
  explore(0, kSeeds);
}
TEST(DSchedPool, det_magazines_of_one) {
  explore(1, kSeeds);
}
TEST(DSchedPool, det_magazines_of_two) {
  explore(2, kSeeds);
}

}  // namespace
