// BasicBlockPool under a deterministic scheduler: thousands of seeded interleavings of 3 threads
// acquiring (single and batches), releasing, and retaining / releasing n references, through the
// lock-free shared stack of nodes, the spare-node stack, the magazines and the no-stranding slow
// path. Checks exclusive ownership, no stranding (FreeTracker), refcount errors, and the pool's
// invariants at the end. A failing seed replays exactly:
//   PKV_DSCHED_SEED=<seed> ./test_dsched_pool
// The ABA mutation (meson -Dmutation=aba: the list's tag never changes) makes this test fail;
// scripts/mutation-check.sh shows it.
#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <string>

#include "block_pool_impl.hpp"
#include "dsched.hpp"

namespace {

using pkv::BlockId;
using pkv::test::DAtomic;
using pkv::test::DSched;
using Pool = pkv::BasicBlockPool<DAtomic>;

constexpr int kThreads = 3;

struct Config {
  std::uint32_t magazine;        // 0: the shared stack only (node = block)
  std::uint32_t slot_magazines;  // a slot holds up to slot_magazines * magazine ids
  std::size_t blocks;
  std::size_t max_k;  // batch acquires take 2..max_k blocks
  int ops;            // per thread
};

struct Outcome {
  std::string violation;  // empty when every check held
  bool finished = true;
  std::uint64_t slow_paths = 0;
};

// The checker's view of how many blocks are certainly free: capacity minus blocks held, minus
// blocks inside a release call, minus what every acquire in flight asked for. If this never drops
// below 0 during a failed acquire(k), then at every instant of the call at least k blocks were
// free that no other call could have taken: the pool stranded some (the no-stranding contract
// says a failure needs an instant with fewer than k free). The checker's state is not scheduled
// (plain std::atomic): it changes only between the pool's scheduling points, so a value read
// right before or after a call is the pool's state at the call's first or last atomic step.
class FreeTracker {
 public:
  explicit FreeTracker(std::size_t blocks) : free_(static_cast<int>(blocks)) {
    for (auto& a : active_) a.store(false);
  }
  void adjust(int delta) {
    const int now = free_.fetch_add(delta) + delta;
    for (int t = 0; t < kThreads; ++t)
      if (active_[t].load() && now < low_[t].load()) low_[t].store(now);
  }
  void begin_acquire(int t, std::size_t k) {
    adjust(-static_cast<int>(k));
    low_[t].store(free_.load());
    active_[t].store(true);
  }
  // Returns the lowest value seen during the call.
  int end_acquire(int t, std::size_t k, bool ok) {
    active_[t].store(false);
    if (!ok) adjust(static_cast<int>(k));  // nothing taken: the reservation goes back
    return low_[t].load();
  }
  void released() { adjust(1); }

 private:
  std::atomic<int> free_;
  std::array<std::atomic<bool>, kThreads> active_;
  std::array<std::atomic<int>, kThreads> low_{};
};

// One schedule: each thread runs a seeded random program of acquire (single and batch), release,
// and retain / release of n references on a block it holds; it checks that no block it receives
// is held by anyone else (exclusive ownership) and that no failed acquire stranded blocks.
Outcome run_one(std::uint64_t seed, const Config& cfg) {
  Pool pool(cfg.blocks,
            Pool::Options{.magazine_size = cfg.magazine, .slot_magazines = cfg.slot_magazines});
  std::vector<std::atomic<int>> owner(cfg.blocks);  // not scheduled: the checker's own state
  for (auto& o : owner) o.store(-1);
  FreeTracker tracker(cfg.blocks);
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
      auto release_one = [&](std::size_t i) {
        BlockId b = held[i];
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
        owner[b.value].store(-1);
        auto rel = pool.release(b);
        if (!rel || !rel.value()) fail("release of an exclusively held block did not free it");
        tracker.released();
      };
      for (int op = 0; op < cfg.ops; ++op) {
        const unsigned r = rng() % 5;
        if (r < 2 || held.empty()) {
          std::vector<BlockId> got;
          const std::size_t k = r == 1 ? 2 + rng() % (cfg.max_k - 1) : 1;
          tracker.begin_acquire(t, k);
          bool ok = false;
          if (k == 1) {
            auto b = pool.acquire();
            ok = b.has_value();
            if (b) got.push_back(b.value());
          } else {
            ok = pool.acquire(k, got).has_value();
            if (!ok && !got.empty()) fail("failed batch acquire returned blocks");
          }
          const int low = tracker.end_acquire(t, k, ok);
          if (!ok && low >= 0)
            fail("acquire(" + std::to_string(k) + ") failed although " + std::to_string(k) +
                 " blocks were free throughout the call (stranded)");
          for (BlockId b : got) {
            if (b.value >= cfg.blocks) {
              fail("block id out of range");
              continue;
            }
            int prev = owner[b.value].exchange(t);
            if (prev != -1)
              fail("B" + std::to_string(b.value) + " handed to thread " + std::to_string(t) +
                   " while thread " + std::to_string(prev) + " holds it");
            held.push_back(b);
          }
        } else if (r == 4) {
          // n references on and off in one update each; the block stays held (count 1).
          const BlockId b = held[rng() % held.size()];
          const std::uint32_t n = 1 + rng() % 3;
          if (!pool.retain(b, n)) fail("retain(n) of a held block failed");
          auto over = pool.release(b, n + 2);
          if (over || over.error().code() != pkv::Errc::invalid_operation)
            fail("releasing more references than held was not refused");
          auto rel = pool.release(b, n);
          if (!rel || rel.value()) fail("release(n) of the added references freed the block");
          if (pool.ref_count(b) != 1) fail("retain(n) + release(n) changed the count");
        } else {
          release_one(rng() % held.size());
        }
      }
      while (!held.empty()) release_one(held.size() - 1);
    });
  }
  DSched sched(seed);
  Outcome out;
  out.finished = sched.run(fns);
  out.violation = violation;
  out.slow_paths = pool.slow_path_count();
  if (out.violation.empty() && out.finished) {
    std::string v = pool.validate_unsafe();
    if (!v.empty())
      out.violation = "validate_unsafe: " + v;
    else if (pool.free_count() != cfg.blocks)
      out.violation = "blocks lost at the end";
  }
  return out;
}

// Runs `seeds` schedules; returns how many slow paths (every slot frozen) they ran in all.
std::uint64_t explore(const Config& cfg, std::uint64_t seeds) {
  std::uint64_t first = 0;
  if (const char* s = std::getenv("PKV_DSCHED_SEED")) {
    first = std::strtoull(s, nullptr, 10);
    seeds = 1;
  }
  std::uint64_t slow = 0;
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    Outcome o = run_one(seed, cfg);
    EXPECT_TRUE(o.finished) << "schedule did not finish (livelock?) seed=" << seed
                            << " magazine=" << cfg.magazine;
    EXPECT_EQ(o.violation, "") << "seed=" << seed << " magazine=" << cfg.magazine
                               << " blocks=" << cfg.blocks << " (replay: PKV_DSCHED_SEED=" << seed
                               << ")";
    if (!o.finished || !o.violation.empty()) break;
    slow += o.slow_paths;
  }
  return slow;
}

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr std::uint64_t kSeeds = 300;  // sanitizers slow every switch down
#else
constexpr std::uint64_t kSeeds = 3000;
#endif

TEST(DSchedPool, det_shared_list_only) {
  explore({.magazine = 0, .slot_magazines = 2, .blocks = 4, .max_k = 2, .ops = 8}, kSeeds);
}
TEST(DSchedPool, det_magazines_of_one) {
  EXPECT_GT(
      explore({.magazine = 1, .slot_magazines = 2, .blocks = 4, .max_k = 2, .ops = 8}, kSeeds), 0u)
      << "no schedule reached the no-stranding slow path";
}
TEST(DSchedPool, det_magazines_of_two) {
  EXPECT_GT(
      explore({.magazine = 2, .slot_magazines = 2, .blocks = 4, .max_k = 2, .ops = 8}, kSeeds), 0u)
      << "no schedule reached the no-stranding slow path";
}
// Longer programs over more blocks (half the seeds each, to bound the run time): nodes of two and
// three ids move between slots and the shared stack (flushes, refills, a failed
// refill's give-back, the slow path's repacking), through the spare-node stack.
TEST(DSchedPool, det_batches_of_two) {
  EXPECT_GT(
      explore({.magazine = 2, .slot_magazines = 2, .blocks = 7, .max_k = 4, .ops = 12}, kSeeds / 2),
      0u)
      << "no schedule reached the no-stranding slow path";
}
// Slots of three magazines: a flush keeps two (the memmove of the newer ids).
TEST(DSchedPool, det_slots_of_three_magazines) {
  EXPECT_GT(
      explore({.magazine = 2, .slot_magazines = 3, .blocks = 9, .max_k = 4, .ops = 12}, kSeeds / 2),
      0u)
      << "no schedule reached the no-stranding slow path";
}
TEST(DSchedPool, det_batches_of_three) {
  EXPECT_GT(
      explore({.magazine = 3, .slot_magazines = 2, .blocks = 8, .max_k = 5, .ops = 12}, kSeeds / 2),
      0u)
      << "no schedule reached the no-stranding slow path";
}

}  // namespace
