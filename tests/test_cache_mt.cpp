// PagedKvCache, multi-threaded: exact capacity, no stranding, fork + append copy-on-write under
// concurrency (with KV contents checked), evict never frees twice, random mixed operations with
// a conservation check. Thread counts exceed the CI machine's 2 cores on purpose.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <pkv/pkv.hpp>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace {

using pkv::BlockId;
using pkv::CopyOp;
using pkv::Errc;
using pkv::EvictionStrategy;
using pkv::PagedKvCache;
using pkv::SeqId;

constexpr unsigned kThreads = 8;

std::uint64_t seq_base(unsigned t) {
  return (std::uint64_t{t} + 1) << 32;
}

template <class F>
void run_threads(unsigned n, F&& body) {
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < n; ++t) ts.emplace_back([&, t] { body(t); });
  for (auto& th : ts) th.join();
}

TEST(CacheMt, mt_fill_to_exact_capacity) {
  for (std::uint32_t mag : {0u, 32u}) {
    PagedKvCache::Options o;
    o.pool.magazine_size = mag;
    const std::size_t blocks = 3000, bs = 16;
    PagedKvCache c(blocks, bs, 1, 1, o);
    std::vector<std::vector<SeqId>> mine(kThreads);
    run_threads(kThreads, [&](unsigned t) {
      std::uint64_t id = seq_base(t);
      for (;;) {
        auto r = c.allocate(SeqId{id}, bs);  // one block each
        if (!r) {
          ASSERT_EQ(r.error().code(), Errc::out_of_memory);
          break;
        }
        mine[t].push_back(SeqId{id++});
      }
    });
    std::size_t total = 0;
    for (auto& v : mine) total += v.size();
    EXPECT_EQ(total, blocks) << "threads together fill the cache exactly (mag " << mag << ")";
    EXPECT_EQ(c.free_block_count(), 0u);
    EXPECT_EQ(c.num_sequences(), blocks);
    EXPECT_EQ(c.validate_unsafe(), "");
    // Cross-thread frees: thread t frees thread (t+1)'s sequences.
    run_threads(kThreads, [&](unsigned t) {
      for (SeqId s : mine[(t + 1) % kThreads]) ASSERT_TRUE(c.free(s));
    });
    EXPECT_EQ(c.free_block_count(), blocks);
    EXPECT_EQ(c.used_block_count(), 0u);
    EXPECT_EQ(c.stats().total_allocations, blocks);
    EXPECT_EQ(c.stats().total_frees, blocks);
    EXPECT_EQ(c.stats().peak_blocks_used, blocks);
    EXPECT_EQ(c.validate_unsafe(), "");
  }
}

TEST(CacheMt, mt_no_stranding_after_cross_thread_frees) {
  const std::size_t blocks = 500;
  PagedKvCache c(blocks, 4, 1, 1);
  for (std::uint64_t i = 0; i < blocks; ++i) ASSERT_TRUE(c.allocate(SeqId{i}, 4));
  std::latch freed(kThreads);
  std::latch done(1);
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      // EXPECT, not ASSERT: the latch must be counted down even when a check fails.
      for (std::uint64_t i = t; i < blocks; i += kThreads) EXPECT_TRUE(c.free(SeqId{i}));
      freed.count_down();
      done.wait();  // stay alive: the freed blocks sit in this thread's magazine
    });
  }
  freed.wait();
  std::thread taker([&] {
    auto r = c.allocate(SeqId{1'000'000}, blocks * 4);
    ASSERT_TRUE(r) << "one prompt must get every free block: " << r.error().message();
    EXPECT_EQ(c.free_block_count(), 0u);
  });
  taker.join();
  done.count_down();
  for (auto& th : ts) th.join();
  EXPECT_EQ(c.validate_unsafe(), "");
}

// Host KV arena: one atomic cookie per token slot; a cookie is (sequence, token position).
struct Arena {
  Arena(std::size_t blocks, std::size_t bs) : bs(bs), cells(blocks * bs) {}
  std::size_t bs;
  std::vector<std::atomic<std::uint64_t>> cells;
  static std::uint64_t cookie(std::uint64_t family, std::uint64_t pos) {
    return (family << 24) ^ (pos + 1);
  }
  void copy(const pkv::CopyOp& op) {
    for (std::size_t i = 0; i < bs; ++i)
      cells[op.dst.value * bs + i].store(cells[op.src.value * bs + i].load());
  }
  void write(const pkv::SequenceInfo& info, std::uint64_t tok, std::uint64_t value) {
    std::uint64_t slot = info.slot_of(tok);
    cells[info.block_ids[slot / bs].value * bs + slot % bs].store(value);
  }
  std::uint64_t read(const pkv::SequenceInfo& info, std::uint64_t tok) const {
    std::uint64_t slot = info.slot_of(tok);
    return cells[info.block_ids[slot / bs].value * bs + slot % bs].load();
  }
};

TEST(CacheMt, mt_concurrent_fork_and_append_never_share_a_written_block) {
  const std::size_t bs = 8;
  for (int round = 0; round < 30; ++round) {
    PagedKvCache c(4000, bs, 1, 1);
    Arena arena(4000, bs);
    const SeqId parent{1};
    const std::uint64_t prompt = 13;  // last block partly filled: 5 of 8
    ASSERT_TRUE(c.allocate(parent, prompt));
    auto pinfo = *c.get_sequence(parent);
    for (std::uint64_t t = 0; t < prompt; ++t) arena.write(pinfo, t, Arena::cookie(0, t));
    std::atomic<int> copies{0};
    std::barrier start(kThreads);
    run_threads(kThreads, [&](unsigned t) {
      const SeqId child{seq_base(t)};
      start.arrive_and_wait();
      ASSERT_TRUE(c.fork(parent, child));
      for (int step = 0; step < 20; ++step) {
        auto r = c.append(child, 1);
        ASSERT_TRUE(r);
        if (r.value()) {
          arena.copy(*r.value());
          copies.fetch_add(1);
        }
        auto info = *c.get_sequence(child);
        arena.write(info, info.num_tokens - 1, Arena::cookie(t + 1, info.num_tokens - 1));
      }
    });
    // Each child copied the shared partial block exactly once, on its first append.
    EXPECT_EQ(copies.load(), static_cast<int>(kThreads));
    EXPECT_EQ(c.validate_unsafe(), "");
    pinfo = *c.get_sequence(parent);
    for (std::uint64_t t = 0; t < prompt; ++t)
      ASSERT_EQ(arena.read(pinfo, t), Arena::cookie(0, t)) << "parent token " << t;
    for (unsigned t = 0; t < kThreads; ++t) {
      auto info = *c.get_sequence(SeqId{seq_base(t)});
      ASSERT_EQ(info.num_tokens, prompt + 20);
      for (std::uint64_t k = 0; k < info.num_tokens; ++k) {
        std::uint64_t want = k < prompt ? Arena::cookie(0, k) : Arena::cookie(t + 1, k);
        ASSERT_EQ(arena.read(info, k), want) << "child " << t << " token " << k;
      }
    }
  }
}

TEST(CacheMt, mt_fork_chains_and_appends_across_shards) {
  // Threads fork from each other's sequences (two shard locks in both orders) while appending.
  PagedKvCache c(20000, 4, 1, 1);
  const unsigned n = kThreads;
  for (unsigned t = 0; t < n; ++t) ASSERT_TRUE(c.allocate(SeqId{seq_base(t)}, 6));
  std::atomic<std::uint64_t> forks{0};
  run_threads(n, [&](unsigned t) {
    std::mt19937_64 rng(t);
    std::uint64_t next = seq_base(t) + 1;
    for (int i = 0; i < 400; ++i) {
      SeqId src{seq_base(static_cast<unsigned>(rng() % n)) + rng() % 4};
      SeqId dst{next};
      if (c.fork(src, dst)) {
        forks.fetch_add(1);
        ++next;
        ASSERT_TRUE(c.append(dst, 1 + rng() % 5));
        if (next - seq_base(t) > 20) {
          // keep the population bounded: free an old one of ours (not the first four)
          (void)c.free(SeqId{next - 15});
        }
      }
      (void)c.append(SeqId{seq_base(t)}, 1);
    }
  });
  EXPECT_EQ(c.stats().total_forks, forks.load());
  EXPECT_EQ(c.validate_unsafe(), "");
  for (SeqId s : c.sequence_ids()) ASSERT_TRUE(c.free(s));
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_EQ(c.validate_unsafe(), "");
}

TEST(CacheMt, mt_evict_never_frees_twice_or_returns_a_freed_id) {
  for (auto strategy : {EvictionStrategy::lru(), EvictionStrategy::lfu(),
                        EvictionStrategy::longest_first(), EvictionStrategy::priority(4)}) {
    PagedKvCache c(1000, 4, 1, 1);
    ASSERT_TRUE(c.set_eviction_strategy(strategy));
    const std::uint64_t per = 300;
    std::vector<std::vector<SeqId>> evicted(kThreads);
    std::vector<std::vector<SeqId>> freed(kThreads);
    run_threads(kThreads, [&](unsigned t) {
      std::mt19937 rng(t);
      for (std::uint64_t i = 0; i < per; ++i) {
        SeqId s{seq_base(t) + i};
        if (c.allocate(s, 1 + rng() % 8)) (void)c.set_priority(s, rng() % 4);
        if (rng() % 2) {
          if (auto e = c.evict()) evicted[t].push_back(e.value());
        }
        if (i >= 3 && rng() % 2) {
          SeqId old{seq_base(t) + i - 3};
          if (c.free(old)) freed[t].push_back(old);
        }
      }
    });
    std::map<SeqId, int> gone;
    for (auto& v : evicted)
      for (SeqId s : v) gone[s]++;
    for (auto& v : freed)
      for (SeqId s : v) gone[s]++;
    for (SeqId s : c.sequence_ids()) gone[s]++;
    for (auto& [s, n] : gone) ASSERT_EQ(n, 1) << s << " was freed/evicted/kept " << n << " times";
    std::size_t evictions = 0;
    for (auto& v : evicted) evictions += v.size();
    EXPECT_EQ(c.stats().total_evictions, evictions);
    EXPECT_EQ(c.validate_unsafe(), "");
    auto rest = c.evict_to_threshold(0.0);
    ASSERT_TRUE(rest);
    EXPECT_EQ(c.used_block_count(), 0u);
  }
}

TEST(CacheMt, mt_random_mixed_operations_conserve_blocks) {
  const std::size_t blocks = 400, bs = 4;
  for (int round = 0; round < 5; ++round) {
    PagedKvCache c(blocks, bs, 1, 1);
    std::atomic<std::uint64_t> ops{0};
    run_threads(kThreads, [&](unsigned t) {
      std::mt19937_64 rng(round * 100 + t);
      std::vector<SeqId> live;
      std::uint64_t next = seq_base(t);
      for (int i = 0; i < 3000; ++i) {
        ops.fetch_add(1, std::memory_order_relaxed);
        switch (rng() % 12) {
          case 0:
          case 1:
          case 2:
            if (c.allocate(SeqId{next}, rng() % 20)) live.push_back(SeqId{next});
            ++next;
            break;
          case 3:
          case 4:
          case 5:
            if (!live.empty()) (void)c.append(live[rng() % live.size()], 1 + rng() % 6);
            break;
          case 6:
            if (!live.empty() && c.fork(live[rng() % live.size()], SeqId{next}))
              live.push_back(SeqId{next});
            ++next;
            break;
          case 7:
          case 8:
            if (!live.empty()) {
              std::size_t k = rng() % live.size();
              (void)c.free(live[k]);  // may already be evicted by another thread
              live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
            }
            break;
          case 9:
            (void)c.evict();
            break;
          case 10:
            if (!live.empty())
              (void)c.apply_streaming_llm(live[rng() % live.size()], rng() % 4, 1 + rng() % 6);
            break;
          case 11:
            if (rng() % 8 == 0)
              (void)c.evict_to_threshold(0.5);
            else if (!live.empty())
              (void)c.get_sequence(live[rng() % live.size()]);
            break;
        }
      }
    });
    // Conservation: distinct referenced blocks + free blocks == total (and every other check).
    std::set<BlockId> referenced;
    for (SeqId s : c.sequence_ids()) {
      const auto info = c.get_sequence(s);
      ASSERT_TRUE(info);
      referenced.insert(info->block_ids.begin(), info->block_ids.end());
    }
    EXPECT_EQ(referenced.size() + c.free_block_count(), blocks);
    EXPECT_EQ(c.validate_unsafe(), "");
    for (SeqId s : c.sequence_ids()) ASSERT_TRUE(c.free(s));
    EXPECT_EQ(c.free_block_count(), blocks);
    EXPECT_EQ(c.stats().total_allocations, c.stats().total_frees);
    EXPECT_EQ(c.validate_unsafe(), "");
    EXPECT_GT(ops.load(), 0u);
  }
}

TEST(CacheMt, mt_strategy_changes_during_eviction) {
  PagedKvCache c(2000, 4, 1, 1);
  std::atomic<bool> stop{false};
  std::thread changer([&] {
    const EvictionStrategy all[] = {
        EvictionStrategy::lru(), EvictionStrategy::lfu(), EvictionStrategy::longest_first(),
        EvictionStrategy::priority(2), EvictionStrategy::streaming_llm(2, 8)};
    for (int i = 0; !stop.load(); ++i) ASSERT_TRUE(c.set_eviction_strategy(all[i % 5]));
  });
  run_threads(4, [&](unsigned t) {
    for (std::uint64_t i = 0; i < 2000; ++i) {
      (void)c.allocate(SeqId{seq_base(t) + i}, 1 + i % 9);
      if (i % 3 == 0) (void)c.evict();
    }
  });
  stop.store(true);
  changer.join();
  EXPECT_EQ(c.validate_unsafe(), "");
}

TEST(CacheMt, mt_pinned_writers_survive_concurrent_eviction) {
  // Writers pin their sequence while writing cookies; evictors run evict() all the time. With
  // pins, no block a writer is writing can be evicted and reused: every cookie reads back.
  const std::size_t bs = 4, blocks = 600;
  PagedKvCache c(blocks, bs, 1, 1);
  Arena arena(blocks, bs);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> evictions{0};
  std::thread evictor([&] {
    while (!stop.load()) {
      if (c.evict()) evictions.fetch_add(1);
      std::this_thread::yield();
    }
  });
  run_threads(kThreads - 1, [&](unsigned t) {
    std::mt19937 rng(t);
    for (std::uint64_t i = 0; i < 150; ++i) {
      SeqId s{seq_base(t) + i};
      if (!c.allocate(s, 1 + rng() % 10)) continue;
      if (!c.pin(s)) continue;  // evicted between allocate and pin: fine, skip it
      auto info = *c.get_sequence(s);
      for (std::uint64_t k = 0; k < info.num_tokens; ++k)
        arena.write(info, k, Arena::cookie(s.value, k));
      for (int step = 0; step < 6; ++step) {
        auto r = c.append(s, 1);
        if (!r) {
          // The cache may be full (pinned sequences cannot be evicted); it must not be gone.
          ASSERT_EQ(r.error().code(), Errc::out_of_memory) << "a pinned sequence vanished";
          break;
        }
        info = *c.get_sequence(s);
        arena.write(info, info.num_tokens - 1, Arena::cookie(s.value, info.num_tokens - 1));
      }
      info = *c.get_sequence(s);
      for (std::uint64_t k = 0; k < info.num_tokens; ++k)
        ASSERT_EQ(arena.read(info, k), Arena::cookie(s.value, k)) << s << " token " << k;
      ASSERT_TRUE(c.unpin(s));
    }
  });
  stop.store(true);
  evictor.join();
  EXPECT_EQ(c.validate_unsafe(), "");
  EXPECT_EQ(c.stats().total_evictions, evictions.load());
}

TEST(CacheMt, mt_held_copy_source_survives_concurrent_free_and_reuse) {
  // The copy source stays intact until copy_done even if every other holder frees it and
  // other threads allocate and write blocks meanwhile.
  for (int round = 0; round < 200; ++round) {
    PagedKvCache::Options o;
    o.hold_copy_sources = true;
    PagedKvCache c(8, 4, 1, 1, o);
    Arena arena(8, 4);
    ASSERT_TRUE(c.allocate(SeqId{1}, 1));
    arena.write(*c.get_sequence(SeqId{1}), 0, Arena::cookie(1, 0));
    ASSERT_TRUE(c.fork(SeqId{1}, SeqId{2}));
    std::latch appended(1);
    std::optional<pkv::CopyOp> op;
    std::thread copier([&] {
      auto r = c.append(SeqId{2}, 1);
      const bool copied = r && r.value();
      if (copied) op = r.value();
      appended.count_down();  // before any check: the other thread waits for it
      ASSERT_TRUE(copied);
      std::this_thread::yield();  // the copy runs late
      arena.copy(*op);
      ASSERT_TRUE(c.copy_done(SeqId{2}));
    });
    std::thread churn([&] {
      appended.wait();
      ASSERT_TRUE(c.free(SeqId{1}));
      for (std::uint64_t i = 10; i < 16; ++i) {
        if (!c.allocate(SeqId{i}, 4)) break;
        auto info = *c.get_sequence(SeqId{i});
        for (std::uint64_t k = 0; k < 4; ++k) arena.write(info, k, Arena::cookie(i, k));
      }
    });
    copier.join();
    churn.join();
    auto info = *c.get_sequence(SeqId{2});
    ASSERT_EQ(arena.read(info, 0), Arena::cookie(1, 0)) << "round " << round;
    EXPECT_EQ(c.validate_unsafe(), "");
  }
}

// Decode steps through append_batch from every thread while one thread evicts now and then:
// every item's outcome is one append()'s, so for each sequence still live at the end the tokens
// its writer counted as appended match its table, each sequence is either live or evicted once,
// and the blocks in use are exactly those the live tables need. Run with hashed and with
// thread-affine placement (the writers' ids carry their thread in bits 32 and up).
void append_batch_steps_with_concurrent_eviction(PagedKvCache::Options options) {
  constexpr unsigned kWriters = 6;
  constexpr std::size_t kSeqs = 24, kSteps = 300, bs = 16, kMaxEvictions = kWriters * kSeqs / 3;
  // Enough blocks for every sequence to reach its final length (1..7 + at most 600 tokens).
  PagedKvCache c(kWriters * kSeqs * (1 + (7 + 2 * kSteps) / bs), bs, 1, 1, options);
  std::vector<std::map<std::uint64_t, std::size_t>> tokens(kWriters);
  for (unsigned t = 0; t < kWriters; ++t)
    for (std::size_t i = 0; i < kSeqs; ++i) {
      ASSERT_TRUE(c.allocate(SeqId{seq_base(t) + i}, 1 + i % 7));
      tokens[t][seq_base(t) + i] = 1 + i % 7;
    }
  std::atomic<unsigned> writers_left{kWriters};
  std::atomic<std::size_t> evicted{0};
  run_threads(kWriters + 1, [&](unsigned t) {
    if (t == kWriters) {  // the evictor: a victim now and then while the writers step
      while (writers_left.load() > 0 && evicted.load() < kMaxEvictions) {
        if (c.evict()) evicted.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      return;
    }
    std::vector<SeqId> ids;
    pkv::AppendBatchOutcome step_out;
    for (std::size_t step = 0; step < kSteps; ++step) {
      // Halfway, wait for an eviction, so that some surely happen while the writers step.
      if (step == kSteps / 2)
        while (evicted.load() == 0) std::this_thread::yield();
      ids.clear();
      for (const auto& [id, n] : tokens[t]) ids.push_back(SeqId{id});
      const std::size_t k = step % 3;  // 0, 1 or 2 tokens
      c.append_batch(ids, k, step_out);
      if (step_out.items != ids.size()) ADD_FAILURE() << "one outcome per item";
      if (!step_out.copies.empty()) ADD_FAILURE() << "no sequence is shared, so no CopyOp";
      const auto out = step_out.per_item();
      for (std::size_t i = 0; i < ids.size() && i < out.size(); ++i) {
        if (out[i]) {
          if (out[i].value()) ADD_FAILURE() << "no sequence is shared, so no CopyOp";
          tokens[t][ids[i].value] += k;
        } else if (out[i].error().code() == Errc::sequence_not_found) {
          tokens[t].erase(ids[i].value);  // evicted by the other thread
        } else {
          ADD_FAILURE() << out[i].error().message();
        }
      }
    }
    writers_left.fetch_sub(1);
  });
  // A sequence may be evicted after its writer's last step: then it is missing here but counted
  // in `evicted`, so live + evicted still covers every sequence exactly once.
  std::size_t live = 0, used = 0;
  for (unsigned t = 0; t < kWriters; ++t) {
    for (const auto& [id, n] : tokens[t]) {
      auto info = c.get_sequence(SeqId{id});
      if (!info) continue;
      EXPECT_EQ(info->num_tokens, n) << "S" << id;
      used += (n + bs - 1) / bs;
      ++live;
    }
  }
  EXPECT_EQ(live + evicted.load(), std::size_t{kWriters} * kSeqs) << "evicted or live, once";
  EXPECT_EQ(c.num_sequences(), live);
  EXPECT_EQ(c.used_block_count(), used);
  EXPECT_EQ(c.validate_unsafe(), "");
}

TEST(CacheMt, mt_append_batch_steps_with_concurrent_eviction_account_for_every_block) {
  append_batch_steps_with_concurrent_eviction(PagedKvCache::Options{});
}

TEST(CacheMt, mt_append_batch_affine_placement_with_concurrent_eviction_account_for_every_block) {
  append_batch_steps_with_concurrent_eviction(PagedKvCache::Options{.affinity_shift = 32});
}

}  // namespace

// ---- fork_many, free_many, truncate -------------------------------------------------------------

TEST(CacheMt, mt_beam_search_with_fork_many_and_free_many_keeps_every_cookie) {
  // Every thread runs beam search from one shared prompt (its shard contended by all): each step
  // forks the parent into 4 beams with fork_many, writes one token per beam (performing the
  // CopyOps), checks the beams' whole contents, and frees the parent and 3 losers (plus an
  // unknown id) with free_many. The prompt's tokens must survive every copy and free.
  const std::size_t bs = 8, blocks = 6000;
  constexpr std::size_t kBeams = 4;
  PagedKvCache c(blocks, bs, 1, 1);
  Arena arena(blocks, bs);
  const SeqId root{1};
  const std::uint64_t prompt = 21;  // last block 5 of 8
  ASSERT_TRUE(c.allocate(root, prompt));
  const auto rinfo = *c.get_sequence(root);
  for (std::uint64_t t = 0; t < prompt; ++t) arena.write(rinfo, t, Arena::cookie(0, t));
  std::barrier start(kThreads);
  run_threads(kThreads, [&](unsigned t) {
    std::mt19937_64 rng(t);
    std::uint64_t next = seq_base(t);
    // Token k of this thread's line is written by the beam that wins step k - prompt.
    std::vector<std::uint64_t> line;
    SeqId parent = root;
    pkv::FreeManyOutcome out;
    start.arrive_and_wait();
    for (int step = 0; step < 60; ++step) {
      SeqId beams[kBeams];
      for (SeqId& b : beams) b = SeqId{next++};
      ASSERT_TRUE(c.fork_many(parent, beams));
      for (std::size_t i = 0; i < kBeams; ++i) {
        auto r = c.append(beams[i], 1);
        ASSERT_TRUE(r);
        if (r.value()) arena.copy(*r.value());
        const auto info = *c.get_sequence(beams[i]);
        arena.write(info, info.num_tokens - 1, Arena::cookie(beams[i].value, info.num_tokens - 1));
      }
      for (std::size_t i = 0; i < kBeams; ++i) {
        const auto info = *c.get_sequence(beams[i]);
        ASSERT_EQ(info.num_tokens, prompt + line.size() + 1);
        for (std::uint64_t k = 0; k < info.num_tokens; ++k) {
          const std::uint64_t want = k < prompt                 ? Arena::cookie(0, k)
                                     : k < prompt + line.size() ? line[k - prompt]
                                                                : Arena::cookie(beams[i].value, k);
          ASSERT_EQ(arena.read(info, k), want) << "thread " << t << " beam " << i << " token " << k;
        }
      }
      const std::size_t winner = rng() % kBeams;
      line.push_back(Arena::cookie(beams[winner].value, prompt + line.size()));
      std::vector<SeqId> gone;
      if (parent != root) gone.push_back(parent);
      gone.push_back(SeqId{seq_base(t) + 1'000'000});  // unknown: reported, the rest freed
      for (std::size_t i = 0; i < kBeams; ++i)
        if (i != winner) gone.push_back(beams[i]);
      c.free_many(gone, out);
      ASSERT_EQ(out.errors.size(), 1u);
      EXPECT_EQ(out.errors[0].error.code(), Errc::sequence_not_found);
      parent = beams[winner];
    }
    const SeqId last[] = {parent};
    EXPECT_TRUE(c.free_many(last).all_freed());
  });
  EXPECT_EQ(c.validate_unsafe(), "");
  EXPECT_EQ(c.num_sequences(), 1u);
  for (BlockId b : rinfo.block_ids) EXPECT_EQ(c.pool().ref_count(b), 1u);
  EXPECT_EQ(c.used_block_count(), rinfo.block_ids.size());
  for (std::uint64_t k = 0; k < prompt; ++k) ASSERT_EQ(arena.read(rinfo, k), Arena::cookie(0, k));
  EXPECT_EQ(c.stats().total_forks, kThreads * 60 * kBeams);
}

TEST(CacheMt, mt_fork_many_and_free_many_over_many_shards_never_deadlock) {
  // Threads fork from each other's sequences into children spread over many shards and free
  // random sets of anyone's ids (known or not) with free_many, while others fork and free one at
  // a time: multi-shard lock sets in every order must not deadlock, and every block is accounted.
  const std::size_t blocks = 20000;
  PagedKvCache c(blocks, 4, 1, 1);
  for (unsigned t = 0; t < kThreads; ++t) ASSERT_TRUE(c.allocate(SeqId{seq_base(t)}, 6));
  std::atomic<std::uint64_t> forks{0};
  run_threads(kThreads, [&](unsigned t) {
    std::mt19937_64 rng(100 + t);
    std::uint64_t next = seq_base(t) + 1;
    pkv::FreeManyOutcome out;
    for (int i = 0; i < 300; ++i) {
      const SeqId src{seq_base(static_cast<unsigned>(rng() % kThreads)) + rng() % 8};
      std::vector<SeqId> kids(1 + rng() % 40);
      for (SeqId& k : kids) k = SeqId{next++};
      if (c.fork_many(src, kids)) {
        forks.fetch_add(kids.size());
        (void)c.append(kids[rng() % kids.size()], 1 + rng() % 5);
      }
      std::vector<SeqId> victims(rng() % 50);
      for (SeqId& v : victims)  // anyone's, never a thread's root (kept as fork sources)
        v = SeqId{seq_base(static_cast<unsigned>(rng() % kThreads)) + 1 +
                  rng() % (next - seq_base(t))};
      c.free_many(victims, out);
      EXPECT_EQ(out.items, victims.size());
      for (const auto& e : out.errors) EXPECT_EQ(e.error.code(), Errc::sequence_not_found);
      if (rng() % 4 == 0) (void)c.fork(src, SeqId{next++});
      if (rng() % 4 == 0) (void)c.free(SeqId{next - 1 - rng() % 30});
    }
  });
  EXPECT_GE(c.stats().total_forks, forks.load());
  EXPECT_EQ(c.validate_unsafe(), "");
  const std::vector<SeqId> all = c.sequence_ids();
  EXPECT_TRUE(c.free_many(all).all_freed());
  EXPECT_EQ(c.used_block_count(), 0u);
  EXPECT_EQ(c.num_sequences(), 0u);
  EXPECT_EQ(c.validate_unsafe(), "");
}

TEST(CacheMt, mt_free_many_releases_blocks_before_a_sequence_is_seen_gone) {
  // The cache is full; one thread frees every sequence with free_many while another waits to
  // see one of them gone and then allocates as many blocks as it held: that must succeed (the
  // blocks of a chunk are free before its shard locks are dropped; no spurious out_of_memory).
  constexpr std::uint64_t kSeqs = 96;  // three chunks
  for (int round = 0; round < 40; ++round) {
    PagedKvCache c(2 * kSeqs, 4, 1, 1);
    std::vector<SeqId> ids;
    for (std::uint64_t i = 0; i < kSeqs; ++i) {
      ids.push_back(SeqId{i + 1});
      ASSERT_TRUE(c.allocate(ids.back(), 8));  // 2 blocks each
    }
    ASSERT_EQ(c.free_block_count(), 0u);
    const SeqId watched = ids[static_cast<std::size_t>(round) % kSeqs];
    std::latch go(2);
    std::thread freer([&] {
      go.arrive_and_wait();
      EXPECT_TRUE(c.free_many(ids).all_freed());
    });
    std::thread taker([&] {
      go.arrive_and_wait();
      while (c.get_sequence(watched)) std::this_thread::yield();
      auto r = c.allocate(SeqId{1'000'000}, 8);
      EXPECT_TRUE(r) << "saw " << watched << " gone but not its blocks: " << r.error().message();
    });
    freer.join();
    taker.join();
    EXPECT_EQ(c.validate_unsafe(), "");
  }
}

TEST(CacheMt, mt_truncate_rejected_drafts_on_shared_blocks_keeps_every_cookie) {
  // Speculative decoding on forks of one prompt: every thread's child appends a draft of a few
  // tokens (cookies written), keeps a random prefix of it (truncate drops the rest) and goes on.
  // Truncating back into a block the other children still hold must never let a write land in
  // it: each child's tokens and the prompt's read back intact.
  const std::size_t bs = 4;
  for (int round = 0; round < 20; ++round) {
    PagedKvCache c(8000, bs, 1, 1);
    Arena arena(8000, bs);
    const SeqId parent{1};
    const std::uint64_t prompt = 11;  // last block 3 of 4
    ASSERT_TRUE(c.allocate(parent, prompt));
    const auto pinfo = *c.get_sequence(parent);
    for (std::uint64_t k = 0; k < prompt; ++k) arena.write(pinfo, k, Arena::cookie(0, k));
    std::barrier start(kThreads);
    run_threads(kThreads, [&](unsigned t) {
      std::mt19937_64 rng(round * 50 + t);
      const SeqId child{seq_base(t)};
      std::vector<std::uint64_t> want(prompt);
      for (std::uint64_t k = 0; k < prompt; ++k) want[k] = Arena::cookie(0, k);
      start.arrive_and_wait();
      ASSERT_TRUE(c.fork(parent, child));
      for (int step = 0; step < 30; ++step) {
        // Now and then fall back into the prompt's shared blocks.
        if (rng() % 6 == 0 && want.size() > 2) {
          const std::size_t cut = 1 + rng() % (want.size() - 1);
          ASSERT_TRUE(c.truncate(child, cut));
          want.resize(want.size() - cut);
        }
        const std::size_t draft = 1 + rng() % 5;
        auto r = c.append(child, draft);
        ASSERT_TRUE(r);
        if (r.value()) arena.copy(*r.value());
        const auto info = *c.get_sequence(child);
        for (std::size_t d = 0; d < draft; ++d) {
          const std::uint64_t k = want.size() + d;
          arena.write(info, k, Arena::cookie(t + 1, k * 100 + static_cast<std::uint64_t>(step)));
        }
        const std::size_t accepted = rng() % (draft + 1);
        auto tr = c.truncate(child, draft - accepted);
        ASSERT_TRUE(tr);
        for (std::size_t d = 0; d < accepted; ++d)
          want.push_back(
              Arena::cookie(t + 1, (want.size()) * 100 + static_cast<std::uint64_t>(step)));
        const auto now = *c.get_sequence(child);
        ASSERT_EQ(now.num_tokens, want.size());
        for (std::uint64_t k = 0; k < now.num_tokens; ++k)
          ASSERT_EQ(arena.read(now, k), want[k]) << "thread " << t << " token " << k;
      }
    });
    for (std::uint64_t k = 0; k < prompt; ++k)
      ASSERT_EQ(arena.read(pinfo, k), Arena::cookie(0, k)) << "prompt token " << k;
    EXPECT_EQ(c.validate_unsafe(), "");
    const std::vector<SeqId> all = c.sequence_ids();
    EXPECT_TRUE(c.free_many(all).all_freed());
    EXPECT_EQ(c.used_block_count(), 0u);
  }
}
