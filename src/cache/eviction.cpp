// src/cache/eviction.cpp — victim choice across shards: select_eviction_target, evict and
// evict_to_threshold, around one scan-lock-verify loop (lock_victim_shard).
#include <bit>
#include <mutex>
#include <shared_mutex>

#include "cache/cache_impl.hpp"

namespace pkv {

using detail::Entry;
using detail::Key;
using detail::Shard;
using detail::ShardLock;

namespace {

// If the shard a scan chose changed before we locked it (its head was pinned, touched, freed...),
// the scan is stale: scan again, this many times at most, then take that shard's real head.
constexpr int kRescans = 16;

// The shard whose published head is best (smallest key): a scan of the occupied shards' published
// heads, no lock taken. nullptr if every shard looked empty; *seen = the key it saw.
template <class Impl>  // PagedKvCache::Impl
Shard* best_shard(Impl& m, Key* seen) {
  Shard* best = nullptr;
  for (std::size_t w = 0; w < m.occupied.size(); ++w) {
    // relaxed: a hint (published_head.hpp); the chosen shard is re-read under its lock.
    for (std::uint64_t bits = m.occupied[w].load(std::memory_order_relaxed); bits != 0;
         bits &= bits - 1) {
      Shard& sh = m.shards[w * 64 + static_cast<std::size_t>(std::countr_zero(bits))];
      const Key k = sh.head.read();
      if (k.last_access == detail::kMax64) continue;  // emptied since the bit was read
      if (best == nullptr || k < *seen) {
        best = &sh;
        *seen = k;
      }
    }
  }
  return best;
}

// The victim loop of select and evict: scans the published heads, locks the best shard and, if
// its real index head is still the key the scan saw (or the rescans are used up), calls
// `take(shard, head)` under that shard's lock and returns true. Returns false when no shard has a
// candidate. `take` returns false to scan again (it found the shard emptied meanwhile).
template <class Impl, class Take>  // PagedKvCache::Impl
bool lock_victim_shard(Impl& m, Take&& take) {
  for (int attempt = 0;; ++attempt) {
    Key seen{};
    Shard* sh = best_shard(m, &seen);
    if (sh == nullptr) return false;
    std::lock_guard<ShardLock> g(sh->mu);
    const std::optional<Key> real = sh->index.head();
    if (!real) continue;                                // emptied after the scan
    if (*real != seen && attempt < kRescans) continue;  // stale scan: see kRescans
    if (take(*sh, *real)) return true;
  }
}

}  // namespace

std::optional<SeqId> PagedKvCache::select_eviction_target() const {
  Impl& m = *impl_;
  std::shared_lock<std::shared_mutex> r(m.strategy_mu);
  std::optional<SeqId> victim;
  lock_victim_shard(m, [&](Shard&, const Key& head) {
    victim = SeqId{head.seq};
    return true;
  });
  return victim;
}

Result<SeqId> PagedKvCache::evict() {
  Impl& m = *impl_;
  std::vector<BlockId> released;  // dropped after the unlock
  SeqId victim;
  {
    std::shared_lock<std::shared_mutex> r(m.strategy_mu);
    const bool found = lock_victim_shard(m, [&](Shard& sh, const Key&) {
      // The shard's real head, under its lock: unpinned, live, and removed by this thread only,
      // so it is freed once and never by anyone else.
      Entry* e = sh.index.head_entry(sh.map);
      if (e == nullptr) return false;
      victim = e->id;
      released = sh.take_locked(sh.map.find(victim), [&](std::span<const BlockId> ids,
                                                          bool managed) {
        m.release_blocks(ids, managed);
      });
      PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
      return true;
    });
    if (!found) return Error::invalid_operation("No sequences to evict");
  }
  m.my_stripe().evictions.fetch_add(1, std::memory_order_relaxed);  // striped statistic
  return victim;
}

Result<std::vector<SeqId>> PagedKvCache::evict_to_threshold(double target) {
  if (!(target >= 0.0 && target <= 1.0))
    return Error::invalid_argument("eviction target utilization must be in 0..1");
  std::vector<SeqId> evicted;
  while (utilization() > target) {
    Result<SeqId> r = evict();
    if (!r) break;  // no sequence left
    evicted.push_back(r.value());
  }
  return evicted;
}

}  // namespace pkv
