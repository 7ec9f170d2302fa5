// src/block_pool_impl.hpp — BasicBlockPool's definitions (internal, never installed).
//
// Included by src/block_pool.cpp, which instantiates BasicBlockPool<std::atomic> once for the
// library, and by the deterministic-schedule tests, which instantiate it with their own atomic.
// The contract is in pkv/block_pool.hpp.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "pkv/block_pool.hpp"
#include "pkv/detail/thread_index.hpp"

namespace pkv {

namespace detail {

// What a CAS on the shared list's head adds to its ABA tag: 1, or 0 in the aba mutation build
// (scripts/mutation-check.sh shows the deterministic-schedule test then fails).
inline constexpr std::uint32_t kTagStep = PKV_MUTATION_ABA ? 0u : 1u;

inline std::optional<Error> pool_config_error(std::size_t num_blocks, std::size_t magazine_size) {
  if (num_blocks == 0) return Error::invalid_argument("num_blocks must be at least 1");
  if (num_blocks > kPoolMaxBlocks)
    return Error::invalid_argument("num_blocks " + std::to_string(num_blocks) +
                                   " exceeds the 32-bit block id space (max " +
                                   std::to_string(kPoolMaxBlocks) + ")");
  if (magazine_size > kPoolMaxMagazine)
    return Error::invalid_argument("magazine_size " + std::to_string(magazine_size) + " exceeds " +
                                   std::to_string(kPoolMaxMagazine));
  return std::nullopt;
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
  if (auto e = detail::pool_config_error(num_blocks, options.magazine_size)) return *e;
  return std::make_unique<BasicBlockPool>(num_blocks, options);
}

template <template <class> class Atom>
BasicBlockPool<Atom>::BasicBlockPool(std::size_t num_blocks, Options options)
    : capacity_(num_blocks),
      magazine_(options.magazine_size),
      batch_(std::max<std::uint32_t>(1, options.magazine_size)) {
  if (auto e = detail::pool_config_error(num_blocks, options.magazine_size))
    throw std::invalid_argument(e->message());
  meta_ = std::make_unique<BlockMeta[]>(capacity_);
  // The stack starts as batches [0, B), [B, 2B), ... from the top, so a fresh pool hands out
  // B0, B1, ... and each thread's first magazine is a contiguous run of ids.
  for (std::size_t i = 0; i < capacity_; ++i) {
    const std::size_t batch_end = (i / batch_ + 1) * batch_;
    meta_[i].next.store(
        i + 1 < std::min(batch_end, capacity_) ? static_cast<std::uint32_t>(i + 1) : kNil,
        std::memory_order_relaxed);
    meta_[i].below.store(batch_end < capacity_ ? static_cast<std::uint32_t>(batch_end) : kNil,
                         std::memory_order_relaxed);
  }
  shared_.count.store(static_cast<std::int64_t>(capacity_), std::memory_order_relaxed);
  shared_.head.store(pack(0, 0), std::memory_order_relaxed);
  if (magazine_ > 0) slots_ = std::make_unique<Slot[]>(kMaxCachedThreads);
}

template <template <class> class Atom>
BasicBlockPool<Atom>::~BasicBlockPool() = default;

template <template <class> class Atom>
typename BasicBlockPool<Atom>::Slot* BasicBlockPool<Atom>::my_slot() noexcept {
  if (!slots_) return nullptr;
  std::uint32_t i = detail::thread_index();
  return i < kMaxCachedThreads ? &slots_[i] : nullptr;
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::lock(Slot& s) noexcept {
  s.lock.lock();  // the holder's writes to items/count become visible (acquire)
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::unlock(Slot& s) noexcept {
  s.lock.unlock();  // publishes items/count to the next holder (release)
}

// ---- shared stack of batches ----
//
// Stack order: the top batch's blocks along `next`, then (at its kNil) the batch `below` names, and
// so on down to a `below` of kNil. Links of stacked blocks change only while the blocks are off the
// stack (their owner relinks them before a push), and every head change bumps the tag, so an
// unchanged head word means an unchanged stack: a walk from a head that a CAS then confirms read
// a consistent snapshot, even though its loads were relaxed and raced with owners relinking.

template <template <class> class Atom>
template <class Next>
bool BasicBlockPool<Atom>::update_head(std::memory_order success, Next&& next) noexcept {
#if PKV_DEBUG_LOCKED_FREELIST
  (void)success;
  std::lock_guard<detail::BasicSpinLock<Atom>> g(shared_.lock);  // orders the stack's users
  const std::uint64_t h = shared_.head.load(std::memory_order_relaxed);
  const std::optional<std::uint64_t> n = next(h);
  if (n) shared_.head.store(*n, std::memory_order_relaxed);
  return n.has_value();
#else
  // acquire: the links below the head were stored before the release CAS that pushed them, and
  // every later head change is an RMW, so this load synchronises with all those pushes.
  std::uint64_t h = shared_.head.load(std::memory_order_acquire);
  for (;;) {
    const std::optional<std::uint64_t> n = next(h);
    if (!n) return false;
    // acquire on failure: the reloaded head's links must be visible to the next attempt.
    if (shared_.head.compare_exchange_weak(h, *n, success, std::memory_order_acquire)) return true;
  }
#endif
}

template <template <class> class Atom>
std::uint32_t BasicBlockPool<Atom>::stack_next(std::uint32_t cur) const noexcept {
  // relaxed: links are published by the push CAS and validated by the caller's head CAS.
  const std::uint32_t n = meta_[cur].next.load(std::memory_order_relaxed);
  return n != kNil ? n : meta_[cur].below.load(std::memory_order_relaxed);
}

template <template <class> class Atom>
std::size_t BasicBlockPool<Atom>::pop_batch(std::uint32_t* out) noexcept {
  std::uint32_t top = kNil;
  // acq_rel: we take the batch's blocks (acquire their links) and continue the release sequence
  // of earlier pushes for later poppers.
  const bool popped = update_head(std::memory_order_acq_rel, [&](std::uint64_t h) {
    top = index_of(h);
    if (top == kNil) return std::optional<std::uint64_t>{};
    // The one link read before the CAS; stale if another thread popped `top` meanwhile, and then
    // the CAS fails (tag).
    const std::uint32_t below = meta_[top].below.load(std::memory_order_relaxed);
    return std::optional<std::uint64_t>{pack(below, tag_of(h) + detail::kTagStep)};
  });
  if (!popped) return 0;
  // The batch is ours: its links are stable. Bounded by batch_ so a corrupted chain (only possible
  // in the ABA mutation build) ends in a failed check instead of an overrun.
  std::size_t n = 0;
  for (std::uint32_t cur = top; cur != kNil && n < batch_;
       cur = meta_[cur].next.load(std::memory_order_relaxed)) {
    out[n++] = cur;
  }
  shared_.count.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);  // a statistic
  return n;
}

template <template <class> class Atom>
std::size_t BasicBlockPool<Atom>::pop_exact(std::size_t n, std::uint32_t* out,
                                            std::size_t* seen) noexcept {
  for (;;) {
    std::uint64_t snapshot = 0;
    std::size_t len = 0;
    // acq_rel: as pop_batch.
    const bool popped = update_head(std::memory_order_acq_rel, [&](std::uint64_t h) {
      snapshot = h;
      len = 0;
      std::uint32_t cur = index_of(h);
      // May read links of blocks popped meanwhile (stale, but always an index or kNil); the CAS
      // then fails. Stopping inside a batch leaves its rest on top: its blocks' `below` is that of
      // the whole batch, so the rest is a well-formed batch without any write.
      while (cur != kNil && len < n) {
        out[len++] = cur;
        cur = stack_next(cur);
      }
      if (len < n) return std::optional<std::uint64_t>{};
      return std::optional<std::uint64_t>{pack(cur, tag_of(h) + detail::kTagStep)};
    });
    if (popped) {
      shared_.count.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
      return n;
    }
    // Too few. With the head still equal to the walked snapshot (tag included) no push or pop
    // happened in between, so the stack held exactly `len` blocks at that instant.
#if !PKV_DEBUG_LOCKED_FREELIST
    if (shared_.head.load(std::memory_order_acquire) != snapshot) continue;
#endif
    if (seen != nullptr) *seen = len;
    return 0;
  }
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::push_batches(const std::uint32_t* ids, std::size_t n) noexcept {
  if (n == 0) return;
  // Batches [0, B), [B, 2B), ... of ids, top first. The links are ours until the CAS publishes
  // them (relaxed stores, released by the CAS); only the last batch's `below` depends on the head.
  const std::size_t last = (n - 1) / batch_ * batch_;  // first index of the last batch
  for (std::size_t start = 0; start < n; start += batch_) {
    const std::size_t end = std::min<std::size_t>(n, start + batch_);
    for (std::size_t i = start; i + 1 < end; ++i)
      meta_[ids[i]].next.store(ids[i + 1], std::memory_order_relaxed);
    meta_[ids[end - 1]].next.store(kNil, std::memory_order_relaxed);
    if (start != last) {
      for (std::size_t i = start; i < end; ++i)
        meta_[ids[i]].below.store(ids[end], std::memory_order_relaxed);
    }
  }
  // release: makes the link stores visible to whoever pops these blocks.
  update_head(std::memory_order_release, [&](std::uint64_t h) {
    for (std::size_t i = last; i < n; ++i)
      meta_[ids[i]].below.store(index_of(h), std::memory_order_relaxed);  // released by the CAS
    return std::optional<std::uint64_t>{pack(ids[0], tag_of(h) + detail::kTagStep)};
  });
  shared_.count.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);  // a statistic
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::take_all_shared(std::vector<std::uint32_t>& out) noexcept {
  std::uint32_t top = kNil;
  // acq_rel: we take every stacked block and must see their links (acquire).
  update_head(std::memory_order_acq_rel, [&](std::uint64_t h) {
    top = index_of(h);
    if (top == kNil) return std::optional<std::uint64_t>{};
    return std::optional<std::uint64_t>{pack(kNil, tag_of(h) + detail::kTagStep)};
  });
  std::size_t n = 0;
  // Ours now: links are stable. Bounded by capacity so a corrupted stack (only possible in the
  // ABA mutation build) ends in a failed check instead of a hang.
  for (std::uint32_t cur = top; cur != kNil && n < capacity_; cur = stack_next(cur)) {
    out.push_back(cur);
    ++n;
  }
  shared_.count.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
}

// ---- statistics ----

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
    std::size_t used = std::min<std::size_t>(kMaxCachedThreads, detail::thread_index_high_water());
    for (std::size_t i = 0; i < used; ++i) {
      c += slots_[i].count.load(std::memory_order_relaxed);
    }
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
    for (std::size_t i = 0; i < kMaxCachedThreads; ++i)
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

template <template <class> class Atom>
std::uint32_t BasicBlockPool<Atom>::ref_count(BlockId id) const noexcept {
  if (id.value >= capacity_) return 0;
  // acquire: pairs with the acq_rel drops in release(). A caller that sees 1 and then writes the
  // block in place (copy-on-write skipped) is ordered after everything the other holders did
  // with the block before letting go of it.
  return meta_[id.value].refs.load(std::memory_order_acquire);
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
    if (!slots_) return Error::out_of_memory(k, seen);
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
  // Freeze every magazine in use (index order: two slow paths cannot deadlock; fast paths never
  // wait while holding their own lock), then take the whole shared stack with one CAS. Slots at
  // or above the thread-index high-water mark belong to no thread that ever existed, so they are
  // empty; if the mark rose meanwhile (a new thread), freeze its slots too and take the stack
  // again. A slot's owner moves blocks to and from the stack only under its slot lock and
  // slot-less threads move exactly what they take or free in one CAS, so at the last take the free
  // blocks are exactly the taken stack plus the frozen magazines: that CAS is the linearization
  // point, and nothing free is stranded outside the view.
  std::size_t locked = 0;
  std::vector<std::uint32_t> list;
  for (;;) {
    const std::size_t hw =
        std::min<std::size_t>(kMaxCachedThreads, detail::thread_index_high_water());
    for (; locked < hw; ++locked) lock(slots_[locked]);
    take_all_shared(list);
    if (std::min<std::size_t>(kMaxCachedThreads, detail::thread_index_high_water()) == locked)
      break;
  }
  std::size_t total = list.size();
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
    if (mine != nullptr && need > 0) take_from(*mine);
    for (std::size_t i = 0; i < locked && need > 0; ++i)
      if (&slots_[i] != mine) take_from(slots_[i]);
    assert(need == 0);
    count_acquired(mine, k);  // mine is locked by us (or null: overflow counter)
  }
  for (std::size_t i = locked; i-- > 0;) unlock(slots_[i]);
  return result;
}

// ---- retain / release ----

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
Result<void> BasicBlockPool<Atom>::retain(std::span<const BlockId> ids, std::uint32_t n) {
  for (BlockId id : ids) {
    if (id.value >= capacity_) return Error::block_not_found(id);
    const std::uint32_t r = meta_[id.value].refs.load(std::memory_order_relaxed);
    if (r == 0) return Error::block_not_found(id);
    if (r > 0xFFFFFFFFu - n)
      return Error::invalid_operation("reference count of " + to_string(id) + " would overflow");
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
    if (c == 2 * magazine_) {
      // Full: move the older half to the shared stack as one batch; keep the recently freed half.
      push_batches(s->items, magazine_);
      std::memmove(s->items, s->items + magazine_, magazine_ * sizeof(std::uint32_t));
      c = magazine_;
    }
    s->items[c++] = ids[i];
  }
  s->count.store(c, std::memory_order_relaxed);
  count_released(s, n);
  unlock(*s);
}

template <template <class> class Atom>
int BasicBlockPool<Atom>::drop_refs(std::uint32_t id, std::uint32_t n) noexcept {
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

// ---- validation ----

template <template <class> class Atom>
std::string BasicBlockPool<Atom>::validate_unsafe() const {
  std::vector<std::uint8_t> seen(capacity_, 0);
  std::size_t free_total = 0;
  auto mark = [&](std::uint32_t id, const char* where) -> std::string {
    if (id >= capacity_) return std::string("id out of range in ") + where;
    if (seen[id]) return "B" + std::to_string(id) + " is free twice (" + where + ")";
    seen[id] = 1;
    if (meta_[id].refs.load(std::memory_order_relaxed) != 0)
      return "B" + std::to_string(id) + " is free but has references (" + where + ")";
    ++free_total;
    return {};
  };
  std::size_t listed = 0;
  for (std::uint32_t top = index_of(shared_.head.load(std::memory_order_relaxed)); top != kNil;) {
    // One batch: 1..batch_ blocks along `next`, every one naming the same batch below.
    const std::uint32_t below = meta_[top].below.load(std::memory_order_relaxed);
    std::size_t len = 0;
    for (std::uint32_t cur = top; cur != kNil;
         cur = meta_[cur].next.load(std::memory_order_relaxed)) {
      if (std::string e = mark(cur, "shared stack"); !e.empty()) return e;
      if (++listed > capacity_) return "shared stack has a cycle";
      if (++len > batch_)
        return "a batch on the shared stack holds more than " + std::to_string(batch_) + " blocks";
      if (meta_[cur].below.load(std::memory_order_relaxed) != below)
        return "B" + std::to_string(cur) + " names another batch below than its batch's top";
    }
    top = below;
  }
  if (static_cast<std::int64_t>(listed) != shared_.count.load(std::memory_order_relaxed))
    return "shared stack length " + std::to_string(listed) + " != its count " +
           std::to_string(shared_.count.load(std::memory_order_relaxed));
  if (slots_) {
    for (std::size_t i = 0; i < kMaxCachedThreads; ++i) {
      const Slot& s = slots_[i];
      std::uint32_t c = s.count.load(std::memory_order_relaxed);
      if (c > 2 * magazine_) return "slot " + std::to_string(i) + " over capacity";
      for (std::uint32_t j = 0; j < c; ++j)
        if (std::string e = mark(s.items[j], "magazine"); !e.empty()) return e;
    }
  }
  std::size_t referenced = 0;
  for (std::size_t i = 0; i < capacity_; ++i) {
    std::uint32_t r = meta_[i].refs.load(std::memory_order_relaxed);
    if (r == 0 && !seen[i]) return "B" + std::to_string(i) + " is lost: no references, not free";
    if (r > 0) ++referenced;
  }
  if (free_total + referenced != capacity_) return "free + referenced != capacity";
  if (free_total != free_count()) return "free_count() disagrees with the free structures";
  if (total_acquired() - total_released() != referenced)
    return "acquired - released (" + std::to_string(total_acquired() - total_released()) +
           ") != referenced blocks (" + std::to_string(referenced) + ")";
  return {};
}

}  // namespace pkv
