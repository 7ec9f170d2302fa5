// src/block_pool_impl.hpp — BasicBlockPool's definitions (internal, never installed): the
// configuration checks, construction, the magazine slots, acquire (fast path and the
// no-stranding slow path), retain and release. Its parts by concern:
//   pool/node_stack.hpp   the lock-free stacks of magazine nodes (ABA tag, node budget, ordering)
//   pool/stats.hpp        the per-slot striped counters and free_count()
//   pool/validate.hpp     validate_unsafe(), the full structural check
//
// Included by src/block_pool.cpp, which instantiates BasicBlockPool<std::atomic> once for the
// library, by src/cache/ (so the pool's calls inline there), and by the deterministic-schedule
// tests, which instantiate it with their own atomic. The contract is in pkv/block_pool.hpp.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "pkv/block_pool.hpp"
#include "pkv/detail/thread_index.hpp"
#include "pool/node_stack.hpp"
#include "pool/stats.hpp"
#include "pool/validate.hpp"

namespace pkv {

namespace detail {

inline std::optional<Error> pool_config_error(std::size_t num_blocks, std::size_t magazine_size,
                                              std::size_t slot_magazines) {
  if (num_blocks == 0) return Error::invalid_argument("num_blocks must be at least 1");
  if (num_blocks > kPoolMaxBlocks)
    return Error::invalid_argument("num_blocks " + std::to_string(num_blocks) +
                                   " exceeds the 32-bit block id space (max " +
                                   std::to_string(kPoolMaxBlocks) + ")");
  if (magazine_size > kPoolMaxMagazine)
    return Error::invalid_argument("magazine_size " + std::to_string(magazine_size) + " exceeds " +
                                   std::to_string(kPoolMaxMagazine));
  if (slot_magazines < 2 || slot_magazines > kPoolMaxSlotMagazines)
    return Error::invalid_argument("slot_magazines " + std::to_string(slot_magazines) +
                                   " is not in 2.." + std::to_string(kPoolMaxSlotMagazines));
  return std::nullopt;
}
inline std::optional<Error> pool_config_error(std::size_t num_blocks,
                                              const BlockPoolOptions& options) {
  return pool_config_error(num_blocks, options.magazine_size, options.slot_magazines);
}
// The checks of num_blocks and magazine_size alone (slot_magazines at its default).
inline std::optional<Error> pool_config_error(std::size_t num_blocks, std::size_t magazine_size) {
  return pool_config_error(num_blocks, magazine_size, BlockPoolOptions{}.slot_magazines);
}

// A scratch array of n block ids: on the stack for the common sizes, else a per-thread vector
// reused so the hot path does not allocate (at most one heap-backed instance per thread is live at
// a time: the pool never nests them). Its pointer is taken once: a thread_local's address in a
// shared library costs a __tls_get_addr call each time the compiler re-derives it.
class IdScratch {
 public:
  explicit IdScratch(std::size_t n) : ids_(n <= kOnStack ? local_ : heap(n)) {}
  std::uint32_t* data() noexcept { return ids_; }
  std::uint32_t& operator[](std::size_t i) noexcept { return ids_[i]; }

 private:
  static constexpr std::size_t kOnStack = 320;  // a 4,096-token prompt of 16-token blocks, + batch
  static std::uint32_t* heap(std::size_t n) {
    thread_local std::vector<std::uint32_t> buf;
    if (buf.size() < n) buf.resize(n);
    return buf.data();
  }
  std::uint32_t local_[kOnStack];  // uninitialised on purpose: written before read
  std::uint32_t* ids_;
};

}  // namespace detail

template <template <class> class Atom>
Result<std::unique_ptr<BasicBlockPool<Atom>>> BasicBlockPool<Atom>::create(std::size_t num_blocks,
                                                                           Options options) {
  if (auto e = detail::pool_config_error(num_blocks, options)) return *e;
  return std::make_unique<BasicBlockPool>(num_blocks, options);
}

// num_nodes_ follows the node budget in pool/node_stack.hpp.
template <template <class> class Atom>
BasicBlockPool<Atom>::BasicBlockPool(std::size_t num_blocks, Options options)
    : capacity_(num_blocks),
      magazine_(options.magazine_size),
      batch_(std::max<std::uint32_t>(1, options.magazine_size)),
      slot_cap_(options.slot_magazines * options.magazine_size) {
  if (auto e = detail::pool_config_error(num_blocks, options))
    throw std::invalid_argument(e->message());
  meta_ = std::make_unique<BlockMeta[]>(capacity_);
  const std::size_t filled = (capacity_ + batch_ - 1) / batch_;  // nodes of the initial fill
  num_nodes_ = batch_ == 1 ? capacity_ : filled + 2 * kSlots + 2;
  node_next_ = std::make_unique<Atom<std::uint32_t>[]>(num_nodes_);
  node_data_ = std::make_unique<std::uint32_t[]>(num_nodes_ * (batch_ + 1));
  // `full` starts as nodes 0, 1, ... holding ids [0, B), [B, 2B), ..., so a fresh pool hands out
  // B0, B1, ... and each thread's first magazines are contiguous runs of ids. The rest are spare.
  for (std::size_t n = 0; n < num_nodes_; ++n) {
    std::uint32_t* d = node_data(static_cast<std::uint32_t>(n));
    const std::size_t first = n * batch_;
    d[0] = n < filled ? static_cast<std::uint32_t>(std::min<std::size_t>(batch_, capacity_ - first))
                      : 0;
    for (std::uint32_t j = 0; j < d[0]; ++j) d[1 + j] = static_cast<std::uint32_t>(first + j);
    const bool last_of_its_stack = n + 1 == filled || n + 1 == num_nodes_;
    node_next_[n].store(last_of_its_stack ? kNil : static_cast<std::uint32_t>(n + 1),
                        std::memory_order_relaxed);
  }
  shared_.count.store(static_cast<std::int64_t>(capacity_), std::memory_order_relaxed);
  shared_.full.store(pack(0, 0), std::memory_order_relaxed);
  shared_.empty.store(pack(filled < num_nodes_ ? static_cast<std::uint32_t>(filled) : kNil, 0),
                      std::memory_order_relaxed);
  if (magazine_ > 0) slots_ = std::make_unique<Slot[]>(kSlots);
}

template <template <class> class Atom>
BasicBlockPool<Atom>::~BasicBlockPool() = default;

template <template <class> class Atom>
typename BasicBlockPool<Atom>::Slot* BasicBlockPool<Atom>::my_slot() noexcept {
  if (!slots_) return nullptr;
  // Threads beyond kMaxCachedThreads share the last slot (its lock serialises them).
  return &slots_[std::min<std::size_t>(detail::thread_index(), kMaxCachedThreads)];
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::lock(Slot& s) noexcept {
  s.lock.lock();  // the holder's writes to items/count become visible (acquire)
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::unlock(Slot& s) noexcept {
  s.lock.unlock();  // publishes items/count to the next holder (release)
}

// ---- acquire ----

template <template <class> class Atom>
void BasicBlockPool<Atom>::hand_out(const std::uint32_t* ids, std::size_t n,
                                    std::vector<BlockId>& out) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    assert(meta_[ids[i]].refs.load(std::memory_order_relaxed) == 0 && "free block has refs");
    // relaxed: the caller publishes the id to other threads through its own synchronisation.
    meta_[ids[i]].refs.store(1, std::memory_order_relaxed);
    out.push_back(BlockId{ids[i]});
  }
}

template <template <class> class Atom>
Result<BlockId> BasicBlockPool<Atom>::acquire() {
  std::uint32_t id = kNil;
  if (Slot* s = my_slot()) {
    lock(*s);
    std::uint32_t c = s->count.load(std::memory_order_relaxed);
    if (c == 0) {
      // Refill with one batch from the shared stack; reversed so pops go in stack order.
      std::uint32_t tmp[kMaxMagazine];
      const std::size_t got = pop_batch(tmp);
      for (std::size_t j = 0; j < got; ++j) s->items[j] = tmp[got - 1 - j];
      c = static_cast<std::uint32_t>(got);
    }
    if (c > 0) {
      id = s->items[--c];
      s->count.store(c, std::memory_order_relaxed);
      count_acquired(s, 1);
    }
    unlock(*s);
  } else {
    // pop_exact writes candidates into its output while it walks, also on attempts whose CAS
    // fails: only its return value says whether `got` holds a block.
    std::uint32_t got = kNil;
    if (pop_exact(1, &got, nullptr) == 1) {
      id = got;
      count_acquired(nullptr, 1);
    }
  }
  if (id != kNil) {
    assert(meta_[id].refs.load(std::memory_order_relaxed) == 0);
    meta_[id].refs.store(1, std::memory_order_relaxed);  // published by the caller
    return BlockId{id};
  }
  std::vector<BlockId> one;
  one.reserve(1);
  Result<void> r = acquire_slow(1, one);
  if (!r) return r.error();
  return one.front();
}

template <template <class> class Atom>
Result<void> BasicBlockPool<Atom>::acquire(std::size_t k, std::vector<BlockId>& out) {
  if (k == 0) return {};
  if (k > capacity_) return Error::out_of_memory(k, free_count());
  out.reserve(out.size() + k);
  if (Slot* s = my_slot()) {
    lock(*s);
    const std::uint32_t c = s->count.load(std::memory_order_relaxed);
    if (c >= k) {
      // Take the top k of this thread's magazine, newest last (ids come out in pop order).
      std::uint32_t* top = s->items + (c - k);
      std::reverse(top, top + k);
      hand_out(top, k, out);
      s->count.store(c - static_cast<std::uint32_t>(k), std::memory_order_relaxed);
      count_acquired(s, k);
      unlock(*s);
      return {};
    }
    // Pop whole batches (one CAS each) until the rest is covered. They are behind our slot lock
    // while in transit, so a slow path (which waits for this lock) never misses them.
    const std::size_t need = k - c;
    detail::IdScratch tmp(need + batch_);
    std::size_t got = 0;
    while (got < need) {
      const std::size_t n = pop_batch(tmp.data() + got);
      if (n == 0) break;
      got += n;
    }
    if (got >= need) {
      // Slot blocks first (in pop order), then the batches; the last batch's surplus (fewer than
      // batch_ blocks, and the slot is now empty) refills the slot.
      std::reverse(s->items, s->items + c);
      hand_out(s->items, c, out);
      hand_out(tmp.data(), need, out);
      const std::size_t extra = got - need;
      for (std::size_t j = 0; j < extra; ++j) s->items[j] = tmp[got - 1 - j];
      s->count.store(static_cast<std::uint32_t>(extra), std::memory_order_relaxed);
      count_acquired(s, k);
      unlock(*s);
      return {};
    }
    push_batches(tmp.data(), got);  // not enough here: give back and take the slow path
    unlock(*s);
  } else {
    detail::IdScratch tmp(k);
    std::size_t seen = 0;
    if (pop_exact(k, tmp.data(), &seen) == k) {
      hand_out(tmp.data(), k, out);
      count_acquired(nullptr, k);
      return {};
    }
    // Without magazines the shared stack is every free block: the snapshot is the answer.
    return Error::out_of_memory(k, seen);
  }
  return acquire_slow(k, out);
}

template <template <class> class Atom>
Result<void> BasicBlockPool<Atom>::acquire_slow(std::size_t k, std::vector<BlockId>& out) {
  if (!slots_) {
    detail::IdScratch tmp(k);
    std::size_t seen = 0;
    if (pop_exact(k, tmp.data(), &seen) == k) {
      hand_out(tmp.data(), k, out);
      count_acquired(nullptr, k);
      return {};
    }
    return Error::out_of_memory(k, seen);
  }
  overflow_.slow_paths.fetch_add(1, std::memory_order_relaxed);  // a statistic
  // Freeze every magazine in use, then take the whole shared stack with one CAS. Slots are locked
  // in index order, the slot shared by threads beyond kMaxCachedThreads after the first pass; every
  // slow path starts with slot 0, which serialises slow paths (no deadlock), and fast paths never
  // wait while holding their own lock. Slots at or above the thread-index high-water mark belong
  // to no thread that ever existed, so they are empty; if the mark rose meanwhile (a new thread),
  // freeze its slots too and take the stack again. Threads hold blocks in transit (a popped node,
  // a failed refill's give-back) only under their slot lock, so at the last take the free blocks
  // are exactly the taken stack plus the frozen magazines: that CAS is the linearization point,
  // and nothing free is stranded outside the view.
  Slot& shared_slot = slots_[kMaxCachedThreads];
  std::size_t locked = 0;
  std::vector<std::uint32_t> list;
  for (;;) {
    const std::size_t hw =
        std::min<std::size_t>(kMaxCachedThreads, detail::thread_index_high_water());
    const bool first_pass = locked == 0;
    for (; locked < hw; ++locked) lock(slots_[locked]);
    if (first_pass) lock(shared_slot);
    take_all_shared(list);
    if (std::min<std::size_t>(kMaxCachedThreads, detail::thread_index_high_water()) == locked)
      break;
  }
  std::size_t total = list.size() + shared_slot.count.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < locked; ++i) total += slots_[i].count.load(std::memory_order_relaxed);

  Result<void> result;
  if (total < k) {
    push_batches(list.data(), list.size());
    result = Error::out_of_memory(k, total);
  } else {
    const std::size_t from_list = std::min(k, list.size());
    hand_out(list.data(), from_list, out);
    push_batches(list.data() + from_list, list.size() - from_list);
    std::size_t need = k - from_list;
    Slot* mine = my_slot();
    // Own magazine first, then the others in index order (all frozen by us).
    auto take_from = [&](Slot& s) {
      const std::uint32_t c = s.count.load(std::memory_order_relaxed);
      const auto take = static_cast<std::uint32_t>(std::min<std::size_t>(c, need));
      std::uint32_t* top = s.items + (c - take);
      std::reverse(top, top + take);
      hand_out(top, take, out);
      s.count.store(c - take, std::memory_order_relaxed);
      need -= take;
    };
    if (need > 0) take_from(*mine);
    for (std::size_t i = 0; i < locked && need > 0; ++i)
      if (&slots_[i] != mine) take_from(slots_[i]);
    if (need > 0 && mine != &shared_slot) take_from(shared_slot);
    assert(need == 0);
    count_acquired(mine, k);  // mine is locked by us
  }
  unlock(shared_slot);
  for (std::size_t i = locked; i-- > 0;) unlock(slots_[i]);
  return result;
}

// ---- retain / release ----

template <template <class> class Atom>
std::uint32_t BasicBlockPool<Atom>::ref_count(BlockId id) const noexcept {
  if (id.value >= capacity_) return 0;
  // acquire: pairs with the acq_rel drops in release(). A caller that sees 1 and then writes the
  // block in place (copy-on-write skipped) is ordered after everything the other holders did
  // with the block before letting go of it.
  return meta_[id.value].refs.load(std::memory_order_acquire);
}

template <template <class> class Atom>
Result<void> BasicBlockPool<Atom>::retain(BlockId id, std::uint32_t n) {
  if (id.value >= capacity_) return Error::block_not_found(id);
  Atom<std::uint32_t>& refs = meta_[id.value].refs;
  std::uint32_t r = refs.load(std::memory_order_relaxed);
  do {
    if (r == 0) return Error::block_not_found(id);  // free: nobody may add a reference
    if (r > 0xFFFFFFFFu - n)
      return Error::invalid_operation("reference count of " + to_string(id) + " would overflow");
    if (n == 0) return {};
    // relaxed: the caller holds a reference already; adding some publishes nothing.
  } while (!refs.compare_exchange_weak(r, r + n, std::memory_order_relaxed));
  return {};
}

template <template <class> class Atom>
Result<void> BasicBlockPool<Atom>::retain(BlockId id) {
  return retain(id, 1);
}

template <template <class> class Atom>
Result<void> BasicBlockPool<Atom>::retain(std::span<const BlockId> ids, std::uint32_t n) {
  for (BlockId id : ids) {
    if (id.value >= capacity_) return Error::block_not_found(id);
    const std::uint32_t r = meta_[id.value].refs.load(std::memory_order_relaxed);
    // One compare for both errors: r - 1 wraps to the maximum when r == 0 (a free block).
    if (r - 1 >= 0xFFFFFFFFu - n) [[unlikely]] {
      if (r == 0) return Error::block_not_found(id);
      return Error::invalid_operation("reference count of " + to_string(id) + " would overflow");
    }
  }
  if (n == 0) return {};
  for (BlockId id : ids) {
    // relaxed: the caller holds a reference to each block (checked above).
    meta_[id.value].refs.fetch_add(n, std::memory_order_relaxed);
  }
  return {};
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::put_free(const std::uint32_t* ids, std::size_t n) noexcept {
  if (n == 0) return;
  Slot* s = my_slot();
  if (s == nullptr) {
    push_batches(ids, n);
    count_released(nullptr, n);
    return;
  }
  lock(*s);
  std::uint32_t c = s->count.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n; ++i) {
    if (c == slot_cap_) {
      // Full: move the oldest magazine to the shared stack as one node; keep the recently freed.
      push_batches(s->items, magazine_);
      c -= magazine_;
      std::memmove(s->items, s->items + magazine_, c * sizeof(std::uint32_t));
    }
    s->items[c++] = ids[i];
  }
  s->count.store(c, std::memory_order_relaxed);
  count_released(s, n);
  unlock(*s);
}

template <template <class> class Atom>
inline int BasicBlockPool<Atom>::drop_refs(std::uint32_t id, std::uint32_t n) noexcept {
  Atom<std::uint32_t>& refs = meta_[id].refs;
  // acquire: if these are the last references, the earlier holders' acq_rel drops happened before.
  std::uint32_t r = refs.load(std::memory_order_acquire);
  if (r == n && r != 0) {
    // The caller holds all r references: adding one needs one, so no other thread can change the
    // count now; a plain store frees it (saves an RMW on the common free path).
    refs.store(0, std::memory_order_relaxed);
    return 1;
  }
  while (r != 0) {
    if (r < n) return -2;
    // acq_rel: the thread that drops the last reference sees every holder's earlier writes.
    if (refs.compare_exchange_weak(r, r - n, std::memory_order_acq_rel, std::memory_order_acquire))
      return r == n ? 1 : 0;
  }
  return -1;  // count 0: not referenced
}

template <template <class> class Atom>
Result<bool> BasicBlockPool<Atom>::release(BlockId id, std::uint32_t n) {
  if (id.value >= capacity_) return Error::block_not_found(id);
  if (n == 0) {
    if (meta_[id.value].refs.load(std::memory_order_relaxed) == 0)
      return Error::block_not_found(id);
    return false;
  }
  const int d = drop_refs(id.value, n);
  if (d == -1) return Error::block_not_found(id);
  if (d == -2)
    return Error::invalid_operation("release of " + std::to_string(n) + " references of " +
                                    to_string(id) + ", which holds fewer");
  if (d == 0) return false;
  put_free(&id.value, 1);
  return true;
}

template <template <class> class Atom>
Result<bool> BasicBlockPool<Atom>::release(BlockId id) {
  // release(id, 1) with the constant folded in: this is the pool's hottest call.
  if (id.value >= capacity_) return Error::block_not_found(id);
  const int d = drop_refs(id.value, 1);
  if (d < 0) return Error::block_not_found(id);
  if (d == 0) return false;
  put_free(&id.value, 1);
  return true;
}

template <template <class> class Atom>
Result<std::size_t> BasicBlockPool<Atom>::release(std::span<const BlockId> ids) {
  detail::IdScratch freed(ids.size());
  std::size_t n = 0;
  std::optional<Error> bad;
  for (BlockId id : ids) {
    const int d = id.value < capacity_ ? drop_refs(id.value, 1) : -1;
    if (d < 0) {
      if (!bad) bad = Error::block_not_found(id);
    } else if (d == 1) {
      freed[n++] = id.value;
    }
  }
  put_free(freed.data(), n);
  if (bad) return *bad;
  return n;
}

template <template <class> class Atom>
Result<std::size_t> BasicBlockPool<Atom>::release(std::span<const BlockId> ids,
                                                  std::span<const std::uint32_t> counts) {
  if (ids.size() != counts.size())
    return Error::invalid_argument("release: " + std::to_string(ids.size()) + " ids but " +
                                   std::to_string(counts.size()) + " counts");
  detail::IdScratch freed(ids.size());
  std::size_t n = 0;
  std::optional<Error> bad;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const BlockId id = ids[i];
    int d = -1;
    if (id.value < capacity_) {
      d = counts[i] != 0 ? drop_refs(id.value, counts[i])
                         : (meta_[id.value].refs.load(std::memory_order_relaxed) == 0 ? -1 : 0);
    }
    if (d == -1) {
      if (!bad) bad = Error::block_not_found(id);
    } else if (d == -2) {
      if (!bad)
        bad = Error::invalid_operation("release of " + std::to_string(counts[i]) +
                                       " references of " + to_string(id) + ", which holds fewer");
    } else if (d == 1) {
      freed[n++] = id.value;
    }
  }
  put_free(freed.data(), n);
  if (bad) return *bad;
  return n;
}

}  // namespace pkv
