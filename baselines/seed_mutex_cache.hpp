// baselines/seed_mutex_cache.hpp — the seed's PagedKvCache ported literally, behind one mutex.
//
// What it is
//   The baseline that pkv is measured against: "what a user would write first" when told to make
//   the single-threaded Rust seed (shared/seed/cache.rs) thread-safe. The seed's data structures
//   are kept as they are — std::unordered_map<SeqId, info>, std::unordered_map<BlockId, uint32_t>
//   reference counts, a std::deque<BlockId> FIFO free list, an O(n) scan of every sequence to pick
//   an eviction victim — and every public method takes one std::mutex for its whole duration.
//   Method names and signatures are PagedKvCache's, so benchmarks and the simulator can be written
//   once as templates over the cache type.
//
// Semantics (the seed's, deliberately, defects included)
//   * No real copy-on-write: append() after fork() keeps writing into the shared last block and
//     always returns std::nullopt.
//   * apply_streaming_llm() drops the blocks the seed drops (skips sink / block_size + 1 blocks)
//     and sets num_tokens = sink + window; token_runs in get_sequence() is always {0, 0, n}.
//   * Recency is a logical counter (one tick per touch) instead of the seed's wall clock, so LRU is
//     exact; ties in victim selection go to whichever sequence the hash map yields first (min) or
//     last (max), as Rust's min_by_key / max_by_key do.
//   * Differences from the literal seed, needed for the shared signatures: set_priority() exists
//     (sequence_not_found for an unknown id); set_eviction_strategy() rejects Priority(0) and
//     StreamingLLM(0, 0) like PagedKvCache; append() reports invalid_argument on token-count
//     overflow instead of panicking; the constructor throws std::invalid_argument for a zero
//     size (the seed would divide by zero).
//
// Progress guarantee
//   Blocking: every method, including the read-only figures, takes the one mutex.
//
// Memory ordering
//   Everything is read and written under the mutex; lock/unlock order all accesses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <iosfwd>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "pkv/types.hpp"

namespace pkv::baseline {

class SeedMutexCache {
 public:
  /// Thread-safe? n/a (constructor). Throws std::invalid_argument if any size is zero.
  SeedMutexCache(std::size_t num_blocks, std::size_t block_size, std::size_t num_heads,
                 std::size_t head_dim);

  SeedMutexCache(const SeedMutexCache&) = delete;
  SeedMutexCache& operator=(const SeedMutexCache&) = delete;

  // ---- configuration (thread-safe, takes the mutex) -------------------------------------------
  Result<void> set_eviction_strategy(const EvictionStrategy& strategy);
  EvictionStrategy eviction_strategy() const;
  /// Clamped to 0..1 (the seed's with_eviction_threshold); NaN is rejected.
  Result<void> set_eviction_threshold(double threshold);
  double eviction_threshold() const;
  Result<void> set_priority(SeqId seq, std::uint32_t priority);

  // ---- sizes and figures (thread-safe, take the mutex) ----------------------------------------
  std::size_t block_size() const noexcept { return block_size_; }
  std::size_t total_blocks() const noexcept { return num_blocks_; }
  std::size_t free_block_count() const;
  std::size_t used_block_count() const;
  double utilization() const;
  std::size_t block_memory_bytes() const noexcept { return block_bytes_; }
  std::size_t total_memory_bytes() const noexcept { return block_bytes_ * num_blocks_; }
  std::size_t used_memory_bytes() const { return block_bytes_ * used_block_count(); }
  bool needs_eviction() const;
  std::size_t num_sequences() const;
  CacheStats stats() const;

  // ---- sequences (thread-safe, take the mutex) ------------------------------------------------
  Result<void> allocate(SeqId seq, std::size_t num_tokens);
  /// Seed semantics: no copy-on-write, so the CopyOp is always std::nullopt.
  Result<std::optional<CopyOp>> append(SeqId seq, std::size_t num_tokens);
  /// pkv's append_batch for the mutex design: the whole batch under one lock (what a user of
  /// this design would write for a decode step once per-token locking showed up in a profile).
  void append_batch(std::span<const SeqId> seqs, std::size_t num_tokens, AppendBatchOutcome& out);
  Result<void> free(SeqId seq);
  Result<void> fork(SeqId src, SeqId dst);
  std::optional<SequenceInfo> get_sequence(SeqId seq) const;
  std::vector<SeqId> sequence_ids() const;

  // ---- eviction (thread-safe, take the mutex; O(live sequences)) ------------------------------
  std::optional<SeqId> select_eviction_target() const;
  Result<SeqId> evict();
  Result<std::vector<SeqId>> evict_to_threshold(double target);
  Result<std::size_t> apply_streaming_llm(SeqId seq, std::size_t sink_tokens,
                                          std::size_t window_tokens);

  /// Reference counts equal table occurrences, free + referenced == total. NOT thread-safe
  /// (takes the mutex, but a concurrent caller makes the answer stale). "" when consistent.
  std::string validate_unsafe() const;

  friend std::ostream& operator<<(std::ostream& os, const SeedMutexCache& cache);

 private:
  struct Info {  // the seed's SequenceInfo
    SeqId seq_id;
    std::size_t num_tokens = 0;
    std::vector<BlockId> block_ids;
    std::uint64_t last_access = 0;
    std::uint64_t access_count = 0;
    std::uint32_t priority = 0;
  };

  // All helpers below expect mu_ held.
  void touch(Info& info) { info.last_access = ++clock_, ++info.access_count; }
  std::size_t blocks_needed(std::size_t num_tokens) const noexcept {
    return num_tokens / block_size_ + (num_tokens % block_size_ != 0 ? 1 : 0);
  }
  std::size_t used_locked() const noexcept { return num_blocks_ - free_blocks_.size(); }
  Result<BlockId> allocate_block();
  Result<void> free_block(BlockId id);
  Result<void> free_locked(SeqId seq);
  Result<std::optional<CopyOp>> append_locked(SeqId seq, std::size_t num_tokens);
  std::optional<SeqId> select_locked() const;
  Result<SeqId> evict_locked();

  const std::size_t num_blocks_;
  const std::size_t block_size_;
  const std::size_t block_bytes_;

  mutable std::mutex mu_;
  std::deque<BlockId> free_blocks_;
  std::unordered_map<SeqId, Info> sequences_;
  std::unordered_map<BlockId, std::uint32_t> block_refs_;
  EvictionStrategy strategy_;
  double threshold_ = 0.9;
  CacheStats stats_;
  std::uint64_t clock_ = 0;
};

std::ostream& operator<<(std::ostream& os, const SeedMutexCache& cache);

}  // namespace pkv::baseline
