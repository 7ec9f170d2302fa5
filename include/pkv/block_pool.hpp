// pkv/block_pool.hpp — a fixed pool of KV blocks with atomic reference counts.
//
// What it does
//   Hands out ids 0..capacity-1 of a fixed set of blocks, each with a reference count. acquire()
//   takes free blocks (count 1), retain() adds a reference, release() drops one; a block whose
//   count reaches 0 goes back to the free list. Usable on its own (PagedKvCache is built on it).
//
// Progress guarantee
//   * The shared free list is a lock-free Treiber stack: a 64-bit head word {index:32, tag:32},
//     `next` links that are atomics accessed relaxed, every head change a CAS that bumps the tag
//     (ABA), and no standalone fences. Batches move on and off it with one CAS each.
//   * Each thread (up to kMaxCachedThreads live threads) owns one magazine slot: an array of up to
//     2 * magazine_size free block ids. acquire/release of a few blocks touch only that slot and
//     the blocks' own metadata. The slot is guarded by a spin-then-yield lock that is uncontended
//     except while some thread runs the slow path below, so the fast path is one uncontended atomic
//     exchange plus one release store on a line no other thread writes.
//   * No stranding: when a thread's slot and the shared list together cannot satisfy a request,
//     the slow path locks every slot (in index order, so two slow paths cannot deadlock), takes the
//     whole shared list with one CAS, and serves the request from everything that is free. So
//     acquire(k) fails only if fewer than k blocks were free at one instant during the call (its
//     linearization point: the CAS that empties the shared list while all slots are frozen).
//   * Threads beyond kMaxCachedThreads, and pools built with magazine_size 0, use the shared list
//     directly (lock-free), falling back to the same slow path.
//
// Accounting invariants (exact whenever no call is in flight; validate_unsafe() checks them):
//     free_count() == shared_list_length + sum(slot.count)
//     free_count() + |{b : ref_count(b) > 0}| == capacity()
//     every block with ref_count 0 is in exactly one place: the shared list or one slot
//     total_acquired() - total_released() == used_count()
//
// Memory ordering
//   acquire() publishes a block with a relaxed store of count 1: the caller passes the id to other
//   threads through its own synchronisation (PagedKvCache: a shard mutex). release() drops the
//   count with an acq_rel CAS, so the thread that frees a block has seen every write other holders
//   made before their release. Pushes onto the shared list are release CASes after the relaxed
//   `next` stores they publish; pops load the head with acquire. Every head change is an RMW, so
//   it continues the release sequence of all earlier pushes.
//
// Bad input (an id out of range, releasing or retaining a block whose count is 0) returns
// Errc::block_not_found and changes nothing. A release by a thread that does not own a reference
// is a contract violation that can only be detected while the count is 0.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "pkv/detail/spin_lock.hpp"
#include "pkv/types.hpp"

namespace pkv {

inline constexpr std::uint32_t kPoolMaxMagazine = 64;
inline constexpr std::uint32_t kPoolMaxBlocks = 0xFFFFFFFEu;

struct BlockPoolOptions {
  /// Blocks moved between a thread's slot and the shared list at once (at most kPoolMaxMagazine);
  /// 0 turns the per-thread caches off (every call then uses the shared lock-free list).
  std::uint32_t magazine_size = 32;
};

/// The pool, parameterised on its atomic type so that tests can run it under a deterministic
/// scheduler (tests/dsched/); everyone else uses `BlockPool` = BasicBlockPool<std::atomic>.
template <template <class> class Atom>
class BasicBlockPool {
 public:
  /// Live threads that get their own magazine slot; later threads use the shared list directly.
  static constexpr std::size_t kMaxCachedThreads = 64;
  /// Largest magazine_size; a slot holds up to twice this many block ids.
  static constexpr std::uint32_t kMaxMagazine = kPoolMaxMagazine;
  /// Ids are 32-bit and 0xFFFFFFFF is the list terminator.
  static constexpr std::uint32_t kMaxBlocks = kPoolMaxBlocks;

  using Options = BlockPoolOptions;

  /// Creates a pool; `num_blocks` must be in 1..kMaxBlocks and magazine_size <= kMaxMagazine.
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

  /// Free blocks (shared list + all slots). Thread-safe, lock-free (reads one word per slot in
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
  /// Adds one reference to each block of `ids`; all must be referenced (checked first).
  /// Callers that own a reference to each (PagedKvCache) cannot see the check fail.
  Result<void> retain(std::span<const BlockId> ids);

  /// Drops one reference; returns true when the block went back to the free list.
  /// Thread-safe; lock-free except that a freed block is pushed into this thread's slot.
  Result<bool> release(BlockId id);

  /// Drops one reference from each block of `ids` (which the caller owns) and returns the blocks
  /// that reached count 0 to the free list under one slot lock. Returns how many were freed.
  /// Ids out of range or at count 0 are reported with Errc::block_not_found after the others
  /// were released; PagedKvCache never passes such ids.
  Result<std::size_t> release(std::span<const BlockId> ids);

  /// The block's reference count; 0 for a free block or an id out of range. Thread-safe; an
  /// acquire load, so a caller that reads 1 (sole holder) is ordered after the other holders'
  /// releases and may write the block in place.
  std::uint32_t ref_count(BlockId id) const noexcept;

  /// Blocks handed out / returned since construction. Striped per slot; exact when quiescent.
  std::uint64_t total_acquired() const noexcept;
  std::uint64_t total_released() const noexcept;

  /// Full structural check. NOT thread-safe: call only when no other call is in flight.
  /// Returns an empty string when every invariant at the top of this file holds, else the first
  /// violation found.
  std::string validate_unsafe() const;

 private:
  static constexpr std::uint32_t kNil = 0xFFFFFFFFu;
  static constexpr std::size_t kLine = 128;  // two lines: adjacent-line prefetch shares pairs

  struct BlockMeta {
    Atom<std::uint32_t> refs{0};     // reference count; 0 = free
    Atom<std::uint32_t> next{kNil};  // shared-list link, meaningful only while on the list
  };
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
                "the shared list head {index, tag} is one lock-free 64-bit word");

  struct alignas(kLine) Slot {
    detail::BasicSpinLock<Atom> lock;       // guards the fields below (spin then yield)
    Atom<std::uint32_t> count{0};           // ids in items[]; written under lock
    Atom<std::uint64_t> acquired{0};        // stats, written under lock (load+store)
    Atom<std::uint64_t> released{0};        // stats, written under lock (load+store)
    std::uint32_t items[2 * kMaxMagazine];  // guarded by lock
  };

  struct alignas(kLine) Shared {
    Atom<std::uint64_t> head{kNil};  // {index low 32, tag high 32}
    Atom<std::int64_t> count{0};     // list length; updated after each head CAS
  };
  struct alignas(kLine) Overflow {  // stats of threads without a slot
    Atom<std::uint64_t> acquired{0};
    Atom<std::uint64_t> released{0};
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

  // Shared list. pop_chain takes up to n blocks (exact: exactly n or none) in one CAS and writes
  // them to out[0..r), r = its return value; with exact and fewer present it returns 0 and sets
  // *seen = how many a consistent snapshot held. It may scribble on out[0..n) even when it
  // returns 0 (failed attempts walk the list into it): trust only the first r entries.
  std::size_t pop_chain(std::size_t n, bool exact, std::uint32_t* out, std::size_t* seen) noexcept;
  // Links ids[0..n) and pushes them with one CAS.
  void push_chain(const std::uint32_t* ids, std::size_t n) noexcept;
  // Takes the whole shared list with one CAS; returns the ids.
  void take_all_shared(std::vector<std::uint32_t>& out) noexcept;

  // Puts freed ids into this thread's slot (flushing batches to the shared list) or the list.
  void put_free(const std::uint32_t* ids, std::size_t n) noexcept;
  // Drops one reference: 1 if it was the last (block now free to list), 0 if not, -1 if the
  // count was already 0.
  int drop_ref(std::uint32_t id) noexcept;
  Result<void> acquire_slow(std::size_t k, std::vector<BlockId>& out);
  void hand_out(const std::uint32_t* ids, std::size_t n, std::vector<BlockId>& out) noexcept;
  void count_acquired(Slot* s, std::size_t n) noexcept;
  // Sum of one statistic over the slot stripes and the slot-less overflow stripe.
  template <class Counter>
  std::uint64_t sum_stripes(Counter Slot::*slot_counter, const Counter& overflow) const noexcept;
  void count_released(Slot* s, std::size_t n) noexcept;

  const std::size_t capacity_;
  const std::uint32_t magazine_;
  std::unique_ptr<BlockMeta[]> meta_;
  std::unique_ptr<Slot[]> slots_;  // kMaxCachedThreads slots, or none when magazine_ == 0
  Shared shared_;
  Overflow overflow_;
};

using BlockPool = BasicBlockPool<std::atomic>;
extern template class BasicBlockPool<std::atomic>;  // instantiated once, in src/block_pool.cpp

}  // namespace pkv
