// src/pool/node_stack.hpp — the pool's two Treiber stacks of magazine nodes (internal, never
// installed): `full` (nodes holding free block ids) and `empty` (spare nodes), their 64-bit
// {index, tag} head words and ABA tag, the node budget, and the moves of ids between nodes and the
// stacks (pop_batch, pop_exact, push_batches, take_all_shared). Member definitions of
// BasicBlockPool, included by src/block_pool_impl.hpp; the data members are declared in
// pkv/block_pool.hpp (node_next_, node_data_, shared_).
//
// Progress: lock-free. Each head change is one CAS; a pop reads only the top node's link before
// it (pop_exact: the first n links). In the debug_locked_freelist build every head change runs
// once under shared_.lock instead (same structure, plain head updates).
//
// Memory ordering
//   * A head word is {node index: low 32 bits, tag: high 32 bits}. Every head change is an RMW
//     (CAS) that adds kTagStep to the tag, so it continues the release sequence of every earlier
//     push, and an unchanged head word means an unchanged stack.
//   * Push: the chain's links are stored relaxed (and its data written plainly) by the thread that
//     holds the nodes, then published by the CAS on the head with release.
//   * Pop: the head is loaded with acquire (and reloaded with acquire when a CAS fails), so the
//     links and data of the stacked nodes are visible; the successful CAS is acq_rel: it takes
//     the node and continues the release sequence for later poppers.
//   * Links are atomics accessed relaxed: a node's link changes only while the node is off its
//     stack (its holder relinks it before a push), so a link read from a head that the CAS then
//     confirms was part of a consistent snapshot, even though the load raced with holders
//     relinking; a stale link makes the CAS fail on the tag. Without the tag step (the aba
//     mutation build) such a CAS can succeed and install a stale link.
//   * A node's data (count, ids) is plain memory: only its holder reads or writes it, ordered by
//     the release push / acquire pop that passed the node on; never read on a CAS that may fail.
//   * shared_.count is a statistic, updated relaxed after each change.
//   * debug_locked_freelist: shared_.lock (acquire on lock, release on unlock) orders every stack
//     user; the heads are then loaded and stored relaxed under it.
//
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
// and num_nodes_ = ceil(capacity / batch_) + 2 * kSlots + 2 (set by the constructor) leaves
// `empty` never empty when a thread needs a node. With batch_ == 1, node b always holds block b
// and is never retired.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "config.hpp"
#include "pkv/block_pool.hpp"

namespace pkv {

namespace detail {

// What a CAS on a shared stack's head adds to its ABA tag: 1, or 0 in the aba mutation build
// (scripts/mutation-check.sh shows the deterministic-schedule test then fails).
inline constexpr std::uint32_t kTagStep = PKV_MUTATION_ABA ? 0u : 1u;

}  // namespace detail

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

}  // namespace pkv
