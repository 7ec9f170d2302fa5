// src/cache/shard.hpp — one of the cache's kShards shards: a lock over a sequence table, its
// victim index and the index head it publishes.
//
// Every member but `size` and the published head's atomics is guarded by `mu`. The operations
// here keep the parts in step; the cache's calls (sequences.cpp, append.cpp, eviction.cpp) lock
// `mu` and use them. Invariants (validate_locked checks them; PKV_ASSERT_EXPENSIVE runs it after
// every locked mutation with -Dexpensive_checks=true):
//   size == map.size()
//   index.size() == #{ e in map : e.pins == 0 },  index holds exactly those entries
//   head.last() == index.head() (kNoKey when empty),  occupancy bit == (index.size() > 0)
//   every entry satisfies entry.hpp's invariants and lives in this shard (placement.hpp)
//   every block of an entry's table or pending list has a holder count >= 1
#pragma once

#include <atomic>
#include <cstddef>
#include <string>
#include <vector>

#include "cache/entry.hpp"
#include "cache/placement.hpp"
#include "cache/published_head.hpp"
#include "cache/seq_map.hpp"
#include "cache/victim_index.hpp"
#include "pkv/block_pool.hpp"
#include "pkv/detail/cache_line.hpp"
#include "pkv/detail/spin_lock.hpp"

namespace pkv::detail {

// Critical sections are a few hundred instructions and never block (see spin_lock.hpp).
using ShardLock = BasicSpinLock<std::atomic>;

struct alignas(kCacheLine) Shard {
  using Map = SeqMap<Entry>;

  // The first cache line holds what append touches: the lock, the table, the index's kind and
  // recency-list ends (static_asserts in cache_impl.hpp).
  mutable ShardLock mu;
  Map map;
  VictimIndex index;
  PublishedHead head;
  std::atomic<std::size_t> size{0};  // map.size(), written under mu, read lock-free (relaxed)

  // ---- keeping map, index and head in step (caller holds mu) ----

  void index_insert(Entry& e) {
    if (e.pins > 0) return;
    index.insert(e);
    head.publish(index.head());
  }
  void index_erase(Entry& e) {
    if (e.pins > 0) return;
    index.erase(e);
    head.publish(index.head());
  }
  /// Applies `mutate` to `e` and re-keys it in the index.
  template <class F>
  void update(Entry& e, F&& mutate) {
    if (e.pins > 0) {
      mutate(e);
      return;
    }
    if (index.update(e, mutate) != VictimIndex::Change::none) head.publish(index.head());
  }
  /// append's recency update: `n` tokens added, accessed at `stamp`.
  [[gnu::always_inline]] void touch_appended(Entry& e, std::uint64_t n, std::uint64_t stamp) {
    if (e.pins > 0) {
      e.num_tokens += n;
      e.last_access = std::max(e.last_access, stamp);
      e.access_count += 1;
      return;
    }
    switch (index.touch_appended(e, n, stamp)) {
      case VictimIndex::Change::none:
        return;
      case VictimIndex::Change::head_touched:
        head.publish_listed_head(*index.list_head());
        return;
      case VictimIndex::Change::any:
        head.publish(index.head());
        return;
    }
  }
  /// Adds a new sequence (absent from the map) to map and index.
  Entry& insert_locked(SeqId id, Entry&& e) {
    Entry& in = map.insert_new(id, std::move(e))->second;
    index_insert(in);
    size.store(map.size(), std::memory_order_relaxed);  // relaxed: a figure (num_sequences)
    return in;
  }
  /// Removes the sequence at `it` (free, evict): out of index and map, and its blocks and held
  /// copy sources dropped by `release(ids, token_mode)` before the caller unlocks, so a thread
  /// that sees the sequence gone (it took this lock after us) also sees its blocks free and gets
  /// no spurious out_of_memory. Returns the dropped ids (the caller frees the vector after
  /// unlocking).
  template <class Release>
  std::vector<BlockId> take_locked(Map::iterator it, Release&& release) {
    Entry& e = it->second;
    const bool managed = e.token_mode;
    std::vector<BlockId> blocks = std::move(e.blocks);
    blocks.insert(blocks.end(), e.pending.begin(), e.pending.end());
    e.pending.clear();
    detach_locked(it);
    release(std::span<const BlockId>(blocks), managed);
    return blocks;
  }
  /// take_locked without the release (free_many folds the releases of several sequences): moves
  /// the sequence's block table into `blocks` and its held copy sources into `pending` (no
  /// allocation), removes it from index and map. The caller releases them before it unlocks.
  void take_tables_locked(Map::iterator it, std::vector<BlockId>& blocks,
                          std::vector<BlockId>& pending) {
    Entry& e = it->second;
    blocks = std::move(e.blocks);
    pending = std::move(e.pending);
    detach_locked(it);
  }
  /// Removes the sequence at `it` from index and map (its references must be moved out first).
  void detach_locked(Map::iterator it) {
    index_erase(it->second);
    map.erase(it);
    size.store(map.size(), std::memory_order_relaxed);  // relaxed: a figure (num_sequences)
  }
  /// Switches the index to strategy `k` (set_eviction_strategy).
  void rebuild(VictimIndex::Kind k) {
    std::vector<Entry*> unpinned;
    for (auto& kv : map)
      if (kv.second.pins == 0) unpinned.push_back(&kv.second);
    index.rebuild(k, std::move(unpinned));
    head.publish(index.head());
  }

  /// The invariants above: "" when they hold. `my_index` is this shard's place in the cache,
  /// `placement` the cache's, `pool` the reference counts. Caller holds mu (or the cache is
  /// quiescent). O(entries + blocks); defined in validate.cpp.
  std::string validate_locked(std::size_t my_index, const Placement& placement,
                              std::size_t block_size, const BlockPool& pool,
                              const class PrefixCache* prefix) const;
};

}  // namespace pkv::detail
