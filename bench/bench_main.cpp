// bench/bench_main.cpp — pkv-bench: every workload of workloads.hpp for pkv and its baselines.
//
//   pkv-bench [google-benchmark flags]     run the suite (e.g. --benchmark_filter=BM_decode_step)
//   pkv-bench --list-callgrind             print the names the --callgrind mode accepts
//   pkv-bench --callgrind=NAME [--iterations=N] [--warmup=W]
//       build NAME's workload for one thread, run W (default N) warm-up steps, then N measured
//       steps with callgrind collection switched on only around them (run under `valgrind
//       --tool=callgrind --collect-atstart=no`); prints "items=<calls>". Instructions per operation
//       = callgrind's total / items (scripts/bench-callgrind.sh does this).
//
// Benchmark names are BM_<workload>[/<variant>]/<impl>; google-benchmark appends
// /real_time/threads:<n>. impl is one of
//   pkv             pkv::PagedKvCache / pkv::BlockPool (default options)
//   pkv_nomag       pkv::BlockPool with magazine_size 0 (per-thread caches off)
//   seed_mutex      baseline::SeedMutexCache (the seed behind one mutex)
//   pkv_batch       pkv::PagedKvCache, the step's appends as one append_batch() call
//   seed_mutex_batch  baseline::SeedMutexCache::append_batch (one lock for the whole step)
//   pkv_many        pkv::PagedKvCache, a beam step's forks / frees as one fork_many / free_many
//   boost_lockfree  baseline::LockfreeStackPool
//   vllm_mutex      baseline::VllmQueuePool
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "baselines/pool_baselines.hpp"
#include "baselines/seed_mutex_cache.hpp"
#include "pkv/pkv.hpp"
#include "prefix_workloads.hpp"
#include "workloads.hpp"

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define PKV_HAVE_CALLGRIND 1
#endif
#endif
#ifndef PKV_HAVE_CALLGRIND
#define CALLGRIND_TOGGLE_COLLECT
#endif

namespace pkv_bench {
namespace {

using Seed = pkv::baseline::SeedMutexCache;
using Pkv = pkv::PagedKvCache;

// ---- running a workload under google-benchmark --------------------------------------------------

// Thread 0 builds the workload before the timed loop; google-benchmark's start barrier (in
// State::StartKeepRunning) publishes it to the other threads, and its stop barrier (in
// FinishKeepRunning) ensures every thread is out of the loop before thread 0 destroys it.
template <class W, class Make>
void run_gb(benchmark::State& state, const Make& make) {
  static std::unique_ptr<W> w;
  if (state.thread_index() == 0) w = make(state.threads());
  std::int64_t items = 0;
  const int tid = state.thread_index();
  for (auto _ : state) items += w->step(tid);
  state.SetItemsProcessed(items);
  if (state.thread_index() == 0) {
    // Workload counters (e.g. BM_prefill's slow_per_1k_alloc): set by thread 0 only, so
    // google-benchmark's sum over threads is the workload's value.
    if constexpr (requires { w->report_counters(state); }) w->report_counters(state);
    w.reset();
  }
}

// ---- running a workload under callgrind ---------------------------------------------------------

std::int64_t g_warmup = -1;  // --warmup=N; default: as many steps as measured

template <class W, class Make>
std::int64_t run_cg(std::int64_t iterations, const Make& make) {
  std::unique_ptr<W> w = make(1);
  const std::int64_t warmup = g_warmup >= 0 ? g_warmup : iterations;
  for (std::int64_t i = 0; i < warmup; ++i) (void)w->step(0);  // warm-up, not collected
  std::int64_t items = 0;
  CALLGRIND_TOGGLE_COLLECT;
  for (std::int64_t i = 0; i < iterations; ++i) items += w->step(0);
  CALLGRIND_TOGGLE_COLLECT;
  return items;
}

std::map<std::string, std::function<std::int64_t(std::int64_t)>>& callgrind_table() {
  static std::map<std::string, std::function<std::int64_t(std::int64_t)>> t;
  return t;
}

enum class Threads { all, one };

template <class W, class Make>
void add(const std::string& name, Threads threads, Make make) {
  auto* b = benchmark::RegisterBenchmark(
      name.c_str(), [make](benchmark::State& state) { run_gb<W>(state, make); });
  if (threads == Threads::all) {
    b->Threads(1)->Threads(2)->Threads(4)->Threads(8);
  } else {
    b->Threads(1);
  }
  b->UseRealTime();
  callgrind_table()[name] = [make](std::int64_t n) { return run_cg<W>(n, make); };
}

// ---- the suite ----------------------------------------------------------------------------------

template <class Pool, class MakePool>
void add_pool(const std::string& impl, MakePool make_pool) {
  for (const std::size_t batch : {std::size_t{1}, std::size_t{16}}) {
    const std::string variant = batch == 1 ? "single" : "batch16";
    add<PoolAllocFree<Pool>>("BM_pool_alloc_free/" + variant + "/" + impl, Threads::all,
                             [make_pool, batch](int t) {
                               return std::make_unique<PoolAllocFree<Pool>>(
                                   t, make_pool(PoolAllocFree<Pool>::kBlocks), batch);
                             });
  }
}

template <class Cache>
void add_cache(const std::string& impl) {
  add<Prefill<Cache>>("BM_prefill/" + impl, Threads::all,
                      [](int t) { return std::make_unique<Prefill<Cache>>(t); });
  add<DecodeStep<Cache>>("BM_decode_step/" + impl, Threads::all,
                         [](int t) { return std::make_unique<DecodeStep<Cache>>(t); });
  add<BeamFork<Cache>>("BM_beam_fork/" + impl, Threads::all,
                       [](int t) { return std::make_unique<BeamFork<Cache>>(t); });
  add<MixedScheduler<Cache>>("BM_mixed_scheduler/" + impl, Threads::all,
                             [](int t) { return std::make_unique<MixedScheduler<Cache>>(t); });
  add<StreamingLlm<Cache>>("BM_streaming_llm/" + impl, Threads::all,
                           [](int t) { return std::make_unique<StreamingLlm<Cache>>(t); });
}

struct NamedStrategy {
  const char* name;
  pkv::EvictionStrategy strategy;
};

template <class Cache>
void add_evict(const std::string& impl) {
  const NamedStrategy strategies[] = {
      {"lru", pkv::EvictionStrategy::lru()},
      {"lfu", pkv::EvictionStrategy::lfu()},
      {"longest_first", pkv::EvictionStrategy::longest_first()},
      {"priority", pkv::EvictionStrategy::priority(8)},
      {"streaming_llm", pkv::EvictionStrategy::streaming_llm(4, 1020)},
  };
  for (const std::size_t n : {std::size_t{1000}, std::size_t{10000}, std::size_t{100000}}) {
    for (const auto& s : strategies) {
      const pkv::EvictionStrategy strategy = s.strategy;
      add<EvictVictim<Cache>>(
          "BM_evict_victim/" + std::string(s.name) + "/" + std::to_string(n) + "/" + impl,
          Threads::one,
          [n, strategy](int t) { return std::make_unique<EvictVictim<Cache>>(t, n, strategy); });
    }
  }
}

// The decode-step API (append_batch) on the two workloads that step a batch.
template <class Cache>
void add_batch(const std::string& impl) {
  add<DecodeStep<Cache, true>>("BM_decode_step/" + impl, Threads::all,
                               [](int t) { return std::make_unique<DecodeStep<Cache, true>>(t); });
  add<MixedScheduler<Cache, true>>("BM_mixed_scheduler/" + impl, Threads::all, [](int t) {
    return std::make_unique<MixedScheduler<Cache, true>>(t);
  });
}

// Prefix caching (prefix_workloads.hpp). BM_block_hashes/<algorithm>: items are blocks hashed.
void add_prefix() {
  for (const pkv::HashAlgorithm a : {pkv::HashAlgorithm::sha256, pkv::HashAlgorithm::xxh3_128}) {
    add<BlockHashes>(std::string("BM_block_hashes/") + pkv::to_string(a), Threads::one,
                     [a](int t) { return std::make_unique<BlockHashes>(t, a); });
  }
  // BM_prefix_{hit,churn}/<algorithm>/<impl>, BM_match_prefix/<algorithm>/<impl>.
  using PrefixBase = pkv::baseline::PrefixBaseline;
  for (const pkv::HashAlgorithm a : {pkv::HashAlgorithm::xxh3_128, pkv::HashAlgorithm::sha256}) {
    const std::string alg = pkv::to_string(a);
    add<PrefixHit<Pkv>>("BM_prefix_hit/" + alg + "/pkv", Threads::all,
                        [a](int t) { return std::make_unique<PrefixHit<Pkv>>(t, a); });
    add<PrefixHit<PrefixBase>>("BM_prefix_hit/" + alg + "/vllm_mutex", Threads::all, [a](int t) {
      return std::make_unique<PrefixHit<PrefixBase>>(t, a);
    });
    add<PrefixChurn<Pkv>>("BM_prefix_churn/" + alg + "/pkv", Threads::all,
                          [a](int t) { return std::make_unique<PrefixChurn<Pkv>>(t, a); });
    add<PrefixChurn<PrefixBase>>(
        "BM_prefix_churn/" + alg + "/vllm_mutex", Threads::all,
        [a](int t) { return std::make_unique<PrefixChurn<PrefixBase>>(t, a); });
    add<MatchPrefix<Pkv>>("BM_match_prefix/" + alg + "/pkv", Threads::all,
                          [a](int t) { return std::make_unique<MatchPrefix<Pkv>>(t, a); });
    add<MatchPrefix<PrefixBase>>(
        "BM_match_prefix/" + alg + "/vllm_mutex", Threads::all,
        [a](int t) { return std::make_unique<MatchPrefix<PrefixBase>>(t, a); });
  }
}

// pkv's calls for k sequences at once (fork_many / free_many) on the workload that forks and
// frees k at a time; the seed has no such call (its users fork and free one at a time).
template <class Cache>
void add_many(const std::string& impl) {
  add<BeamFork<Cache, true>>("BM_beam_fork/" + impl, Threads::all,
                             [](int t) { return std::make_unique<BeamFork<Cache, true>>(t); });
}

void register_all() {
  add_pool<pkv::BlockPool>("pkv",
                           [](std::size_t n) { return std::make_unique<pkv::BlockPool>(n); });
  add_pool<pkv::BlockPool>("pkv_nomag", [](std::size_t n) {
    return std::make_unique<pkv::BlockPool>(n, pkv::BlockPool::Options{.magazine_size = 0});
  });
  add_pool<pkv::baseline::LockfreeStackPool>("boost_lockfree", [](std::size_t n) {
    return std::make_unique<pkv::baseline::LockfreeStackPool>(n);
  });
  add_pool<pkv::baseline::VllmQueuePool>("vllm_mutex", [](std::size_t n) {
    return std::make_unique<pkv::baseline::VllmQueuePool>(n);
  });
  add_cache<Pkv>("pkv");
  add_cache<Seed>("seed_mutex");
  add_batch<Pkv>("pkv_batch");
  add_batch<PkvAffine>("pkv_affine_batch");
  add_batch<Seed>("seed_mutex_batch");
  add_many<Pkv>("pkv_many");
  add_evict<Pkv>("pkv");
  add_evict<Seed>("seed_mutex");
  add_prefix();
}

int callgrind_main(const std::string& name, std::int64_t iterations) {
  auto it = callgrind_table().find(name);
  if (it == callgrind_table().end()) {
    std::fprintf(stderr, "pkv-bench: no workload '%s' (see --list-callgrind)\n", name.c_str());
    return 2;
  }
#ifndef PKV_HAVE_CALLGRIND
  std::fprintf(stderr, "pkv-bench: built without <valgrind/callgrind.h>; counts cover setup\n");
#endif
  const std::int64_t items = it->second(iterations);
  std::printf("name=%s iterations=%lld items=%lld\n", name.c_str(),
              static_cast<long long>(iterations), static_cast<long long>(items));
  return 0;
}

}  // namespace
}  // namespace pkv_bench

int main(int argc, char** argv) {
  pkv_bench::register_all();
  std::string cg;
  std::int64_t iterations = 2000;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strncmp(a, "--callgrind=", 12) == 0) {
      cg = a + 12;
    } else if (std::strncmp(a, "--iterations=", 13) == 0) {
      iterations = std::atoll(a + 13);
    } else if (std::strncmp(a, "--warmup=", 9) == 0) {
      pkv_bench::g_warmup = std::atoll(a + 9);
    } else if (std::strcmp(a, "--list-callgrind") == 0) {
      for (const auto& [name, fn] : pkv_bench::callgrind_table()) std::printf("%s\n", name.c_str());
      return 0;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (!cg.empty()) return pkv_bench::callgrind_main(cg, iterations);
  int rest_argc = static_cast<int>(rest.size());
  rest.push_back(nullptr);
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  benchmark::AddCustomContext("pkv_block_size", std::to_string(pkv_bench::kBlockSize));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
