// baselines/prefix_baseline.hpp — vLLM v1's prefix-caching block manager in C++, behind one mutex.
//
// What it is
//   The baseline that pkv's prefix caching is measured against: the design of vLLM v1
//   (vllm/v1/core/block_pool.py, kv_cache_utils.py, kv_cache_manager.py), written in C++ from its
//   description, with the call shapes pkv's PagedKvCache has, so that one templated test suite
//   (tests/prefix_cache_cases.hpp) and one templated benchmark drive both.
//     * A hash map from block hash to the cached blocks with that hash (duplicates allowed: two
//       sequences that prefilled the same prompt at once each publish their own copy; a lookup
//       takes any one of them).
//     * A doubly linked free queue threaded through per-block prev/next indices with head and
//       tail sentinels (FreeKVCacheBlockQueue): O(1) pop from the head, append at the tail, and
//       removal from the middle (a hit reviving a released cached block).
//     * A sequence's blocks are released tail first (the deepest block of its chain first). A
//       released block that has a hash (reclaimable) is appended at the tail, so the queue keeps
//       released cached blocks in LRU order; one without a hash (plain free) is put at the head,
//       to be reused before any cached block is reclaimed (vLLM does the same since it began
//       prepending uncached blocks). New blocks are popped from the head; popping a block that
//       has a hash removes it from the map (it is reclaimed).
//     * Plain reference counts; every state change happens under ONE std::mutex.
//     * The prompt's block hashes are computed before the mutex is taken, with pkv::block_hashes
//       (vLLM hashes in the Request object, outside the block pool). A block filled by append()
//       is hashed under the mutex when it fills: one hash per block_size appended tokens, cheaper
//       than a second lock round trip to hash it outside.
//
// Semantics (pkv's, issue 11)
//   allocate(seq, prompt, salt) shares the cached blocks of the longest cached prefix of the
//   prompt's full blocks, at most (prompt.size() - 1) / block_size of them (the last prompt token
//   is always computed), and takes new blocks for the rest: all or nothing. It succeeds iff
//       new blocks needed <= free_block_count() - (hit blocks that are reclaimable)
//   (the hit blocks being revived are not available as new blocks; vLLM's
//   num_evictable_computed_blocks). A failure changes nothing: no reference count, no queue
//   position, no counter. It returns the number of cached tokens (a multiple of block_size).
//   allocate commits nothing; the hit blocks are already committed.
//   commit(seq, n): the KV of the first n tokens is written; the full blocks among them that are
//   not yet published get their hash and become findable. append(seq, tokens) first commits every
//   token the sequence held before the call, then adds the tokens (a failed append commits
//   nothing). free(seq) releases tail first as above. reset_prefix_cache() forgets every hash:
//   held blocks stay with their sequences (and are not published again), reclaimable ones become
//   plain free. Stats: see pkv/prefix_types.hpp (only successful allocations count).
//   Not supported (not needed by the prefix benchmarks): fork, eviction of sequences, StreamingLLM,
//   allocation by count; append never returns a CopyOp.
//
// Accounting invariants (under the mutex, so exact whenever read)
//     free_block_count() == plain free + reclaimable            (the queue's length)
//     plain free + reclaimable + held == total_blocks()         (held: reference count > 0)
//     cached_block_count() == reclaimable + cached held         (the map's entries)
//     sum over sequences of their block counts == sum over blocks of reference counts
//
// Progress guarantee
//   Blocking: every method except block_size() and total_blocks() takes the one mutex (for the
//   read-only figures too); allocate and match_prefix hash the tokens before taking it.
//
// Memory ordering
//   Everything is read and written under the mutex; lock/unlock order all accesses.
//
// Bad input (an Error, and nothing changes)
//   allocate: empty prompt -> invalid_argument; existing seq -> invalid_operation. commit: n larger
//   than the sequence's token count -> invalid_argument. Unknown seq -> sequence_not_found. The
//   constructor throws std::invalid_argument for a zero size or more than 2^32 - 2 blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pkv/block_hash.hpp"
#include "pkv/prefix_types.hpp"
#include "pkv/types.hpp"

namespace pkv::baseline {

class PrefixBaseline {
 public:
  PrefixBaseline(std::size_t num_blocks, std::size_t block_size,
                 HashAlgorithm hash = HashAlgorithm::sha256);
  PrefixBaseline(const PrefixBaseline&) = delete;
  PrefixBaseline& operator=(const PrefixBaseline&) = delete;

  std::size_t block_size() const noexcept { return block_size_; }
  std::size_t total_blocks() const noexcept { return num_blocks_; }
  HashAlgorithm hash_algorithm() const noexcept { return hash_; }

  // ---- sequences (thread-safe, take the mutex) ------------------------------------------------
  /// Registers `seq` with `prompt`, sharing its longest cached prefix; returns the cached tokens.
  Result<std::size_t> allocate(SeqId seq, std::span<const TokenId> prompt,
                               std::string_view salt = {});
  /// Commits the tokens held before the call, then adds `tokens` (new blocks as needed, all or
  /// nothing). Never a CopyOp (no fork here).
  Result<std::optional<CopyOp>> append(SeqId seq, std::span<const TokenId> tokens);
  /// Publishes the full blocks among the first `num_tokens` tokens; returns how many were new.
  Result<std::size_t> commit(SeqId seq, std::size_t num_tokens);
  /// Drops the sequence, releasing its blocks tail first.
  Result<void> free(SeqId seq);
  /// A snapshot (seq_id, num_tokens, block_ids; token_runs {0, 0, num_tokens}), or nullopt.
  std::optional<SequenceInfo> get_sequence(SeqId seq) const;
  std::size_t num_sequences() const;

  // ---- the prefix cache (thread-safe, take the mutex) -----------------------------------------
  /// How many leading tokens of `tokens` an allocate would find cached now; changes nothing.
  std::size_t match_prefix(std::span<const TokenId> tokens, std::string_view salt = {}) const;
  std::size_t cached_block_count() const;
  std::size_t reclaimable_block_count() const;
  /// Plain free + reclaimable.
  std::size_t free_block_count() const;
  PrefixCacheStats prefix_stats() const;
  Result<void> reset_prefix_cache();

  /// Checks every invariant of the header comment; "" when all hold, else what failed.
  /// Thread-safe (takes the mutex); meant for tests at quiescent points.
  std::string validate() const;

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;

  struct Block {
    std::uint32_t prev = kNone;  // free-queue links (block indices or the sentinels)
    std::uint32_t next = kNone;
    std::uint32_t ref = 0;
    bool in_queue = false;
    bool has_hash = false;
    BlockHash hash;
  };
  struct Seq {
    BlockHash root;  // salt_hash(salt): the parent of block 0
    std::vector<TokenId> tokens;
    std::vector<BlockHash> hashes;  // of the full blocks of `tokens`, in order
    std::vector<std::uint32_t> blocks;
    std::size_t published = 0;  // blocks [0, published) were published (or hit) by this sequence
  };
  struct SeqHash {
    std::size_t operator()(SeqId s) const noexcept { return std::hash<std::uint64_t>{}(s.value); }
  };

  // Free queue (caller holds mu_).
  void queue_remove(std::uint32_t b);
  void queue_push_back(std::uint32_t b);
  void queue_push_front(std::uint32_t b);
  std::uint32_t queue_pop_front();
  // Map (caller holds mu_).
  std::optional<std::uint32_t> lookup(const BlockHash& h) const;
  void unpublish(std::uint32_t b);
  std::size_t longest_hit(std::span<const BlockHash> hashes, std::size_t max_blocks,
                          std::vector<std::uint32_t>* hit_blocks) const;
  std::size_t publish_locked(Seq& s, std::size_t num_tokens);
  void release_locked(Seq& s);

  const std::size_t num_blocks_;
  const std::size_t block_size_;
  const HashAlgorithm hash_;
  const std::uint32_t head_;  // sentinel indices: num_blocks and num_blocks + 1
  const std::uint32_t tail_;

  mutable std::mutex mu_;
  std::vector<Block> blocks_;  // num_blocks + 2 (the two sentinels last)
  std::size_t queue_len_ = 0;
  std::size_t reclaimable_ = 0;
  std::unordered_multimap<BlockHash, std::uint32_t> cached_;
  std::unordered_map<SeqId, Seq, SeqHash> seqs_;
  PrefixCacheStats stats_;
};

}  // namespace pkv::baseline
