// pkv/prefix_types.hpp — value types of automatic prefix caching: the options and the counters.
//
// Plain value types (copyable, not synchronised). PrefixCacheStats is a snapshot; a cache keeps
// its counters in its own (striped or locked) form and copies them out.
//
// Counter definitions (every cache that reports them, pkv's and the baselines', counts the same):
//   requests   allocate(seq, prompt, salt) calls that succeeded
//   queries    prompt tokens of those calls (the tokens looked up)
//   hits       leading prompt tokens those calls found cached (the value each returned)
//   published  blocks that became findable (commit / append publishing full blocks)
//   reclaimed  findable blocks held by no sequence that were taken for other data (each loses
//              its hash)
//   verify_failures  lookups whose digest matched but whose stored token ids differed (only with
//              PrefixCachingOptions::verify_tokens; the lookup counts as a miss)
//   hit_rate() = hits / queries (0 when queries == 0)
#pragma once

#include <cstdint>

#include "pkv/block_hash.hpp"

namespace pkv {

/// PagedKvCache::Options::prefix.
struct PrefixCachingOptions {
  bool enabled = true;
  HashAlgorithm hash = HashAlgorithm::sha256;
  /// Keep each cached block's token ids and compare them on a hit (a digest collision can then
  /// never produce a wrong hit).
  bool verify_tokens = false;
};

struct PrefixCacheStats {
  std::uint64_t requests = 0;
  std::uint64_t queries = 0;
  std::uint64_t hits = 0;
  std::uint64_t published = 0;
  std::uint64_t reclaimed = 0;
  std::uint64_t verify_failures = 0;

  double hit_rate() const noexcept {
    return queries == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(queries);
  }
  friend bool operator==(const PrefixCacheStats&, const PrefixCacheStats&) = default;
};

}  // namespace pkv
