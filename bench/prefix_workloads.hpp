// bench/prefix_workloads.hpp — workloads of automatic prefix caching (issue 11), in the shape of
// workloads.hpp: built once by thread 0, then step(tid) in a loop returning the items it did.
//
//   BlockHashes   pkv::block_hashes over one 2,048-token prompt (128 blocks of kBlockSize tokens)
//                 per step; items = blocks hashed, so ns per block = 1e9 / items_per_second.
//                 The prompt's token ids are fixed pseudo-random values below 2^17 (a tokenizer's
//                 range); each thread hashes the same prompt under its own salt.
//   PrefixHit     allocate a 2,048-token prompt whose first 1,984 tokens (124 blocks) are cached,
//                 then free it; the 64-token tail (4 blocks) is each thread's own and never
//                 committed. items = calls (allocate + free).
//   PrefixChurn   prompts of one of kPrefixes shared 512-token prefixes (uniform choice) plus a
//                 32-token question, over a cache that holds about a fifth of the prefixes:
//                 allocate, commit the prompt, free. Hits race with the reclaims that the misses
//                 cause. items = calls (allocate + commit + free).
//   MatchPrefix   match_prefix of PrefixHit's prompt (no effect). items = calls.
// Each runs on pkv::PagedKvCache and on baseline::PrefixBaseline (vLLM's design behind one
// mutex; it hashes outside its mutex, as vLLM hashes in the request object), same hash function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "baselines/prefix_baseline.hpp"
#include "pkv/block_hash.hpp"
#include "pkv/pkv.hpp"
#include "workloads.hpp"

namespace pkv_bench {

class BlockHashes {
 public:
  static constexpr std::size_t kPromptTokens = 2048;

  BlockHashes(int threads, pkv::HashAlgorithm algorithm) : algorithm_(algorithm) {
    Rng rng{0x5eed};
    tokens_.resize(kPromptTokens);
    for (auto& t : tokens_) t = static_cast<pkv::TokenId>(rng.below(1u << 17));
    for (int t = 0; t < threads; ++t) salts_.push_back("tenant-" + std::to_string(t));
    sinks_.resize(static_cast<std::size_t>(threads) * kSinkStride);
  }

  std::int64_t step(int tid) {
    const auto hashes = pkv::block_hashes(tokens_, kBlockSize, salts_[tid], algorithm_);
    // Keep the result observable (the call is in another library, but be explicit).
    sinks_[static_cast<std::size_t>(tid) * kSinkStride] ^= hashes.back().bytes[0];
    return static_cast<std::int64_t>(hashes.size());
  }

 private:
  static constexpr std::size_t kSinkStride = kLine;  // one cache line per thread's sink
  pkv::HashAlgorithm algorithm_;
  std::vector<pkv::TokenId> tokens_;
  std::vector<std::string> salts_;
  std::vector<std::uint8_t> sinks_;
};

template <class Cache>
std::unique_ptr<Cache> make_prefix_cache(std::size_t num_blocks, pkv::HashAlgorithm algorithm) {
  if constexpr (std::is_same_v<Cache, pkv::PagedKvCache>) {
    pkv::PagedKvCache::Options o;
    o.prefix.hash = algorithm;
    return std::make_unique<Cache>(num_blocks, kBlockSize, kHeads, kHeadDim, o);
  } else {
    return std::make_unique<Cache>(num_blocks, kBlockSize, algorithm);
  }
}

/// The 2,048-token prompt of PrefixHit / MatchPrefix: 1,984 shared tokens, then thread t's own 64.
inline std::vector<pkv::TokenId> hit_prompt(int tid) {
  std::vector<pkv::TokenId> p(2048);
  for (std::size_t i = 0; i < 1984; ++i) p[i] = static_cast<pkv::TokenId>(7 + i);
  for (std::size_t i = 1984; i < 2048; ++i)
    p[i] = static_cast<pkv::TokenId>(100000 + 1000 * static_cast<std::size_t>(tid) + i);
  return p;
}

template <class Cache>
class PrefixHit {
 public:
  PrefixHit(int threads, pkv::HashAlgorithm algorithm)
      : cache_(make_prefix_cache<Cache>(1024, algorithm)), ts_(static_cast<std::size_t>(threads)) {
    // Publish the shared prefix once; a holder keeps it from being reclaimed.
    const std::vector<pkv::TokenId> p = hit_prompt(-1);
    must(cache_->allocate(SeqId{1}, p, {}), "allocate");
    must(cache_->commit(SeqId{1}, 1984), "commit");
    for (int t = 0; t < threads; ++t) {
      ts_[static_cast<std::size_t>(t)].v.prompt = hit_prompt(t);
      ts_[static_cast<std::size_t>(t)].v.next = seq_base(t);
    }
  }
  std::int64_t step(int tid) {
    auto& t = ts_[static_cast<std::size_t>(tid)].v;
    const SeqId s{t.next++};
    if (must(cache_->allocate(s, t.prompt, {}), "allocate") != 1984) {
      std::fprintf(stderr, "pkv-bench: PrefixHit missed its cached prefix\n");
      std::abort();
    }
    must(cache_->free(s), "free");
    return 2;
  }
  Cache* cache() noexcept { return cache_.get(); }

 private:
  struct Thread {
    std::vector<pkv::TokenId> prompt;
    std::uint64_t next = 0;
  };
  std::unique_ptr<Cache> cache_;
  std::vector<Padded<Thread>> ts_;
};

template <class Cache>
class MatchPrefix {
 public:
  MatchPrefix(int threads, pkv::HashAlgorithm algorithm) : hit_(threads, algorithm) {
    for (int t = 0; t < threads; ++t) prompts_.push_back({hit_prompt(t)});
    cache_ = hit_.cache();
  }
  std::int64_t step(int tid) {
    if (cache_->match_prefix(prompts_[static_cast<std::size_t>(tid)].v, {}) != 1984) std::abort();
    return 1;
  }

 private:
  PrefixHit<Cache> hit_;  // the cache with the published prefix
  Cache* cache_ = nullptr;
  std::vector<Padded<std::vector<pkv::TokenId>>> prompts_;
};

template <class Cache>
class PrefixChurn {
 public:
  static constexpr std::size_t kPrefixes = 320;
  static constexpr std::size_t kPrefixTokens = 512;  // 32 blocks
  static constexpr std::size_t kQuestion = 32;
  PrefixChurn(int threads, pkv::HashAlgorithm algorithm)
      // Room for about 64 of the 320 prefixes, plus every thread's live prompt.
      : cache_(make_prefix_cache<Cache>(64 * 34 + 8 * 36, algorithm)),
        ts_(static_cast<std::size_t>(threads)) {
    for (int t = 0; t < threads; ++t) {
      auto& th = ts_[static_cast<std::size_t>(t)].v;
      th.rng = Rng{0xc0ffee + static_cast<std::uint64_t>(t)};
      th.next = seq_base(t);
      th.prompt.resize(kPrefixTokens + kQuestion);
    }
  }
  std::int64_t step(int tid) {
    auto& t = ts_[static_cast<std::size_t>(tid)].v;
    const std::uint32_t k = t.rng.below(kPrefixes);
    for (std::size_t i = 0; i < kPrefixTokens; ++i)
      t.prompt[i] = static_cast<pkv::TokenId>(k * kPrefixTokens + i);
    for (std::size_t i = 0; i < kQuestion; ++i)
      t.prompt[kPrefixTokens + i] = static_cast<pkv::TokenId>(1u << 24) + t.rng.below(1u << 20);
    const SeqId s{t.next++};
    (void)must(cache_->allocate(s, t.prompt, {}), "allocate");
    (void)must(cache_->commit(s, t.prompt.size()), "commit");
    must(cache_->free(s), "free");
    return 3;
  }

 private:
  struct Thread {
    Rng rng{0};
    std::uint64_t next = 0;
    std::vector<pkv::TokenId> prompt;
  };
  std::unique_ptr<Cache> cache_;
  std::vector<Padded<Thread>> ts_;
};

}  // namespace pkv_bench
