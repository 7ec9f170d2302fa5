// src/pool/stats.hpp — the pool's statistics (internal, never installed; included by
// src/block_pool_impl.hpp): acquired / released counters striped per magazine slot, with one
// overflow stripe for slot-less calls, their sums, and free_count(). All relaxed: figures, not
// synchronisation; exact whenever no call is in flight.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "pkv/block_pool.hpp"
#include "pkv/detail/thread_index.hpp"

namespace pkv {

template <template <class> class Atom>
void BasicBlockPool<Atom>::count_acquired(Slot* s, std::size_t n) noexcept {
  if (s != nullptr) {
    // Written only under the slot lock: load+store, no RMW; readers sum relaxed.
    s->acquired.store(s->acquired.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  } else {
    overflow_.acquired.fetch_add(n, std::memory_order_relaxed);  // shared by slot-less threads
  }
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::count_released(Slot* s, std::size_t n) noexcept {
  if (s != nullptr) {
    s->released.store(s->released.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  } else {
    overflow_.released.fetch_add(n, std::memory_order_relaxed);
  }
}

template <template <class> class Atom>
std::size_t BasicBlockPool<Atom>::free_count() const noexcept {
  std::int64_t c = shared_.count.load(std::memory_order_relaxed);
  if (slots_) {
    // Slots at or above the high-water mark were never used by any thread: their count is 0.
    const std::size_t used =
        std::min<std::size_t>(kMaxCachedThreads, detail::thread_index_high_water());
    for (std::size_t i = 0; i < used; ++i) c += slots_[i].count.load(std::memory_order_relaxed);
    c += slots_[kMaxCachedThreads].count.load(std::memory_order_relaxed);  // the shared slot
  }
  if (c < 0) return 0;
  return std::min(static_cast<std::size_t>(c), capacity_);
}

template <template <class> class Atom>
template <class Counter>
std::uint64_t BasicBlockPool<Atom>::sum_stripes(Counter Slot::*slot_counter,
                                                const Counter& overflow) const noexcept {
  std::uint64_t t = overflow.load(std::memory_order_relaxed);
  if (slots_) {
    for (std::size_t i = 0; i < kSlots; ++i)
      t += (slots_[i].*slot_counter).load(std::memory_order_relaxed);
  }
  return t;
}

template <template <class> class Atom>
std::uint64_t BasicBlockPool<Atom>::total_acquired() const noexcept {
  return sum_stripes(&Slot::acquired, overflow_.acquired);
}

template <template <class> class Atom>
std::uint64_t BasicBlockPool<Atom>::total_released() const noexcept {
  return sum_stripes(&Slot::released, overflow_.released);
}

}  // namespace pkv
