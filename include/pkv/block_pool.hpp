// pkv/block_pool.hpp — a fixed pool of KV blocks with atomic reference counts.
//
// What it does
//   Hands out ids 0..capacity-1 of a fixed set of blocks, each with a reference count. acquire()
//   takes free blocks (count 1), retain() adds references, release() drops them; a block whose
//   count reaches 0 goes back to the free blocks. Usable on its own (PagedKvCache is built on it).
//
// Where free blocks sit
//   * Magazine slots: each thread (up to kMaxCachedThreads live threads) owns one slot, an array of
//     up to slot_magazines * magazine_size free ids; threads beyond that share one more slot.
//     acquire/release of a few blocks touch only the caller's slot and the blocks' reference
//     counts.
//   * The shared stack (tcmalloc's transfer cache, folly IndexedMemPool's local lists): a
//     lock-free Treiber stack of *nodes*, each holding an array of up to B = max(1, magazine_size)
//     free ids. A thread refills its slot by popping one node and, when its slot is full, returns
//     its oldest magazine as one node, so the shared structure moves B blocks per CAS and the only
//     line read before that CAS is the node's link (no walk over blocks). Spare nodes wait on a
//     second stack; there are always enough (the budget is in src/pool/node_stack.hpp). With
//     magazine_size 0 there are no slots and node b holds block b: a Treiber list of blocks.
//
// Progress guarantee
//   * The shared stack is lock-free: 64-bit head words {index:32, tag:32}, links that are atomics
//     accessed relaxed, every head change a CAS that bumps the tag (ABA), no standalone fences.
//   * A slot is guarded by a spin-then-yield lock that is uncontended except while some thread runs
//     the slow path below (or, for the shared slot, another thread beyond kMaxCachedThreads), so
//     the fast path is one uncontended atomic exchange plus one release store on a line no other
//     thread writes. A thread holds blocks in transit between its slot and the shared stack only
//     while holding its slot lock.
//   * No stranding: when a thread's slot and the shared stack together cannot satisfy a request,
//     the slow path locks every slot (in index order, so two slow paths cannot deadlock), takes the
//     whole shared stack with one CAS, and serves the request from everything that is free. So
//     acquire(k) fails only if fewer than k blocks were free at one instant during the call (its
//     linearization point: the CAS that empties the shared stack while all slots are frozen).
//     slow_path_count() says how often this ran.
//   * Pools built with magazine_size 0 have no slots: acquire(k) takes exactly k blocks from the
//     shared list in one CAS (walking k links) or reports a consistent snapshot of fewer.
//   * With the debugging build switch -Ddebug_locked_freelist=true the shared stacks' operations
//     run under one spin lock instead (same structure, plain head updates), so a failure can be
//     pinned to the lock-free stack or ruled out.
//
// Accounting invariants (exact whenever no call is in flight; validate_unsafe() checks them):
//     free_count() == shared_stack_length + sum(slot.count)
//     free_count() + |{b : ref_count(b) > 0}| == capacity()
//     every block with ref_count 0 is in exactly one place: the shared stack or one slot
//     every node on the shared stack holds 1..B ids, at most one of them fewer than B
//     nodes on the shared stack + spare nodes == all nodes (B > 1)
//     total_acquired() - total_released() == used_count()
//
// Memory ordering
//   acquire() publishes a block with a relaxed store of count 1: the caller passes the id to other
//   threads through its own synchronisation (PagedKvCache: a shard mutex). release() drops the
//   count with an acq_rel CAS, so the thread that frees a block has seen every write other holders
//   made before their release. Pushes onto the shared stack are release CASes after the node's
//   relaxed link store and plain id writes they publish; pops load the head with acquire. Every
//   head change is an RMW, so it continues the release sequence of all earlier pushes. A node's
//   ids are read only by the thread that popped it (never on a CAS that may fail).
//
// Bad input (an id out of range, releasing or retaining a block whose count is 0) returns
// Errc::block_not_found and changes nothing; releasing more references than a block holds returns
// Errc::invalid_operation and changes nothing. A release by a thread that does not own a reference
// is a contract violation that can only be detected while the count is 0 (or below the amount).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "pkv/detail/cache_line.hpp"
#include "pkv/detail/spin_lock.hpp"
#include "pkv/types.hpp"

namespace pkv {

inline constexpr std::uint32_t kPoolMaxMagazine = 64;
inline constexpr std::uint32_t kPoolMaxSlotMagazines = 8;
inline constexpr std::uint32_t kPoolMaxBlocks = 0xFFFFFFFEu;

struct BlockPoolOptions {
  /// Blocks moved between a thread's slot and the shared stack at once, i.e. the batch size (at
  /// most kPoolMaxMagazine); 0 turns the per-thread caches off (every call then uses the shared
  /// lock-free stack, in batches of one block).
  std::uint32_t magazine_size = 32;
  /// A thread's slot holds up to slot_magazines * magazine_size free ids
  /// (2..kPoolMaxSlotMagazines); when full it returns its oldest magazine to the shared stack. More
  /// than two lets a slot absorb the ups and downs of one thread's demand (a prompt freed, a longer
  /// one allocated) without passing blocks, and the cache lines of their reference counts, to other
  /// threads.
  std::uint32_t slot_magazines = 8;
};

/// The pool, parameterised on its atomic type so that tests can run it under a deterministic
/// scheduler (tests/dsched/); everyone else uses `BlockPool` = BasicBlockPool<std::atomic>.
template <template <class> class Atom>
class BasicBlockPool {
 public:
  /// Live threads that get their own magazine slot; later threads share one more slot.
  static constexpr std::size_t kMaxCachedThreads = 64;
  /// Largest magazine_size.
  static constexpr std::uint32_t kMaxMagazine = kPoolMaxMagazine;
  /// Largest slot_magazines.
  static constexpr std::uint32_t kMaxSlotMagazines = kPoolMaxSlotMagazines;
  /// Ids are 32-bit and 0xFFFFFFFF is the list terminator.
  static constexpr std::uint32_t kMaxBlocks = kPoolMaxBlocks;

  using Options = BlockPoolOptions;

  /// Creates a pool; `num_blocks` must be in 1..kMaxBlocks, magazine_size <= kMaxMagazine and
  /// slot_magazines in 2..kMaxSlotMagazines.
  static Result<std::unique_ptr<BasicBlockPool>> create(std::size_t num_blocks, Options options);
  static Result<std::unique_ptr<BasicBlockPool>> create(std::size_t num_blocks) {
    return create(num_blocks, Options{});
  }
  /// Same checks as create(); throws std::invalid_argument with the same message on bad input.
  explicit BasicBlockPool(std::size_t num_blocks, Options options);
  explicit BasicBlockPool(std::size_t num_blocks) : BasicBlockPool(num_blocks, Options{}) {}
  ~BasicBlockPool();

  BasicBlockPool(const BasicBlockPool&) = delete;
  BasicBlockPool& operator=(const BasicBlockPool&) = delete;

  /// Thread-safe, wait-free.
  std::size_t capacity() const noexcept { return capacity_; }
  std::uint32_t magazine_size() const noexcept { return magazine_; }

  /// Free blocks (shared stack + all slots). Thread-safe, lock-free (reads one word per slot in
  /// use); exact whenever no call is in flight, otherwise a value some interleaving could produce ±
  /// blocks in transit.
  std::size_t free_count() const noexcept;
  std::size_t used_count() const noexcept { return capacity_ - free_count(); }

  /// Takes one free block with reference count 1. Errc::out_of_memory if none is free.
  /// Thread-safe; fast path touches only this thread's slot (see top of file).
  Result<BlockId> acquire();

  /// Takes exactly `k` free blocks (count 1 each) and appends them to `out`, or takes none and
  /// returns Errc::out_of_memory {requested k, available}. k == 0 succeeds and does nothing.
  Result<void> acquire(std::size_t k, std::vector<BlockId>& out);

  /// Adds a reference to a referenced block. Thread-safe, lock-free.
  Result<void> retain(BlockId id);
  /// Adds `n` references to a referenced block in one atomic update (fork into n children).
  /// Errc::block_not_found if the id is out of range or the block is free, invalid_operation if
  /// the count would overflow 32 bits; either way nothing changes. n == 0 only checks the id.
  /// Thread-safe, lock-free.
  Result<void> retain(BlockId id, std::uint32_t n);
  /// Adds one reference to each block of `ids`; all must be referenced (checked first).
  /// Callers that own a reference to each (PagedKvCache) cannot see the check fail.
  Result<void> retain(std::span<const BlockId> ids) { return retain(ids, 1); }
  /// Adds `n` references to each block of `ids`, one atomic add per block; all must be referenced
  /// and have room for n more (checked first; on failure nothing changes).
  Result<void> retain(std::span<const BlockId> ids, std::uint32_t n);

  /// Drops one reference; returns true when the block went back to the free blocks.
  /// Thread-safe; lock-free except that a freed block is pushed into this thread's slot.
  Result<bool> release(BlockId id);
  /// Drops `n` references in one atomic update; returns true when the count reached 0 (the block
  /// is free again). Errc::block_not_found if the id is out of range or the block is free,
  /// Errc::invalid_operation if it holds fewer than n references; either way nothing changes.
  /// n == 0 only checks the id.
  Result<bool> release(BlockId id, std::uint32_t n);

  /// Drops one reference from each block of `ids` (which the caller owns) and returns the blocks
  /// that reached count 0 to the free blocks under one slot lock. Returns how many were freed.
  /// Ids out of range or at count 0 are reported with Errc::block_not_found after the others
  /// were released; PagedKvCache never passes such ids.
  Result<std::size_t> release(std::span<const BlockId> ids);
  /// Drops counts[i] references from ids[i] for every i (a block may appear more than once; callers
  /// fold repeats into one entry to save atomics) and returns the blocks that reached 0 to the
  /// free blocks under one slot lock. Returns how many were freed. Errc::invalid_argument (nothing
  /// changed) if the spans differ in length. An entry whose id is out of range or free
  /// (block_not_found), or that holds fewer than counts[i] references (invalid_operation), changes
  /// nothing and the first such is reported after the other entries were released.
  Result<std::size_t> release(std::span<const BlockId> ids, std::span<const std::uint32_t> counts);

  /// The block's reference count; 0 for a free block or an id out of range. Thread-safe; an
  /// acquire load, so a caller that reads 1 (sole holder) is ordered after the other holders'
  /// releases and may write the block in place.
  std::uint32_t ref_count(BlockId id) const noexcept;

  /// Blocks handed out / returned since construction. Striped per slot; exact when quiescent.
  std::uint64_t total_acquired() const noexcept;
  std::uint64_t total_released() const noexcept;
  /// How many times the no-stranding slow path (every slot frozen) ran. Thread-safe; relaxed.
  std::uint64_t slow_path_count() const noexcept {
    return overflow_.slow_paths.load(std::memory_order_relaxed);
  }

  /// Full structural check. NOT thread-safe: call only when no other call is in flight.
  /// Returns an empty string when every invariant at the top of this file holds, else the first
  /// violation found.
  std::string validate_unsafe() const;

 private:
  static constexpr std::uint32_t kNil = 0xFFFFFFFFu;
  static constexpr std::size_t kLine = detail::kCacheLine;
  // Slots: one per cached thread, plus one shared by all threads beyond kMaxCachedThreads.
  static constexpr std::size_t kSlots = kMaxCachedThreads + 1;

  // A 64-byte line per block: blocks move between threads' magazines, so over time any two
  // threads' blocks sit next to each other in id order; with 16 counts per line, one thread's
  // hand_out and another's release wrote the same lines (26% of 2-thread prefill samples in
  // those two loads and stores, perf). Padded to kLine (128), BM_prefill at 2 threads went from
  // 6.95M to 10.74M calls/s, beam fork_many from 5.7M to 10.6M, 1 thread lost 6% (medians of 5
  // and 3, interleaved A/B); 64 measured the same as 128 (medians of 5: prefill 2 threads 9.32M
  // vs 8.98M, fork_many 8.27M vs 8.49M) at half the memory, so the prefetcher's line pairs stay
  // shared. 60 bytes a block more: 1.9 MiB for 32k blocks, 57 MiB for a million.
  static constexpr std::size_t kRefLine = 64;
  struct alignas(kRefLine) BlockMeta {
    Atom<std::uint32_t> refs{0};  // reference count; 0 = free
  };
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
                "a stack head {node, tag} is one lock-free 64-bit word");
  static_assert(sizeof(std::uint32_t) * 2 == sizeof(std::uint64_t),
                "node index and tag fill the 64-bit head exactly");

  struct alignas(kLine) Slot {
    detail::BasicSpinLock<Atom> lock;  // guards the fields below (spin then yield)
    Atom<std::uint32_t> count{0};      // ids in items[]; written under lock
    Atom<std::uint64_t> acquired{0};   // stats, written under lock (load+store)
    Atom<std::uint64_t> released{0};   // stats, written under lock (load+store)
    std::uint32_t items[kMaxSlotMagazines * kMaxMagazine];  // guarded by lock
  };

  // Both heads on one line: a flush or refill changes both, one after the other.
  struct alignas(kLine) Shared {
    Atom<std::uint64_t> full{kNil};    // {node low 32, tag high 32}: nodes holding free blocks
    Atom<std::uint64_t> empty{kNil};   // {node, tag}: spare nodes (batch_ > 1 only)
    Atom<std::int64_t> count{0};       // blocks in nodes on `full`; updated after each change
    detail::BasicSpinLock<Atom> lock;  // used only by the debug_locked_freelist build
  };
  struct alignas(kLine) Overflow {  // stats of the slot-less calls (magazine_size 0), slow path
    Atom<std::uint64_t> acquired{0};
    Atom<std::uint64_t> released{0};
    Atom<std::uint64_t> slow_paths{0};
  };

  static std::uint64_t pack(std::uint32_t index, std::uint32_t tag) noexcept {
    return (static_cast<std::uint64_t>(tag) << 32) | index;
  }
  static std::uint32_t index_of(std::uint64_t h) noexcept { return static_cast<std::uint32_t>(h); }
  static std::uint32_t tag_of(std::uint64_t h) noexcept {
    return static_cast<std::uint32_t>(h >> 32);
  }

  Slot* my_slot() noexcept;
  void lock(Slot& s) noexcept;
  static void unlock(Slot& s) noexcept;

  // ---- nodes and the two stacks (defined in src/pool/node_stack.hpp) ----
  std::uint32_t* node_data(std::uint32_t node) noexcept {  // [count, ids[batch_]]
    return node_data_.get() + static_cast<std::size_t>(node) * (batch_ + 1);
  }
  const std::uint32_t* node_data(std::uint32_t node) const noexcept {
    return node_data_.get() + static_cast<std::size_t>(node) * (batch_ + 1);
  }
  // Replaces `head` with next(h) (a head word, or nullopt to leave it unchanged and return false),
  // retrying with the current head while a CAS loses; `success` is the CAS's order on success.
  // In the debug_locked_freelist build: once, under shared_.lock.
  template <class Next>
  bool update_head(Atom<std::uint64_t>& head, std::memory_order success, Next&& next) noexcept;
  // Pops the top node of `head` (kNil if empty): one CAS, reading only the node's link before it.
  std::uint32_t pop_node(Atom<std::uint64_t>& head) noexcept;
  // Pushes the chain first -> ... -> last (already linked through node_next_) with one CAS.
  void push_nodes(Atom<std::uint64_t>& head, std::uint32_t first, std::uint32_t last) noexcept;
  // Pops the top node of `full`, writes its ids to out (at most batch_) and retires the node;
  // returns how many (0: no node).
  std::size_t pop_batch(std::uint32_t* out) noexcept;
  // magazine_size 0 only (batch_ == 1, node = block): pops exactly n blocks in one CAS (walking
  // n links), or none: then returns 0 and sets *seen = how many a consistent snapshot held. It
  // may scribble on out[0..n) even when it returns 0: trust only the first r entries.
  std::size_t pop_exact(std::size_t n, std::uint32_t* out, std::size_t* seen) noexcept;
  // Packs ids[0..n) into nodes of batch_ ids (the last may hold fewer) and pushes them on `full`
  // with one CAS.
  void push_batches(const std::uint32_t* ids, std::size_t n) noexcept;
  // Takes the whole `full` stack with one CAS; appends its ids to out and retires its nodes.
  void take_all_shared(std::vector<std::uint32_t>& out) noexcept;

  // Puts freed ids into this thread's slot (flushing batches to the shared stack) or the stack.
  void put_free(const std::uint32_t* ids, std::size_t n) noexcept;
  // Drops n references: 1 if they were the last (the block is now free; the caller puts it back),
  // 0 if not, -1 if the count was 0, -2 if it was below n. Changes nothing when negative.
  int drop_refs(std::uint32_t id, std::uint32_t n) noexcept;
  Result<void> acquire_slow(std::size_t k, std::vector<BlockId>& out);
  void hand_out(const std::uint32_t* ids, std::size_t n, std::vector<BlockId>& out) noexcept;
  void count_acquired(Slot* s, std::size_t n) noexcept;
  // Sum of one statistic over the slot stripes and the slot-less overflow stripe.
  template <class Counter>
  std::uint64_t sum_stripes(Counter Slot::*slot_counter, const Counter& overflow) const noexcept;
  void count_released(Slot* s, std::size_t n) noexcept;

  const std::size_t capacity_;
  const std::uint32_t magazine_;
  const std::uint32_t batch_;     // ids per node: max(1, magazine_)
  const std::uint32_t slot_cap_;  // ids a slot holds at most: slot_magazines * magazine_
  std::unique_ptr<BlockMeta[]> meta_;
  // Nodes: with batch_ == 1 node b is block b's own (never retired); else enough spare nodes
  // that the `empty` stack never runs dry (the bound is in src/pool/node_stack.hpp).
  std::size_t num_nodes_ = 0;
  std::unique_ptr<Atom<std::uint32_t>[]> node_next_;  // stack link, valid while stacked
  std::unique_ptr<std::uint32_t[]> node_data_;        // per node: count, then ids
  std::unique_ptr<Slot[]> slots_;                     // kSlots slots, or none when magazine_ == 0
  Shared shared_;
  Overflow overflow_;
};

using BlockPool = BasicBlockPool<std::atomic>;
extern template class BasicBlockPool<std::atomic>;  // instantiated once, in src/block_pool.cpp

}  // namespace pkv
