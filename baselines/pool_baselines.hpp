// baselines/pool_baselines.hpp — block pools pkv::BlockPool is measured against.
//
// Both classes have BlockPool's call shapes (acquire(), acquire(k, out), release(id),
// release(span), free_count(), capacity()) so one templated benchmark drives all pools. Neither is
// meant for production; each is the obvious design of its kind, written carefully.
//
//   LockfreeStackPool  free list on boost::lockfree::stack<uint32_t> (Treiber stack with tagged
//                      pointers and its own node freelist), reference counts in an array of
//                      std::atomic<uint32_t>. Lock-free; every acquire/release touches the one
//                      shared stack head. Batches: pop k times; push a batch with one range push.
//   VllmQueuePool      the vLLM v1 idea (FreeKVCacheBlockQueue): the free blocks form a doubly
//                      linked list threaded through per-block prev/next indices, with sentinel
//                      head and tail, so popleft, append and removal from the middle are all O(1)
//                      and allocate nothing; blocks are reused in FIFO order. Plain reference
//                      counts. One std::mutex guards everything (blocking).
//
// Accounting invariant (both; exact when quiescent):
//     free_count() + |{b : ref_count(b) > 0}| == capacity()
//
// Memory ordering
//   LockfreeStackPool: acquire() stores count 1 relaxed (the caller publishes the id); release()
//   drops the count with fetch_sub(acq_rel) and pushes the block only on the 1 -> 0 transition; the
//   stack's own push/pop order the id hand-over. VllmQueuePool: the mutex orders everything.
#pragma once

#include <atomic>
#include <boost/lockfree/stack.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "pkv/types.hpp"

namespace pkv::baseline {

class LockfreeStackPool {
 public:
  explicit LockfreeStackPool(std::size_t num_blocks);

  std::size_t capacity() const noexcept { return capacity_; }
  /// Thread-safe, lock-free (one relaxed load).
  std::size_t free_count() const noexcept;

  /// Thread-safe, lock-free. Errc::out_of_memory when the stack is empty.
  Result<BlockId> acquire();
  /// Thread-safe, lock-free: k pops; on a shortfall pushes back what it took (all or nothing).
  Result<void> acquire(std::size_t k, std::vector<BlockId>& out);
  /// Thread-safe, lock-free. True when the block went back to the free list.
  Result<bool> release(BlockId id);
  /// Thread-safe, lock-free: drops a reference from each; pushes the freed ones with one range
  /// push. Returns how many were freed.
  Result<std::size_t> release(std::span<const BlockId> ids);
  std::uint32_t ref_count(BlockId id) const noexcept;

 private:
  const std::size_t capacity_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> refs_;
  boost::lockfree::stack<std::uint32_t> stack_;
  alignas(128) std::atomic<std::int64_t> free_{0};  // stats only; relaxed
};

class VllmQueuePool {
 public:
  explicit VllmQueuePool(std::size_t num_blocks);

  std::size_t capacity() const noexcept { return capacity_; }
  /// Thread-safe, takes the mutex.
  std::size_t free_count() const;

  /// Thread-safe, takes the mutex: popleft.
  Result<BlockId> acquire();
  /// Thread-safe, takes the mutex once: popleft_n (all or nothing).
  Result<void> acquire(std::size_t k, std::vector<BlockId>& out);
  /// Thread-safe, takes the mutex: drop a reference, append at the tail when it reaches 0.
  Result<bool> release(BlockId id);
  /// Thread-safe, takes the mutex once for the whole batch (vLLM's free_blocks).
  Result<std::size_t> release(std::span<const BlockId> ids);
  /// Thread-safe, takes the mutex: unlinks a free block from the middle of the queue in O(1) and
  /// gives it count 1 (vLLM's prefix-cache hit on a free block). block_not_found if not free.
  Result<void> take(BlockId id);
  std::uint32_t ref_count(BlockId id) const;

 private:
  // Queue operations; mu_ held.
  std::uint32_t popleft() noexcept;
  void append(std::uint32_t id) noexcept;
  void remove(std::uint32_t id) noexcept;

  const std::size_t capacity_;
  const std::uint32_t head_;  // sentinel index capacity_
  const std::uint32_t tail_;  // sentinel index capacity_ + 1
  mutable std::mutex mu_;
  std::size_t num_free_ = 0;
  std::vector<std::uint32_t> prev_;  // capacity_ + 2 entries (sentinels last)
  std::vector<std::uint32_t> next_;
  std::vector<std::uint32_t> refs_;
};

}  // namespace pkv::baseline
