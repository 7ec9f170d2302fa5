// src/cache/refcounts.hpp — reference-count changes of n at once, for the calls that share or
// drop a block table k times in one go (fork_many, free_many), and the fold that turns the
// blocks of several freed tables into one count per block.
//
// retain_n / release_n are the one place these calls change counts by more than one. They are
// meant to be one atomic RMW of n per block (the pool's counted retain / release, added in
// another branch); until then their bodies are the pool's per-reference calls in a loop, so the
// cache's accounting is the same either way and only the cost differs. Swap the bodies (and
// nothing else) when the counted forms land.
//
// Caller holds the shard locks of the tables that own the references (as for every count change
// in the cache: a count drop happens before the lock of its table's shard is released).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "pkv/block_pool.hpp"
#include "pkv/types.hpp"

namespace pkv::detail {

/// `n` references to drop from block `id`.
struct BlockRefs {
  BlockId id;
  std::uint32_t n = 0;
};

/// Adds `n` references to each block of `ids`, which the caller holds at least one reference to
/// each of (so the pool's check cannot fail and nothing changes on a failure). TODO(counted
/// form): one fetch_add of n per block; for now n passes of BlockPool::retain(span).
inline Result<void> retain_n(BlockPool& pool, std::span<const BlockId> ids, std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) {
    // The first pass fails, having changed nothing, or none does (every block stays referenced).
    if (Result<void> r = pool.retain(ids); !r) return r;
  }
  return {};
}

/// Drops `r.n` references from each block `r.id` of `refs` (the caller owns them); blocks whose
/// count reaches 0 go back to the free list. Returns how many went back. TODO(counted form): one
/// fetch_sub of n per block and one put_free for the freed ones; for now one
/// BlockPool::release(id) per reference.
inline std::size_t release_n(BlockPool& pool, std::span<const BlockRefs> refs) {
  std::size_t freed = 0;
  for (const BlockRefs& r : refs) {
    for (std::uint32_t i = 0; i < r.n; ++i) {
      const Result<bool> f = pool.release(r.id);
      freed += f.has_value() && f.value() ? 1 : 0;  // owned references: never an error
    }
  }
  return freed;
}

/// The multiset `ids` (the blocks of several tables, sorted in place) as one BlockRefs per
/// distinct block, appended to `out`: a block held by m of the tables gets n == m. `out` needs
/// no more room than ids.size() (reserve that before taking anything, so this cannot throw).
inline void fold_refs(std::vector<BlockId>& ids, std::vector<BlockRefs>& out) {
  std::sort(ids.begin(), ids.end());
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i + 1;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    out.push_back(BlockRefs{ids[i], static_cast<std::uint32_t>(j - i)});
    i = j;
  }
}

}  // namespace pkv::detail
