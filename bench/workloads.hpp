// bench/workloads.hpp — the benchmark workloads, written once as templates over the cache or pool
// type so pkv and every baseline run exactly the same sequence of calls.
//
// A workload is built once per benchmark run by thread 0 (for all `threads` threads: it creates the
// cache and every thread's initial sequences), then each thread calls step(tid) in a loop. step()
// returns the number of API calls it made ("items"); throughput is items per wall-clock second
// summed over threads. Thread t only ever touches sequence ids in [ (t+1) << 40, (t+2) << 40 ),
// except that evict() in BM_mixed_scheduler may pick any thread's sequence (as a real scheduler's
// preemption would), which the owner then notices as sequence_not_found.
//
// Sizes: block_size 16 tokens, 32 heads, head_dim 128 (the seed's example). Prompt and output
// lengths are drawn (fixed seed) from log-normal distributions shaped like chat traffic:
// prompts median 400 tokens, 16..4096; outputs median 200 tokens, 8..1024.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pkv/detail/cache_line.hpp"
#include "pkv/pkv.hpp"

namespace pkv_bench {

using pkv::BlockId;
using pkv::SeqId;

inline constexpr std::size_t kBlockSize = 16;
inline constexpr std::size_t kHeads = 32;
inline constexpr std::size_t kHeadDim = 128;
inline constexpr std::size_t kLine = pkv::detail::kCacheLine;  // per-thread state padding

// ---- helpers ------------------------------------------------------------------------------------

[[noreturn]] inline void die(const char* what, const pkv::Error& e) {
  std::fprintf(stderr, "pkv-bench: unexpected error in %s: %s\n", what, e.message().c_str());
  std::abort();
}

template <class T>
inline T must(pkv::Result<T> r, const char* what) {
  if (!r) die(what, r.error());
  return std::move(r).value();
}
inline void must(pkv::Result<void> r, const char* what) {
  if (!r) die(what, r.error());
}

/// splitmix64: a tiny deterministic per-thread generator.
struct Rng {
  std::uint64_t s;
  std::uint64_t next() noexcept {
    std::uint64_t x = (s += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  std::uint32_t below(std::uint32_t n) noexcept {
    return static_cast<std::uint32_t>((next() >> 32) * n >> 32);
  }
  double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

/// Fixed tables of lengths (log-normal, Box-Muller on splitmix64; same on every platform).
class Lengths {
 public:
  static constexpr std::size_t kN = 4096;
  static const Lengths& prompts() {
    static const Lengths l(400.0, 0.9, 16, 4096, 1);
    return l;
  }
  static const Lengths& outputs() {
    static const Lengths l(200.0, 0.8, 8, 1024, 2);
    return l;
  }
  std::uint32_t operator[](std::size_t i) const noexcept { return v_[i % kN]; }

 private:
  Lengths(double median, double sigma, std::uint32_t lo, std::uint32_t hi, std::uint64_t seed) {
    Rng r{seed};
    v_.resize(kN);
    for (auto& x : v_) {
      const double u1 = 1.0 - r.uniform();
      const double u2 = r.uniform();
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      const double len = median * std::exp(sigma * z);
      x = static_cast<std::uint32_t>(
          std::clamp(len, static_cast<double>(lo), static_cast<double>(hi)));
    }
  }
  std::vector<std::uint32_t> v_;
};

/// Each benchmark thread makes its own sequence ids: (thread + 1) << kOwnerShift, then + 1, ...
inline constexpr unsigned kOwnerShift = 40;
inline std::uint64_t seq_base(int tid) {
  return (static_cast<std::uint64_t>(tid) + 1) << kOwnerShift;
}

/// pkv configured as a scheduler whose threads own their ids would configure it: the owner in the
/// ids' high bits picks a slice of the shards (PagedKvCache::Options::affinity_shift).
class PkvAffine final : public pkv::PagedKvCache {
 public:
  PkvAffine(std::size_t num_blocks, std::size_t block_size, std::size_t num_heads,
            std::size_t head_dim)
      : PagedKvCache(num_blocks, block_size, num_heads, head_dim,
                     Options{.affinity_shift = kOwnerShift}) {}
};

template <class Cache>
std::unique_ptr<Cache> make_cache(std::size_t num_blocks) {
  return std::make_unique<Cache>(num_blocks, kBlockSize, kHeads, kHeadDim);
}

/// Per-thread state, padded so threads never share a cache line.
template <class T>
struct alignas(kLine) Padded {
  T v;
};

// ---- BM_pool_alloc_free -------------------------------------------------------------------------
// Each step takes `batch` blocks and gives them back (acquire()+release(id) for batch 1, the
// batch calls otherwise). Items = blocks, so 1e9 / items_per_second is ns per block alloc+free.
template <class Pool>
class PoolAllocFree final {
 public:
  static constexpr std::size_t kBlocks = 1 << 16;
  PoolAllocFree(int threads, std::unique_ptr<Pool> pool, std::size_t batch)
      : pool_(std::move(pool)), batch_(batch), ts_(static_cast<std::size_t>(threads)) {
    for (auto& t : ts_) t.v.reserve(batch);
  }
  std::int64_t step(int tid) {
    if (batch_ == 1) {
      const BlockId b = must(pool_->acquire(), "pool acquire");
      (void)must(pool_->release(b), "pool release");
      return 1;
    }
    auto& ids = ts_[static_cast<std::size_t>(tid)].v;
    ids.clear();
    must(pool_->acquire(batch_, ids), "pool acquire(k)");
    (void)must(pool_->release(std::span<const BlockId>(ids)), "pool release(span)");
    return static_cast<std::int64_t>(batch_);
  }

 private:
  std::unique_ptr<Pool> pool_;
  std::size_t batch_;
  std::vector<Padded<std::vector<BlockId>>> ts_;
};

// ---- BM_prefill ---------------------------------------------------------------------------------
// Each thread keeps a ring of kLive prompts: a step frees the oldest and allocates a new prompt of
// a realistic length (mean ~ 30 blocks). Items = allocate + free calls. For pkv, report_counters
// adds slow_per_1k_alloc: how often the pool's no-stranding slow path ran per 1,000 allocates.
template <class Cache>
class Prefill final {
 public:
  static constexpr std::size_t kLive = 8;
  explicit Prefill(int threads)
      : cache_(make_cache<Cache>(static_cast<std::size_t>(threads) * kLive * 256 + 1024)),
        ts_(static_cast<std::size_t>(threads)) {
    for (int t = 0; t < threads; ++t) {
      auto& s = ts_[static_cast<std::size_t>(t)].v;
      s.next = seq_base(t);
      s.cursor = static_cast<std::size_t>(t) * 997;
      s.ring.assign(kLive, 0);
    }
  }
  std::int64_t step(int tid) {
    auto& s = ts_[static_cast<std::size_t>(tid)].v;
    std::int64_t items = 1;
    std::uint64_t& slot = s.ring[s.pos];
    s.pos = (s.pos + 1) % kLive;
    if (slot != 0) {
      must(cache_->free(SeqId{slot}), "prefill free");
      ++items;
    }
    slot = s.next++;
    must(cache_->allocate(SeqId{slot}, Lengths::prompts()[s.cursor++]), "prefill allocate");
    ++s.allocs;
    return items;
  }
  /// Called by one thread after every thread has left the timed loop.
  template <class State>
  void report_counters(State& state) const {
    if constexpr (requires { cache_->pool().slow_path_count(); }) {
      std::uint64_t allocs = 0;
      for (const auto& t : ts_) allocs += t.v.allocs;
      const auto slow = static_cast<double>(cache_->pool().slow_path_count());
      state.counters["slow_per_1k_alloc"] =
          allocs == 0 ? 0.0 : 1000.0 * slow / static_cast<double>(allocs);
    }
  }

 private:
  struct T {
    std::uint64_t next = 0;
    std::size_t cursor = 0;
    std::size_t pos = 0;
    std::vector<std::uint64_t> ring;
    std::uint64_t allocs = 0;
  };
  std::unique_ptr<Cache> cache_;
  std::vector<Padded<T>> ts_;
};

// ---- BM_decode_step -----------------------------------------------------------------------------
// Each thread owns a decode batch of kBatch live sequences; a step appends one token to each. A
// sequence that has produced its output length finishes (free) and a new request takes its place
// (allocate), so the cache stays in a steady state. Items = append + free + allocate calls.
// Batch = true: the step's appends go through one append_batch() call (pkv's decode-step API;
// the mutex baseline's append_batch takes its lock once for the whole step).
template <class Cache, bool Batch = false>
class DecodeStep final {
 public:
  static constexpr std::size_t kBatch = 32;
  explicit DecodeStep(int threads)
      : cache_(make_cache<Cache>(static_cast<std::size_t>(threads) * kBatch * 330 + 1024)),
        ts_(static_cast<std::size_t>(threads)) {
    for (int t = 0; t < threads; ++t) {
      auto& s = ts_[static_cast<std::size_t>(t)].v;
      s.next = seq_base(t);
      s.cursor = static_cast<std::size_t>(t) * 1009;
      for (std::size_t i = 0; i < kBatch; ++i) {
        const SeqId id{s.next++};
        must(cache_->allocate(id, Lengths::prompts()[s.cursor]), "decode setup");
        // Stagger: each starts part-way through its output, so finishes spread over steps.
        const std::uint32_t out = Lengths::outputs()[s.cursor++];
        s.ids.push_back(id);
        s.remaining.push_back(1 + static_cast<std::uint32_t>((out * (i + 1)) / kBatch));
      }
    }
  }
  std::int64_t step(int tid) {
    auto& s = ts_[static_cast<std::size_t>(tid)].v;
    std::int64_t items = 0;
    // The batch is the scheduler's own arrays (ids, tokens remaining); the batch variant hands
    // the ids to append_batch as they are.
    if constexpr (Batch) {
      cache_->append_batch(s.ids, 1, s.results);
      if (!s.results.all_appended()) die("decode append_batch", s.results.errors.front().error);
    }
    for (std::size_t i = 0; i < kBatch; ++i) {
      if constexpr (!Batch) (void)must(cache_->append(s.ids[i], 1), "decode append");
      ++items;
      if (--s.remaining[i] == 0) {
        must(cache_->free(s.ids[i]), "decode free");
        s.ids[i] = SeqId{s.next++};
        must(cache_->allocate(s.ids[i], Lengths::prompts()[s.cursor]), "decode allocate");
        s.remaining[i] = Lengths::outputs()[s.cursor++];
        items += 2;
      }
    }
    return items;
  }

 private:
  struct T {
    std::uint64_t next = 0;
    std::size_t cursor = 0;
    std::vector<SeqId> ids;                // the decode batch
    std::vector<std::uint32_t> remaining;  // tokens each still generates
    pkv::AppendBatchOutcome results;       // Batch: the step's outcomes
  };
  std::unique_ptr<Cache> cache_;
  std::vector<Padded<T>> ts_;
};

// ---- BM_beam_fork -------------------------------------------------------------------------------
// Beam search with kBeams beams: a step forks the current sequence into kBeams candidates,
// appends one token to each (pkv: copy-on-write of the shared partial last block), then frees the
// parent and the losing candidates; the winner becomes the parent. A parent past kMaxTokens
// finishes and a new prompt starts. Items = fork + append + free (+ free/allocate) calls.
// Many = true: the step's forks are one fork_many() call and its frees one free_many() call
// (pkv's API for k children at once); items still count one per child forked and per sequence
// freed, so items/s compares with the per-call variants.
template <class Cache, bool Many = false>
class BeamFork final {
 public:
  static constexpr std::size_t kBeams = 4;
  static constexpr std::size_t kMaxTokens = 2048;
  explicit BeamFork(int threads)
      : cache_(make_cache<Cache>(static_cast<std::size_t>(threads) * 512 + 1024)),
        ts_(static_cast<std::size_t>(threads)) {
    for (int t = 0; t < threads; ++t) {
      auto& s = ts_[static_cast<std::size_t>(t)].v;
      s.next = seq_base(t);
      s.cursor = static_cast<std::size_t>(t) * 1013;
      start(s);
    }
  }
  std::int64_t step(int tid) {
    auto& s = ts_[static_cast<std::size_t>(tid)].v;
    SeqId beams[kBeams];
    for (auto& b : beams) b = SeqId{s.next++};
    if constexpr (Many) {
      must(cache_->fork_many(SeqId{s.parent}, beams), "beam fork_many");
    } else {
      for (const auto b : beams) must(cache_->fork(SeqId{s.parent}, b), "beam fork");
    }
    for (const auto b : beams) (void)must(cache_->append(b, 1), "beam append");
    const std::size_t winner = s.rng.below(kBeams);
    if constexpr (Many) {
      SeqId gone[kBeams];  // the parent and the losers
      gone[0] = SeqId{s.parent};
      for (std::size_t i = 0, j = 1; i < kBeams; ++i) {
        if (i != winner) gone[j++] = beams[i];
      }
      cache_->free_many(gone, s.freed);
      if (!s.freed.all_freed()) die("beam free_many", s.freed.errors.front().error);
    } else {
      must(cache_->free(SeqId{s.parent}), "beam free parent");
      for (std::size_t i = 0; i < kBeams; ++i) {
        if (i != winner) must(cache_->free(beams[i]), "beam free loser");
      }
    }
    s.parent = beams[winner].value;
    std::int64_t items = 3 * kBeams;
    if (++s.tokens > kMaxTokens) {
      must(cache_->free(SeqId{s.parent}), "beam finish");
      start(s);
      items += 2;
    }
    return items;
  }

 private:
  struct T {
    std::uint64_t next = 0;
    std::size_t cursor = 0;
    std::uint64_t parent = 0;
    std::size_t tokens = 0;
    Rng rng{7};
    pkv::FreeManyOutcome freed;  // Many: reused across steps
  };
  void start(T& s) {
    s.parent = s.next++;
    s.tokens = std::min<std::size_t>(Lengths::prompts()[s.cursor++], 1024);
    must(cache_->allocate(SeqId{s.parent}, s.tokens), "beam allocate");
  }
  std::unique_ptr<Cache> cache_;
  std::vector<Padded<T>> ts_;
};

// ---- BM_mixed_scheduler -------------------------------------------------------------------------
// One scheduler iteration of a continuous-batching engine, per thread (each thread plays one
// engine's scheduler over the shared cache):
//   * check the budget (free_block_count) and memory pressure (needs_eviction -> evict);
//   * admit up to 2 waiting requests while fewer than kRunning run (allocate; on out_of_memory
//     evict one victim and retry once, else leave the request waiting);
//   * decode: append one token to every running sequence (out_of_memory: evict and retry once;
//     sequence_not_found: it was preempted by another thread, drop it); finished ones are freed;
//   * every 16th step fork a running sequence (parallel sampling n=2), every 4th step read one
//     block table (get_sequence), every 32nd step look at the would-be victim.
//   * every 64th step preempt one sequence (evict(); the victim may be any thread's).
// The cache is sized so that running out of memory is rare (peak use ~55%): evictions come from
// the fixed preemption rate, so every implementation and thread count does the same work.
// Items = every cache call made.
// Batch = true: the decode phase is one append_batch() call, then the outcomes are handled in
// the same way (retry after evict on out_of_memory, drop on sequence_not_found).
template <class Cache, bool Batch = false>
class MixedScheduler final {
 public:
  static constexpr std::size_t kRunning = 24;
  static constexpr std::size_t kBlocksPerThread = kRunning * 64 + 1024;  // peak use ~55%
  explicit MixedScheduler(int threads)
      : cache_(make_cache<Cache>(static_cast<std::size_t>(threads) * kBlocksPerThread)),
        ts_(static_cast<std::size_t>(threads)) {
    for (int t = 0; t < threads; ++t) {
      auto& s = ts_[static_cast<std::size_t>(t)].v;
      s.next = seq_base(t);
      s.cursor = static_cast<std::size_t>(t) * 1019;
      s.rng.s = static_cast<std::uint64_t>(t) + 11;
      s.ids.reserve(2 * kRunning);
      s.remaining.reserve(2 * kRunning);
    }
  }
  const Cache& cache() const { return *cache_; }
  std::int64_t step(int tid) {
    auto& s = ts_[static_cast<std::size_t>(tid)].v;
    std::int64_t items = 2;
    ++s.steps;
    benchmark_sink(cache_->free_block_count());
    if (cache_->needs_eviction() || s.steps % 64 == 0) {
      // Memory pressure, or (every 64th step) a preemption in favour of a waiting request; the
      // victim may belong to any thread. May fail with "No sequences to evict": fine.
      items += 1;
      (void)cache_->evict();
    }
    // Admission.
    for (int k = 0; k < 2 && s.ids.size() < kRunning; ++k) {
      const SeqId id{s.next++};
      const std::uint32_t prompt = Lengths::prompts()[s.cursor];
      auto r = cache_->allocate(id, prompt);
      ++items;
      if (!r && r.error().code() == pkv::Errc::out_of_memory) {
        (void)cache_->evict();
        r = cache_->allocate(id, prompt);
        items += 2;
      }
      if (!r) {
        if (r.error().code() != pkv::Errc::out_of_memory) die("mixed allocate", r.error());
        break;  // stays waiting
      }
      s.ids.push_back(id);
      s.remaining.push_back(Lengths::outputs()[s.cursor++]);
    }
    // Decode. The running batch is kept as the scheduler's own arrays (ids, tokens remaining),
    // which the batch variant hands to append_batch as they are.
    if constexpr (Batch) cache_->append_batch(s.ids, 1, s.results);
    // Finished and lost sequences leave the running arrays in place (stable compaction), so the
    // per-call and the batch variant make the same calls in the same order.
    std::size_t kept = 0;
    std::size_t next_error =
        0;  // Batch: the first error not yet consumed (errors are in item order)
    for (std::size_t i = 0; i < s.ids.size(); ++i) {
      ++items;
      bool gone = false;
      if constexpr (Batch) {
        const auto& errors = s.results.errors;
        const bool failed = next_error < errors.size() && errors[next_error].item == i;
        gone = decode_one(s.ids[i], s.remaining[i], failed ? &errors[next_error++].error : nullptr,
                          items);
      } else {
        const auto r = cache_->append(s.ids[i], 1);
        gone = decode_one(s.ids[i], s.remaining[i], r ? nullptr : &r.error(), items);
      }
      if (!gone) {
        s.ids[kept] = s.ids[i];
        s.remaining[kept] = s.remaining[i];
        ++kept;
      }
    }
    s.ids.resize(kept);
    s.remaining.resize(kept);

    // Occasional scheduler work.
    if (!s.ids.empty()) {
      const std::size_t pick = s.rng.below(static_cast<std::uint32_t>(s.ids.size()));
      if (s.steps % 16 == 0 && s.ids.size() < 2 * kRunning && s.remaining[pick] > 1) {
        const SeqId child{s.next++};
        ++items;
        if (cache_->fork(s.ids[pick], child)) {
          s.ids.push_back(child);
          s.remaining.push_back(s.remaining[pick]);
        }
      }
      if (s.steps % 4 == 0) {
        ++items;
        auto info = cache_->get_sequence(s.ids[pick]);
        benchmark_sink(info ? info->block_ids.size() : 0);
      }
    }
    if (s.steps % 32 == 0) {
      ++items;
      auto v = cache_->select_eviction_target();
      benchmark_sink(v ? v->value : 0);
    }
    return items;
  }

 private:
  // One running sequence's append outcome (`error` null: appended): on out_of_memory evict and
  // retry once; sequence_not_found means another thread preempted it. Returns true when the
  // sequence leaves the running list (finished, lost or given up).
  bool decode_one(SeqId id, std::uint32_t& remaining, const pkv::Error* error,
                  std::int64_t& items) {
    if (error != nullptr && error->code() == pkv::Errc::out_of_memory) {
      (void)cache_->evict();
      items += 2;
      const auto r = cache_->append(id, 1);
      return settle(id, remaining, r ? nullptr : &r.error(), items);
    }
    return settle(id, remaining, error, items);
  }
  bool settle(SeqId id, std::uint32_t& remaining, const pkv::Error* error, std::int64_t& items) {
    if (error != nullptr) {
      if (error->code() != pkv::Errc::sequence_not_found &&
          error->code() != pkv::Errc::out_of_memory) {
        die("mixed append", *error);
      }
      if (error->code() == pkv::Errc::out_of_memory) {
        (void)cache_->free(id);  // give up on it (a real engine would recompute)
        ++items;
      }
      return true;
    }
    if (--remaining == 0) {
      (void)cache_->free(id);  // sequence_not_found if preempted meanwhile: fine
      ++items;
      return true;
    }
    return false;
  }
  static void benchmark_sink(std::uint64_t v) {
    asm volatile("" : : "r"(v) : "memory");  // keep the result alive, like DoNotOptimize
  }
  struct T {
    std::uint64_t next = 0;
    std::size_t cursor = 0;
    std::uint64_t steps = 0;
    Rng rng{0};
    std::vector<SeqId> ids;                // the running batch
    std::vector<std::uint32_t> remaining;  // tokens each still generates
    pkv::AppendBatchOutcome results;       // Batch: the step's outcomes
  };
  std::unique_ptr<Cache> cache_;
  std::vector<Padded<T>> ts_;
};

// ---- BM_evict_victim ----------------------------------------------------------------------------
// n live sequences of 1..64 tokens with 0..7 extra accesses (LFU counts) and priorities 0..7;
// each step is one select_eviction_target() under the given strategy. Items = selections.
template <class Cache>
class EvictVictim final {
 public:
  EvictVictim(int threads, std::size_t n, pkv::EvictionStrategy strategy)
      : cache_(make_cache<Cache>(n * 4 + 1024)) {
    (void)threads;
    Rng r{42};
    must(cache_->set_eviction_strategy(strategy), "set strategy");
    for (std::size_t i = 0; i < n; ++i) {
      const SeqId id{seq_base(0) + i};
      must(cache_->allocate(id, 1 + r.below(64)), "victim setup allocate");
      for (std::uint32_t k = r.below(8); k > 0; --k) (void)must(cache_->append(id, 0), "touch");
      must(cache_->set_priority(id, r.below(8)), "victim setup priority");
    }
  }
  std::int64_t step(int) {
    auto v = cache_->select_eviction_target();
    if (!v) std::abort();
    asm volatile("" : : "r"(v->value) : "memory");
    return 1;
  }

 private:
  std::unique_ptr<Cache> cache_;
};

// ---- BM_streaming_llm ---------------------------------------------------------------------------
// Each thread decodes kSeqs long-running sequences under StreamingLLM(sink 4, window 1020): a step
// appends one token to each, and a sequence whose kept tokens reach sink + window + 64 gets
// apply_streaming_llm (dropping ~64 tokens = 4 blocks). Items = append + apply calls.
template <class Cache>
class StreamingLlm final {
 public:
  static constexpr std::size_t kSeqs = 8;
  static constexpr std::size_t kSink = 4;
  static constexpr std::size_t kWindow = 1020;
  static constexpr std::size_t kSlack = 64;
  explicit StreamingLlm(int threads)
      : cache_(make_cache<Cache>(static_cast<std::size_t>(threads) * kSeqs * 80 + 1024)),
        ts_(static_cast<std::size_t>(threads)) {
    must(cache_->set_eviction_strategy(pkv::EvictionStrategy::streaming_llm(kSink, kWindow)),
         "set strategy");
    for (int t = 0; t < threads; ++t) {
      auto& s = ts_[static_cast<std::size_t>(t)].v;
      for (std::size_t i = 0; i < kSeqs; ++i) {
        const std::uint64_t id = seq_base(t) + i;
        const std::size_t tokens = kSink + kWindow + (i * kSlack) / kSeqs;  // staggered
        must(cache_->allocate(SeqId{id}, tokens), "streaming setup");
        s.seqs.push_back(Live{id, tokens});
      }
    }
  }
  std::int64_t step(int tid) {
    auto& s = ts_[static_cast<std::size_t>(tid)].v;
    std::int64_t items = 0;
    for (Live& l : s.seqs) {
      (void)must(cache_->append(SeqId{l.id}, 1), "streaming append");
      ++items;
      if (++l.tokens >= kSink + kWindow + kSlack) {
        const std::size_t dropped =
            must(cache_->apply_streaming_llm(SeqId{l.id}, kSink, kWindow), "streaming apply");
        l.tokens -= dropped;
        ++items;
      }
    }
    return items;
  }

 private:
  struct Live {
    std::uint64_t id = 0;
    std::size_t tokens = 0;
  };
  struct T {
    std::vector<Live> seqs;
  };
  std::unique_ptr<Cache> cache_;
  std::vector<Padded<T>> ts_;
};

}  // namespace pkv_bench
