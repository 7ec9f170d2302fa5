// src/cache/prefix_cache.hpp — automatic prefix caching: the per-block state of blocks whose
// content is known by hash, the lock-free prefix index that finds them, and the queue of cached
// blocks no sequence holds (reclaimable), least recently released first.
//
// Managed blocks
//   A sequence allocated with token ids (PagedKvCache::allocate(seq, prompt, salt)) holds
//   "managed" blocks: their holder count lives in this block's state word, not in the pool's
//   reference count, which stays 1 while the cache owns the block (held or reclaimable) and 0 once
//   it is back in the pool's free list. (The count has to sit in one word with the findable bit
//   and a generation, so that a hit and a reclaim are one CAS each; see Concurrency.) Sequences
//   allocated by count keep using the pool's counts, as without prefix caching. Every block of a
//   token-mode sequence is managed; a block's mode is fixed from its acquisition until it returns
//   to the pool.
//
// States of a managed block (state word: generation | findable | managed | holders)
//   held          holders >= 1, not findable (no hash yet, or not full and committed)
//   cached-held   holders >= 1, findable: its hash is in the index; hits add holders
//   reclaimable   holders == 0, findable: counted in free_block_count(), queued for reclaim
//   revived       a hit on a reclaimable block: holders 0 -> 1 in one CAS (back to cached-held)
//   reclaimed     a reclaimable block taken for other data: findable cleared and the generation
//                 bumped in one CAS; its index entry removed; it belongs to its new holder
//   plain free    the last holder of an unfindable block dropped it: back in the pool
// Accounting (exact whenever no call is in flight):
//   pool.free_count() + reclaimable + #held blocks (managed or not) == num_blocks
//   reclaimable == #{ b : findable(b) && holders(b) == 0 },  findable_count == #{ b : findable(b) }
//   every findable block has exactly one live index entry {hash prefix, generation, block}
//
// Concurrency
//   Lookups (try_hit, peek) take no lock: they probe the index shard's slots (atomics) and
//   validate at the block: its state word must be findable with the generation the index entry
//   carries, its stored hash (and with verify_tokens its token ids) must equal the wanted ones,
//   and a hit is then one CAS of the state word (holders + 1) expecting exactly the word it
//   validated. A reclaim is one CAS of the same word expecting holders == 0, so a block is
//   either revived or reclaimed, never both. Publishing and reclaiming change the index under one
//   index shard's spin lock (writers only). A lookup racing with a writer on the same index shard
//   may miss (the entry is being inserted, or the shard is compacted) but never returns a block
//   whose validated state and hash do not match: a miss costs a recomputation, never wrong data.
//
// Memory ordering
//   A block's hash words (and token ids) are written with release stores by its publisher while
//   it is held and not yet findable, then the findable bit is set by a CAS (acq_rel). A lookup
//   loads the state (acquire), then the hash words (acquire), then CASes the state expecting the
//   same word (try_hit; a CAS lost to a holder change re-validates) or, for peek, re-loads it
//   expecting the same generation and flags (holder counts may differ). If a hash load read a value
//   written by a later publisher, that publisher's store is release and ordered after the reclaim
//   CAS that bumped the generation, so the lookup's later state access sees the bumped generation
//   and fails: a validated read is consistent. Index slots store the value, then the key (release);
//   readers load the key, then the value (acquire). Holder increments by fork are relaxed (the
//   forker already holds the block); drops are acq_rel (the last drop orders every holder's use
//   before the block's reuse). The reclaim queue and the counters are a mutex and relaxed figures.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "cache/shard.hpp"
#include "config.hpp"
#include "pkv/block_hash.hpp"
#include "pkv/detail/cache_line.hpp"
#include "pkv/prefix_types.hpp"

namespace pkv::detail {

class PrefixCache {
 public:
  // The state word of a managed block.
  static constexpr std::uint64_t kHolders = (std::uint64_t{1} << 30) - 1;  // bits 0..29
  static constexpr std::uint64_t kManaged = std::uint64_t{1} << 30;
  static constexpr std::uint64_t kFindable = std::uint64_t{1} << 31;
  static constexpr std::uint64_t kGenOne = std::uint64_t{1} << 32;  // generation in bits 32..63

  PrefixCache(std::size_t num_blocks, std::size_t block_size, const PrefixCachingOptions& options);

  const PrefixCachingOptions& options() const noexcept { return options_; }

  // ---- holders of managed blocks ----

  /// A block just taken from the pool for a token-mode sequence: managed, one holder.
  void adopt(BlockId b) noexcept;
  /// Adds `n` holders to a managed block that the caller's sequence holds.
  void retain(BlockId b, std::uint32_t n = 1) noexcept {
    // relaxed: the caller holds the block, so it cannot be reclaimed or freed meanwhile.
    meta_[b.value].state.fetch_add(n, std::memory_order_relaxed);
  }
  /// Drops one holder. Returns true when the block leaves the cache (it was not findable): the
  /// caller returns it to the pool. A findable block whose last holder leaves becomes reclaimable.
  bool release(BlockId b);
  /// release() of each of `ids`, from the last to the first (a sequence's table, tail first, so
  /// the deepest block of a chain is reclaimed before its parents). Blocks that leave the cache go
  /// to to_pool(BlockId); the ones that become reclaimable are queued kReleaseChunk at a time,
  /// with one lock of the queue and one update of the reclaimable count per chunk.
  template <class ToPool>
  void release_tail_first(std::span<const BlockId> ids, ToPool&& to_pool);
  std::uint64_t holders(BlockId b) const noexcept {
    return meta_[b.value].state.load(std::memory_order_relaxed) & kHolders;
  }
  bool findable(BlockId b) const noexcept {
    return (meta_[b.value].state.load(std::memory_order_relaxed) & kFindable) != 0;
  }
  std::uint64_t state(BlockId b) const noexcept {
    return meta_[b.value].state.load(std::memory_order_relaxed);
  }

  // ---- lookups (lock-free) ----

  /// What try_hit found: `block` (kNoBlock on a miss), and whether it was reclaimable (revived).
  struct Hit {
    static constexpr std::uint32_t kNoBlock = ~std::uint32_t{0};
    std::uint32_t block = kNoBlock;
    std::uint32_t revived = 0;
    explicit operator bool() const noexcept { return block != kNoBlock; }
  };
  /// A hit: a findable block with hash `h` (and, with verify_tokens, these tokens), held once more
  /// (revived if it was reclaimable). The caller reports the revived blocks of its hits with one
  /// note_revived(n) after its lookups (one counter update per allocation, not per block).
  /// Among duplicates it takes a held one if any (reviving a reclaimable twin would take a free
  /// block for nothing), else a reclaimable one.
  Hit try_hit(const BlockHash& h, std::span<const TokenId> tokens);
  /// `n` reclaimable blocks were revived by try_hit: they no longer count as reclaimable.
  void note_revived(std::size_t n) noexcept {
    if (n != 0) reclaimable_.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  }
  /// Whether try_hit would hit now, with no effect.
  bool peek(const BlockHash& h, std::span<const TokenId> tokens) const {
    return peek_holders(h, tokens).has_value();
  }
  /// peek that also says how many sequences hold the block it would hit (0: reclaimable);
  /// nullopt on a miss.
  std::optional<std::uint64_t> peek_holders(const BlockHash& h,
                                            std::span<const TokenId> tokens) const;

  // ---- publishing and reclaiming (one index shard lock at most) ----

  /// Makes block `b` (held by the caller's sequence, full, committed) findable under `h`.
  /// Returns false if it already was findable (a sharer published it) or the index is full.
  bool publish(BlockId b, const BlockHash& h, std::span<const TokenId> tokens);
  /// Takes the least recently released reclaimable block for new data: it loses its hash and
  /// belongs to the caller, as a managed block with one holder (`managed`) or as a plain block
  /// whose pool reference the caller now owns. nullopt when none is left.
  std::optional<BlockId> reclaim(bool managed);
  /// Forgets every hash. Reclaimable blocks are handed to `to_pool` (they become plain free);
  /// held ones stay with their sequences and return to the pool when their last holder leaves.
  template <class ToPool>
  void reset(ToPool&& to_pool);

  // ---- figures (relaxed; exact whenever no call is in flight) ----
  std::size_t reclaimable() const noexcept {
    const std::int64_t n = reclaimable_.load(std::memory_order_relaxed);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  std::size_t findable() const noexcept {
    const std::int64_t n = findable_.load(std::memory_order_relaxed);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  PrefixCacheStats stats() const noexcept;
  void count_request(std::uint64_t queried, std::uint64_t hit) noexcept {
    requests_.fetch_add(1, std::memory_order_relaxed);  // relaxed: figures
    queries_.fetch_add(queried, std::memory_order_relaxed);
    hits_.fetch_add(hit, std::memory_order_relaxed);
  }

  /// The structure's invariants, for a quiescent cache (validate_unsafe): "" when they hold.
  std::string validate_unsafe() const;

 private:
  struct alignas(64) BlockMeta {
    std::atomic<std::uint64_t> state{0};
    std::atomic<std::uint32_t> release_epoch{0};       // bumped when the block becomes reclaimable
    std::array<std::atomic<std::uint64_t>, 4> hash{};  // release stores, acquire loads
  };
  // An index slot: key 0 = empty, 1 = deleted; a real key is the hash's first word, mapped to
  // >= 2. value = generation << 32 | block.
  struct Slot {
    std::atomic<std::uint64_t> key{0};
    std::atomic<std::uint64_t> value{0};
  };
  static constexpr std::uint64_t kEmpty = 0;
  static constexpr std::uint64_t kDeleted = 1;
  static constexpr std::size_t kIndexShards = 64;
  struct alignas(kCacheLine) IndexShard {
    BasicSpinLock<std::atomic> mu;  // writers only
    std::unique_ptr<Slot[]> slots;  // fixed capacity
    std::size_t mask = 0;
    std::size_t used = 0;  // guarded by mu: non-empty slots (live + deleted)
    std::size_t live = 0;  // guarded by mu
  };

  static std::uint64_t key_of(const BlockHash& h) noexcept {
    const std::uint64_t k = h.prefix_word();
    return k < 2 ? k + 2 : k;
  }
  IndexShard& shard_of(std::uint64_t key) noexcept { return index_[key >> 58]; }
  const IndexShard& shard_of(std::uint64_t key) const noexcept { return index_[key >> 58]; }
  static_assert(kIndexShards == 64, "shard_of takes the key's top 6 bits");

  bool hash_equals(const BlockMeta& m, const BlockHash& h) const noexcept;
  bool tokens_equal(BlockId b, std::span<const TokenId> tokens) const noexcept;
  // Index writers (caller holds sh.mu).
  bool index_insert(IndexShard& sh, std::uint64_t key, std::uint64_t value);
  void index_erase(IndexShard& sh, std::uint64_t key, std::uint64_t value);
  void index_compact(IndexShard& sh);
  // The lock-free probe: calls visit(value) for each slot with `key` until it returns true.
  template <class Visit>
  bool index_find(const IndexShard& sh, std::uint64_t key, Visit&& visit) const;
  // One lookup pass of try_hit: held_only skips reclaimable candidates (setting
  // *saw_reclaimable when it met one); otherwise any findable candidate.
  Hit try_hit_pass(const BlockHash& h, std::span<const TokenId> tokens, bool held_only,
                   bool* saw_reclaimable);
  // After the CAS that made `b` unfindable (old_state: the word before it): its index entry
  // removed and the counters updated (reclaim, reset).
  void forget(BlockId b, std::uint64_t old_state);
  // release() in two steps. drop() takes one holder away and says what the block became;
  // `reclaimable`: *epoch is its new release epoch, and the caller must enqueue() it.
  enum class Drop { held, plain, reclaimable };
  Drop drop(BlockId b, std::uint32_t* epoch);
  // Trivial (not std::pair), so release_tail_first's chunk on the stack is not zeroed per call.
  struct QueueEntry {
    std::uint32_t block;
    std::uint32_t epoch;  // the block's release_epoch when it was queued
  };
  static constexpr std::size_t kReleaseChunk = 64;
  // Counts n newly reclaimable blocks and appends their entries to the queue, in order.
  void enqueue(const QueueEntry* entries, std::size_t n);
  // Whether a queue entry still names a reclaimable block released at that epoch.
  bool queue_entry_live(std::uint32_t block, std::uint32_t epoch) const noexcept;
  // Drops stale entries (caller holds queue_mu_). Run when the queue outgrows 2 x num_blocks, so
  // revive/release cycles cannot grow it without bound.
  void compact_queue_locked();

  const std::size_t num_blocks_;
  const std::size_t block_size_;
  const PrefixCachingOptions options_;
  std::unique_ptr<BlockMeta[]> meta_;
  std::unique_ptr<std::atomic<TokenId>[]> tokens_;  // num_blocks x block_size, verify_tokens only
  std::array<IndexShard, kIndexShards> index_;

  // Reclaimable blocks in release order {block, release_epoch}; entries whose block was revived
  // or reclaimed since (state or epoch differ) are skipped when popped.
  alignas(kCacheLine) std::mutex queue_mu_;
  std::deque<QueueEntry> queue_;  // guarded by queue_mu_

  // Signed: a transition out of a state may be counted before the transition into it.
  alignas(kCacheLine) std::atomic<std::int64_t> reclaimable_{0};
  std::atomic<std::int64_t> findable_{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> queries_{0};
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint64_t> reclaimed_{0};
  mutable std::atomic<std::uint64_t> verify_failures_{0};
};

template <class ToPool>
void PrefixCache::release_tail_first(std::span<const BlockId> ids, ToPool&& to_pool) {
  std::array<QueueEntry, kReleaseChunk> chunk;
  std::size_t n = 0;
  for (std::size_t i = ids.size(); i-- > 0;) {
    std::uint32_t epoch = 0;
    switch (drop(ids[i], &epoch)) {
      case Drop::held:
        break;
      case Drop::plain:
        to_pool(ids[i]);
        break;
      case Drop::reclaimable:
        chunk[n++] = {ids[i].value, epoch};
        if (n == chunk.size()) {
          enqueue(chunk.data(), n);
          n = 0;
        }
        break;
    }
  }
  if (n != 0) enqueue(chunk.data(), n);
}

template <class ToPool>
void PrefixCache::reset(ToPool&& to_pool) {
  for (std::size_t i = 0; i < num_blocks_; ++i) {
    const BlockId b{static_cast<std::uint32_t>(i)};
    std::uint64_t s = meta_[i].state.load(std::memory_order_acquire);
    while ((s & kFindable) != 0) {
      const bool reclaimable = (s & kHolders) == 0;
      // Unfindable with a new generation; a reclaimable one (no holder) leaves the cache.
      const std::uint64_t next =
          ((s & ~(kGenOne - 1)) + kGenOne) | (reclaimable ? 0 : (s & (kManaged | kHolders)));
      if (!meta_[i].state.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                                std::memory_order_acquire))
        continue;
      forget(b, s);
      if (reclaimable) {
        reclaimable_.fetch_sub(1, std::memory_order_relaxed);
        to_pool(b);
      }
      break;
    }
  }
  std::lock_guard<std::mutex> g(queue_mu_);
  compact_queue_locked();  // drops the entries made stale above
}

}  // namespace pkv::detail
