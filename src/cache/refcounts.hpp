// src/cache/refcounts.hpp — reference-count changes of n at once, for the calls that share or
// drop a block table k times in one go (fork_many, free_many), and the fold that turns the
// blocks of several freed tables into one count per block.
//
// retain_n / release_n are the one place these calls change counts by more than one: one atomic
// RMW of n per block, through the pool's counted retain / release.
//
// Caller holds the shard locks of the tables that own the references (as for every count change
// in the cache: a count drop happens before the lock of its table's shard is released).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
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
/// each of (so the pool's check cannot fail and nothing changes on a failure): one atomic add of
/// n per block (BlockPool::retain(ids, n)).
inline Result<void> retain_n(BlockPool& pool, std::span<const BlockId> ids, std::uint32_t n) {
  return pool.retain(ids, n);
}

/// Drops `r.n` references from each block `r.id` of `refs` (the caller owns them): one atomic
/// sub of n per block (BlockPool::release(id, n)); blocks whose count reaches 0 go back to the
/// free list.
inline void release_n(BlockPool& pool, std::span<const BlockRefs> refs) {
  for (const BlockRefs& r : refs) (void)pool.release(r.id, r.n);  // owned: never an error
}

/// Folds the multiset `ids` (the blocks of several tables) into one BlockRefs per distinct block,
/// appended to `out` in order of first appearance: a block held by m of the tables gets n == m.
/// O(ids) with an open-addressing table in `table` (slot = id << 32 | index into out). Reserve
/// out to ids.size() and table to fold_table_size(ids.size()) before taking anything: then this
/// does not allocate (cannot throw).
inline std::size_t fold_table_size(std::size_t n) noexcept {
  return std::bit_ceil(2 * n + 1);
}
inline void fold_refs(std::span<const BlockId> ids, std::vector<BlockRefs>& out,
                      std::vector<std::uint64_t>& table) {
  constexpr std::uint64_t kEmpty = ~std::uint64_t{0};  // id 0xFFFFFFFF is never a block
  const std::size_t cap = fold_table_size(ids.size());
  const std::size_t mask = cap - 1;
  table.assign(cap, kEmpty);
  const std::size_t base = out.size();
  for (BlockId id : ids) {
    // Fibonacci hashing of the id; linear probing (the table is at most half full).
    std::size_t h = static_cast<std::size_t>((id.value * 0x9E3779B97F4A7C15ull) >> 32) & mask;
    for (;; h = (h + 1) & mask) {
      const std::uint64_t slot = table[h];
      if (slot == kEmpty) {
        table[h] = (std::uint64_t{id.value} << 32) | (out.size() - base);
        out.push_back(BlockRefs{id, 1});
        break;
      }
      if ((slot >> 32) == id.value) {
        ++out[base + (slot & 0xFFFFFFFFu)].n;
        break;
      }
    }
  }
}

/// The blocks of several tables (`lists`: each a table or a held-copy-source list, each without
/// repeats) as one BlockRefs per distinct block, appended to `out`. With `aligned`, lists are
/// the block tables of sequences that never had StreamingLLM applied: such tables hold every
/// block they share at the same index (fork copies a table; append adds at the end or puts a
/// fresh block in the last place; truncate cuts the end), so block j of any list is either block
/// j of lists[0] or no block of lists[0] at all. Then each list is compared with lists[0] index by
/// index (one compare per block, the common case of beams and samples of one request), and only
/// the blocks that differ go through fold_refs. Without `aligned`, everything does. `rest` and
/// `table` are scratch; reserve out and rest to the total length and table to
/// fold_table_size(total) first, and this does not allocate.
inline void fold_tables(std::span<const std::span<const BlockId>> lists, bool aligned,
                        std::vector<BlockRefs>& out, std::vector<BlockId>& rest,
                        std::vector<std::uint64_t>& table) {
  rest.clear();
  std::size_t first = 0;
  if (aligned && !lists.empty()) {
    const std::span<const BlockId> r = lists[0];
    const std::size_t base = out.size();
    // ends[L] counts the lists whose first L blocks equal r's: each adds one reference to every
    // block of r below L (summed from the top below). Scratch from `table`, zeroed.
    table.assign(r.size() + 1, 0);
    std::uint64_t* ends = table.data();
    for (std::size_t k = 1; k < lists.size(); ++k) {
      const std::span<const BlockId> t = lists[k];
      const std::size_t common = std::min(t.size(), r.size());
      // The equal prefix, 64 blocks per memcmp (BlockId is 4 plain bytes), then one at a time.
      std::size_t j = 0;
      while (j + 64 <= common && std::memcmp(&t[j], &r[j], 64 * sizeof(BlockId)) == 0) j += 64;
      while (j < common && t[j] == r[j]) ++j;
      ++ends[j];
      for (; j < common; ++j) {  // after the first difference (the rare case): block by block
        if (t[j] == r[j]) {
          ++ends[j + 1];
          --ends[j];  // wraps and is summed back: counts j alone
        } else {
          rest.push_back(t[j]);
        }
      }
      rest.insert(rest.end(), t.begin() + static_cast<std::ptrdiff_t>(common), t.end());
    }
    out.resize(base + r.size());
    std::uint64_t held = 1;  // lists[0] itself
    for (std::size_t j = r.size(); j-- > 0;) {
      held += ends[j + 1];
      out[base + j] = BlockRefs{r[j], static_cast<std::uint32_t>(held)};
    }
    first = lists.size();
  }
  for (std::size_t k = first; k < lists.size(); ++k)
    rest.insert(rest.end(), lists[k].begin(), lists[k].end());
  if (!rest.empty()) fold_refs(rest, out, table);
}

}  // namespace pkv::detail
