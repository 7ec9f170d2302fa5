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

// What a CAS on a shared stack's head adds to its ABA tag: 1, or 0 in the aba mutation build
// (scripts/mutation-check.sh shows the deterministic-schedule test then fails).
inline constexpr std::uint32_t kTagStep = PKV_MUTATION_ABA ? 0u : 1u;

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

// Node budget (batch_ > 1). A node is on `full` (holding 1..batch_ free ids), on `empty`, or held
// by a thread inside a call; a thread holds at most one node at a time, and only while it holds
// its slot lock (the slow path, which holds every slot lock, takes the whole `full` stack and
// retires those nodes before it needs a spare one). Every node on `full` holds exactly batch_
// ids except partial ones, which are made only by a push of ids that are not a multiple of
// batch_: the initial fill and a slow path (each leaves at most one, and the slow path first takes
// every node) and a failed refill's give-back (at most one per thread, which then runs the slow
// path before its call returns). So at any instant
//     nodes holding ids <= capacity / batch_ + 1 + kSlots (partials)
//     nodes held        <= kSlots
// and num_nodes_ = ceil(capacity / batch_) + 2 * kSlots + 2 leaves `empty` never empty when a
// thread needs a node. With batch_ == 1, node b always holds block b and is never retired.
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

// ---- nodes and the two stacks ----
//
// A node's link changes only while the node is off its stack (its holder relinks it before a
// push), and every head change bumps the tag, so an unchanged head word means an unchanged stack:
// links read from a head that a CAS then confirms were a consistent snapshot, even though the
// loads were relaxed and raced with holders relinking. A node's data (count, ids) is plain memory:
// only its holder reads or writes it, ordered by the release push / acquire pop that passed it on.

template <template <class> class Atom>
template <class Next>
bool BasicBlockPool<Atom>::update_head(Atom<std::uint64_t>& head, std::memory_order success,
                                       Next&& next) noexcept {
#if PKV_DEBUG_LOCKED_FREELIST
  (void)success;
  std::lock_guard<detail::BasicSpinLock<Atom>> g(shared_.lock);  // orders every stack user
  const std::uint64_t h = head.load(std::memory_order_relaxed);
  const std::optional<std::uint64_t> n = next(h);
  if (n) head.store(*n, std::memory_order_relaxed);
  return n.has_value();
#else
  // acquire: the links and data of stacked nodes were written before the release CAS that
  // pushed them, and every later head change is an RMW, so this load synchronises with them.
  std::uint64_t h = head.load(std::memory_order_acquire);
  for (;;) {
    const std::optional<std::uint64_t> n = next(h);
    if (!n) return false;
    // acquire on failure: the reloaded head's links must be visible to the next attempt.
    if (head.compare_exchange_weak(h, *n, success, std::memory_order_acquire)) return true;
  }
#endif
}

template <template <class> class Atom>
std::uint32_t BasicBlockPool<Atom>::pop_node(Atom<std::uint64_t>& head) noexcept {
  std::uint32_t top = kNil;
  // acq_rel: we take the node (acquire its data) and continue the release sequence of earlier
  // pushes for later poppers.
  update_head(head, std::memory_order_acq_rel, [&](std::uint64_t h) {
    top = index_of(h);
    if (top == kNil) return std::optional<std::uint64_t>{};
    // The one link read before the CAS; stale if another thread popped `top` meanwhile, and then
    // the CAS fails (tag).
    const std::uint32_t below = node_next_[top].load(std::memory_order_relaxed);
    return std::optional<std::uint64_t>{pack(below, tag_of(h) + detail::kTagStep)};
  });
  return top;
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::push_nodes(Atom<std::uint64_t>& head, std::uint32_t first,
                                      std::uint32_t last) noexcept {
  // release: publishes the chain's links and data to whoever pops it.
  update_head(head, std::memory_order_release, [&](std::uint64_t h) {
    node_next_[last].store(index_of(h), std::memory_order_relaxed);  // released by the CAS
    return std::optional<std::uint64_t>{pack(first, tag_of(h) + detail::kTagStep)};
  });
}

template <template <class> class Atom>
std::size_t BasicBlockPool<Atom>::pop_batch(std::uint32_t* out) noexcept {
  const std::uint32_t node = pop_node(shared_.full);
  if (node == kNil) return 0;
  const std::uint32_t* d = node_data(node);
  // Bounded by batch_ so a corrupted node (only possible in the ABA mutation build, where two
  // threads may hold one node) cannot overrun `out`.
  const std::size_t n = std::min<std::uint32_t>(d[0], batch_);
  std::memcpy(out, d + 1, n * sizeof(std::uint32_t));
  if (batch_ > 1) push_nodes(shared_.empty, node, node);
  shared_.count.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);  // a statistic
  return n;
}

template <template <class> class Atom>
std::size_t BasicBlockPool<Atom>::pop_exact(std::size_t n, std::uint32_t* out,
                                            std::size_t* seen) noexcept {
  assert(batch_ == 1 && "exact pops walk nodes of one block each");
  for (;;) {
    std::uint64_t snapshot = 0;
    std::size_t len = 0;
    // acq_rel: as pop_node.
    const bool popped = update_head(shared_.full, std::memory_order_acq_rel, [&](std::uint64_t h) {
      snapshot = h;
      len = 0;
      std::uint32_t cur = index_of(h);
      // May read links of nodes popped meanwhile (stale, but always an index or kNil); the CAS
      // then fails.
      while (cur != kNil && len < n) {
        out[len++] = cur;  // node b holds block b
        cur = node_next_[cur].load(std::memory_order_relaxed);
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
    if (shared_.full.load(std::memory_order_acquire) != snapshot) continue;
#endif
    if (seen != nullptr) *seen = len;
    return 0;
  }
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::push_batches(const std::uint32_t* ids, std::size_t n) noexcept {
  if (n == 0) return;
  std::uint32_t first = kNil;
  std::uint32_t last = kNil;
  if (batch_ == 1) {
    // Node b is block b's: link the blocks' own nodes in order.
    for (std::size_t i = 0; i + 1 < n; ++i)
      node_next_[ids[i]].store(ids[i + 1], std::memory_order_relaxed);  // released by the push
    first = ids[0];
    last = ids[n - 1];
  } else {
    for (std::size_t start = 0; start < n; start += batch_) {
      const std::uint32_t node = pop_node(shared_.empty);
      if (node == kNil) [[unlikely]]
        detail::assert_failed("spare pool nodes exhausted", "see the node budget", __FILE__,
                              __LINE__);
      std::uint32_t* d = node_data(node);
      d[0] = static_cast<std::uint32_t>(std::min<std::size_t>(batch_, n - start));
      std::memcpy(d + 1, ids + start, d[0] * sizeof(std::uint32_t));
      if (last == kNil) {
        first = node;
      } else {
        node_next_[last].store(node, std::memory_order_relaxed);  // released by the push
      }
      last = node;
    }
  }
  push_nodes(shared_.full, first, last);
  shared_.count.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);  // a statistic
}

template <template <class> class Atom>
void BasicBlockPool<Atom>::take_all_shared(std::vector<std::uint32_t>& out) noexcept {
  std::uint32_t top = kNil;
  // acq_rel: we take every stacked node and must see their links and data (acquire).
  update_head(shared_.full, std::memory_order_acq_rel, [&](std::uint64_t h) {
    top = index_of(h);
    if (top == kNil) return std::optional<std::uint64_t>{};
    return std::optional<std::uint64_t>{pack(kNil, tag_of(h) + detail::kTagStep)};
  });
  // Ours now: links are stable. Bounded by the node count so a corrupted stack (only possible in
  // the ABA mutation build) ends in a failed check instead of a hang.
  std::size_t blocks = 0;
  std::size_t nodes = 0;
  std::uint32_t last = kNil;
  for (std::uint32_t cur = top; cur != kNil && nodes < num_nodes_;
       cur = node_next_[cur].load(std::memory_order_relaxed)) {
    const std::uint32_t* d = node_data(cur);
    const std::size_t c = std::min<std::uint32_t>(d[0], batch_);
    out.insert(out.end(), d + 1, d + 1 + c);
    blocks += c;
    ++nodes;
    last = cur;
  }
  if (batch_ > 1 && top != kNil) push_nodes(shared_.empty, top, last);  // the chain as it is
  shared_.count.fetch_sub(static_cast<std::int64_t>(blocks), std::memory_order_relaxed);
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
  // `full`: nodes of 1..batch_ ids, at most one of them partial (see the node budget); `empty`:
  // the other nodes (batch_ > 1), so no node is lost; with batch_ == 1, node b holds block b.
  std::size_t listed = 0;
  std::size_t nodes = 0;
  std::size_t partial = 0;
  for (std::uint32_t cur = index_of(shared_.full.load(std::memory_order_relaxed)); cur != kNil;
       cur = node_next_[cur].load(std::memory_order_relaxed)) {
    if (cur >= num_nodes_) return "node index out of range on the shared stack";
    if (++nodes > num_nodes_) return "shared stack has a cycle";
    const std::uint32_t* d = node_data(cur);
    if (d[0] == 0 || d[0] > batch_)
      return "node " + std::to_string(cur) + " on the shared stack holds " + std::to_string(d[0]) +
             " ids";
    if (batch_ == 1 && d[1] != cur) return "node " + std::to_string(cur) + " holds another block";
    if (d[0] < batch_ && ++partial > 1) return "more than one partial node on the shared stack";
    for (std::uint32_t j = 0; j < d[0]; ++j)
      if (std::string e = mark(d[1 + j], "shared stack"); !e.empty()) return e;
    listed += d[0];
  }
  if (batch_ > 1) {
    for (std::uint32_t cur = index_of(shared_.empty.load(std::memory_order_relaxed)); cur != kNil;
         cur = node_next_[cur].load(std::memory_order_relaxed)) {
      if (cur >= num_nodes_) return "node index out of range on the spare stack";
      if (++nodes > num_nodes_) return "spare stack has a cycle or shares nodes";
    }
    if (nodes != num_nodes_)
      return std::to_string(num_nodes_ - nodes) + " pool nodes are on neither stack";
  }
  if (static_cast<std::int64_t>(listed) != shared_.count.load(std::memory_order_relaxed))
    return "shared stack length " + std::to_string(listed) + " != its count " +
           std::to_string(shared_.count.load(std::memory_order_relaxed));
  if (slots_) {
    for (std::size_t i = 0; i < kSlots; ++i) {
      const Slot& s = slots_[i];
      std::uint32_t c = s.count.load(std::memory_order_relaxed);
      if (c > slot_cap_) return "slot " + std::to_string(i) + " over capacity";
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
