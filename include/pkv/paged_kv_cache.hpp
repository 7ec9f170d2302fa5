// pkv/paged_kv_cache.hpp — a thread-safe paged KV-cache block manager (PagedAttention style).
//
// What it does
//   Keeps, for each sequence (request), a block table: the KV blocks holding its tokens, block_size
//   tokens per block. allocate() registers a prompt, append() grows a sequence, fork() shares all
//   blocks with a new sequence (copy-on-write), free() gives blocks back, evict() frees a victim
//   chosen by the eviction strategy, apply_streaming_llm() drops the middle tokens of a sequence,
//   truncate() its last tokens (rejected speculative drafts). fork_many() and free_many() are
//   fork and free for k sequences at once (beam expansion, parallel sampling, beam losers,
//   finished batches), with one reference-count update per block instead of k.
//   The names and behaviour are the seed's (Rust `PagedKvCache`), with its defects fixed:
//     * real copy-on-write: append() never writes into a partly filled block that another sequence
//       holds; it moves the writer to a fresh block and returns the CopyOp the caller performs;
//     * StreamingLLM keeps exactly the first `sink` and last `window` tokens and frees exactly the
//       blocks that hold none of them; later appends fill the free slots of the last kept block;
//     * exact recency: last_access comes from one logical clock, so calls that happen one after
//       another are ordered exactly (no wall clock, no sleeps needed);
//     * bad input is rejected with an Error and changes nothing (table in README.md).
//
// Concurrency contract
//   Every public method is thread-safe and linearizable, with these notes:
//     * There is no global mutex on allocate / append / free / fork / get_sequence. Sequences live
//       in kShards shards (a hash of SeqId; with Options::affinity_shift, the slice of the id's
//       owner bits, then the hash within it), each an open-addressing table behind a
//       spin-then-yield lock (one exchange + one release store uncontended); each call locks the
//       one shard of its sequence (append_batch locks one shard per item, one at a time). Calls
//       that change several shards in one step hold all their locks at once, taken in increasing
//       address order with each shard once (no deadlock: every holder of two or more shard locks
//       took them in that one order, and nothing waits for a shard lock while holding a pool
//       lock): fork the shards of src and dst, fork_many those of src and every dst, free_many
//       those of up to kFreeManyChunk consecutive ids at a time. Blocks come from a BlockPool
//       whose fast path touches only the calling thread's magazine (see block_pool.hpp).
//     * Counters are striped per thread; stats() sums the stripes (exact when quiescent).
//     * Victim selection is not a scan of every sequence: each shard keeps an index of its
//       unpinned sequences under the current strategy (LRU: an intrusive recency list, O(1) per
//       touch; LFU / LongestFirst / Priority: an ordered set) and publishes its head in atomics.
//       select/evict scan the published heads of the occupied shards (a kShards-bit occupancy
//       map kept with the heads) without locking, then lock only the best shard and take its
//       real head, scanning again if that head changed since the scan (a bounded number of
//       times): O(kShards / 64 + occupied shards) reads + one lock. evict() removes the victim
//       under that lock, so a sequence is never freed twice and evict() never returns an id that
//       another thread freed first. The choice is exact when no other call is in flight; under
//       concurrency it is the best head of a shard that looked best during the scan.
//     * set_eviction_strategy() rebuilds the shard indexes; it excludes select/evict (a
//       reader-writer lock that allocate/append/free/fork never take).
//     * Blocks are released before the shard lock is dropped, so a caller that sees a sequence
//       gone also sees its blocks free (no spurious out_of_memory after a free or an evict).
//     * Where it is weaker than one atomic step (found by tests/model/test_linearizability.cpp):
//       two sharers of a partly filled block that append at the same time may both copy it
//       (never neither); evict / select_eviction_target choose among heads published by the
//       shards, so under concurrent calls the victim may be one no sequential order would pick,
//       and an evict racing with inserts may report "No sequences to evict"; allocate / append /
//       fork take their recency stamp and their blocks at two points, so two overlapping calls
//       may be ordered one way by recency and the other by their effect on free blocks
//       (append_batch stamps every item when the batch starts, so an item may carry a stamp
//       older than a call that finished before that item ran);
//       append_batch is one linearizable append per item, not one step for the batch;
//       free_many is one linearizable free per item, in order (each chunk of kFreeManyChunk ids
//       is in fact one step: its shards are all locked while its sequences go). fork_many is one
//       step (all of its shards locked at once). All are exact when no other call is in flight.
//     * Derived figures (free_block_count, utilization, needs_eviction, num_sequences, stats,
//       operator<<) read several words without a common lock: exact whenever no call is in flight,
//       otherwise a value within the range the concurrent calls could produce.
//     * peak_blocks_used is the largest used-block count observed right after a call took blocks:
//       exact when calls do not overlap.
//   Lock-free methods: block_size, total_blocks, block_memory_bytes, total_memory_bytes,
//   eviction_threshold, free_block_count, used_block_count, utilization, used_memory_bytes,
//   needs_eviction, num_sequences, stats. Shard-locking methods: allocate, append, append_batch,
//   free, free_many, fork, fork_many, truncate, get_sequence, set_priority, apply_streaming_llm.
//   Shard-scanning methods (one shard lock at a time): select_eviction_target, evict,
//   evict_to_threshold, sequence_ids, operator<<.
//   pin, unpin and copy_done lock the sequence's shard.
//
// Memory ordering
//   A sequence's table is read and written only under its shard lock (acquire exchange, release
//   store), which orders block-table changes between threads. Reference counts are BlockPool's
//   (acq_rel drops). Recency stamps come from one relaxed fetch_add on a cache line of its own (one
//   per call; append_batch takes all of its items' stamps with one fetch_add): its order agrees
//   with happens-before, so LRU/LFU order is exact for calls that happen one after another.
//
// Prefix caching (Options::prefix, on by default; src/cache/prefix_cache.hpp has the machinery)
//   A sequence allocated with token ids (allocate(seq, prompt, salt)) is in token mode: its full
//   blocks are named by chain hashes (pkv/block_hash.hpp) and, once the caller has written their
//   KV (commit(), or append with token ids, which commits what the sequence held before), become
//   findable: a later allocate of a prompt with the same leading blocks under the same salt shares
//   them instead of computing them. Only full, committed blocks are findable; two threads
//   prefilling the same prompt at once each compute their own copy (duplicates per hash are
//   allowed; a hit takes a held duplicate before a reclaimable one, which would cost a free
//   block). Block states: plain free -> held -> cached-held (findable) -> reclaimable (findable,
//   held by no sequence; counted in free_block_count()) -> revived by a hit, or reclaimed (taken
//   for other data, and no longer findable under its old hash). New blocks come from plain free
//   blocks first; reclaimable ones are taken only when none is left, least recently released first,
//   and a sequence's blocks are released tail first (its held copy sources, hold_copy_sources,
//   before them). No stranding: allocating k blocks succeeds whenever plain free + reclaimable
//   >= k.
//     free_block_count() == plain free + reclaimable,  used + free == total_blocks()
//   Different salts never share a block. With verify_tokens a hit also compares the stored token
//   ids, so a digest collision cannot produce a wrong hit (prefix_stats().verify_failures counts
//   those that differed). fork shares cached blocks like any block; a copy-on-write block is
//   private until full and committed; apply_streaming_llm stops a sequence's publishing; a
//   sequence allocated by count never publishes, and appending by count to one in token mode is
//   invalid_operation.
//   Concurrency: match_prefix and the hit path of allocate take no lock other lookups take: a
//   hit is one CAS on the block's state word (holders + generation + findable), so a block is
//   either revived or reclaimed, never both. Publishing and reclaiming take one index shard's
//   lock. A lookup racing with a publish or reclaim on the same index shard may miss; it never
//   returns a block whose content differs from the hash it asked for. The reclaim order and the
//   no-stranding rule are exact when no other call is in flight; under concurrency a call that
//   takes blocks may reclaim cached blocks that no sequential order would (a racing call took the
//   plain blocks it counted on, or a racing free had not yet returned its own), and if it then
//   fails with out_of_memory, what it reclaimed returns as plain free blocks, hashes forgotten. A
//   cached prefix can be lost early that way; no hit ever returns wrong content.
//   Memory ordering: a block's hash (and token ids) are stored with release before its findable
//   bit is set (acq_rel CAS); lookups load state and hash with acquire and validate by CAS (or
//   by re-reading the state), so a validated hash is the one published with that generation.
//
// Defined edge cases
//   allocate(seq, 0) registers a sequence with no blocks. append(seq, 0) succeeds, takes no block,
//   returns no CopyOp and counts as an access (recency and LFU). apply_streaming_llm with
//   sink + window >= num_tokens returns 0 and changes nothing; sink + window == 0 is rejected.
//   fork_many(src, {}) checks src and changes nothing. free_many({}) does nothing. truncate(seq,
//   0) changes nothing; truncate(seq, num_tokens) keeps the sequence with no tokens and no blocks.
//   truncate is not an access (recency and LFU stay).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "pkv/block_hash.hpp"
#include "pkv/block_pool.hpp"
#include "pkv/prefix_types.hpp"
#include "pkv/types.hpp"

namespace pkv {

class PagedKvCache {
 public:
  /// Number of sequence-map shards (power of two).
  static constexpr std::size_t kShards = 256;
  static_assert((kShards & (kShards - 1)) == 0, "shard count must be a power of two");

  struct Options {
    BlockPool::Options pool{};
    /// false (default, as vLLM): append() drops the sequence's reference to a copy-on-write
    /// source at once. true: the sequence keeps it until copy_done(seq) (or free / evict), so the
    /// source's data stays intact while the caller copies, whatever other threads free meanwhile;
    /// other holders appending before then copy too instead of writing in place.
    bool hold_copy_sources = false;
    /// Thread-affine placement; 0 (default) is off. With s in 1..63, the bits of a sequence id
    /// from bit s up name the sequence's owner, e.g. the scheduler thread that makes its ids as
    /// (owner << s) | n. The sequences of owner o then live in slice o mod kAffinitySlices of
    /// kShards / kAffinitySlices shards, so a thread stepping its own sequences writes shard lines
    /// that other threads touch only when they reach its sequences (fork, evict, get_sequence).
    /// Off, a hash of the whole id spreads every owner's sequences over all kShards shards.
    /// Nothing else changes: any thread may still call anything on any sequence. Values above
    /// 63 are rejected (Errc::invalid_argument).
    unsigned affinity_shift = 0;
    /// Automatic prefix caching (see "Prefix caching" above). Only sequences allocated with
    /// token ids take part; a cache used only through the count forms never builds its index.
    PrefixCachingOptions prefix{};
  };
  /// Shard slices for Options::affinity_shift (a power of two dividing kShards).
  static constexpr std::size_t kAffinitySlices = 16;
  static_assert(kShards % kAffinitySlices == 0 && (kAffinitySlices & (kAffinitySlices - 1)) == 0);

  /// Creates a cache of `num_blocks` blocks of `block_size` tokens; num_heads and head_dim size the
  /// KV memory (2 x block_size x num_heads x head_dim x 2 bytes per block, f16 K and V).
  /// All four must be non-zero, num_blocks <= BlockPool::kMaxBlocks, and the byte sizes must fit
  /// size_t; otherwise Errc::invalid_argument.
  static Result<std::unique_ptr<PagedKvCache>> create(std::size_t num_blocks,
                                                      std::size_t block_size, std::size_t num_heads,
                                                      std::size_t head_dim, Options options);
  static Result<std::unique_ptr<PagedKvCache>> create(std::size_t num_blocks,
                                                      std::size_t block_size, std::size_t num_heads,
                                                      std::size_t head_dim) {
    return create(num_blocks, block_size, num_heads, head_dim, Options{});
  }
  /// Same as create(); throws std::invalid_argument with the same message on a bad config.
  PagedKvCache(std::size_t num_blocks, std::size_t block_size, std::size_t num_heads,
               std::size_t head_dim, Options options);
  PagedKvCache(std::size_t num_blocks, std::size_t block_size, std::size_t num_heads,
               std::size_t head_dim)
      : PagedKvCache(num_blocks, block_size, num_heads, head_dim, Options{}) {}
  ~PagedKvCache();

  PagedKvCache(const PagedKvCache&) = delete;
  PagedKvCache& operator=(const PagedKvCache&) = delete;

  // ---- configuration ----
  /// Replaces the strategy (default LRU) and rebuilds the victim indexes. Priority(0) and
  /// StreamingLLM(0, 0) are rejected (Errc::invalid_argument). Thread-safe; excludes evict.
  Result<void> set_eviction_strategy(const EvictionStrategy& strategy);
  EvictionStrategy eviction_strategy() const;
  /// Sets the needs_eviction threshold, clamped to 0..1 (default 0.9). NaN is rejected.
  Result<void> set_eviction_threshold(double threshold);
  double eviction_threshold() const noexcept;
  /// Sets a sequence's priority (lower is evicted first under Priority). Takes shard lock.
  Result<void> set_priority(SeqId seq, std::uint32_t priority);

  // ---- pinning and copy completion (take the sequence's shard lock) ----
  /// Pins `seq`: evict / evict_to_threshold / select_eviction_target never choose it until it is
  /// unpinned as many times (pins nest). A scheduler pins the sequences it is running so that no
  /// other thread evicts blocks it is writing. free() of a pinned sequence is still allowed.
  /// Errors: sequence_not_found.
  Result<void> pin(SeqId seq);
  /// Errors: sequence_not_found; invalid_operation "Sequence S<n> is not pinned".
  Result<void> unpin(SeqId seq);
  /// With Options::hold_copy_sources, releases the copy-on-write sources `seq` still holds
  /// (call it once the KV data of its CopyOps has been copied); returns how many. Without the
  /// option it returns 0. Errors: sequence_not_found.
  Result<std::size_t> copy_done(SeqId seq);

  // ---- sizes and figures (lock-free) ----
  std::size_t block_size() const noexcept { return block_size_; }
  std::size_t total_blocks() const noexcept { return num_blocks_; }
  std::size_t free_block_count() const noexcept;
  std::size_t used_block_count() const noexcept;
  double utilization() const noexcept;
  std::size_t block_memory_bytes() const noexcept { return block_bytes_; }
  std::size_t total_memory_bytes() const noexcept { return block_bytes_ * num_blocks_; }
  std::size_t used_memory_bytes() const noexcept { return block_bytes_ * used_block_count(); }
  bool needs_eviction() const noexcept;
  std::size_t num_sequences() const noexcept;
  CacheStats stats() const noexcept;

  // ---- sequences (take the sequence's shard lock) ----
  /// Registers `seq` with ceil(num_tokens / block_size) blocks, all or nothing.
  /// Errors: invalid_operation "Sequence S<n> already exists"; out_of_memory; invalid_argument when
  /// the block count would not fit.
  Result<void> allocate(SeqId seq, std::size_t num_tokens);

  /// Adds `num_tokens` tokens. Takes new blocks only for tokens that do not fit in the free slots
  /// of the last block. If the last block has free slots but is shared (after fork), the sequence
  /// first moves to a fresh private block and the CopyOp {shared, fresh} is returned: the caller
  /// copies the block's KV data before writing. At most one CopyOp per call. All or nothing.
  /// The copy's source keeps the slots this sequence had filled while some other sequence holds
  /// it: by default this sequence's reference is dropped before append returns (as in vLLM), so
  /// perform the copy before freeing or evicting the last other holder, and copy only those
  /// filled slots (an other holder left alone with the block appends into its free slots in
  /// place); with Options::hold_copy_sources the source stays held by this sequence, and is not
  /// written by anyone, until copy_done(seq).
  /// Errors: sequence_not_found; out_of_memory; invalid_argument on token-count overflow.
  Result<std::optional<CopyOp>> append(SeqId seq, std::size_t num_tokens);

  /// One decode step: append(seqs[i], num_tokens) for i = 0, 1, ... in that order. `out` (cleared
  /// first, capacity kept) lists the items that failed, with the Error that call would return,
  /// and the CopyOps of the items that copied; every other item appended with no CopyOp, and
  /// out.item(i) gives item i's outcome as that call would return it. Each item is all or nothing
  /// on its own and a failed item does not stop the others, exactly as separate calls; the batch
  /// as a whole is not one atomic step (another thread's call may land between two items). The
  /// difference is cost: one recency-clock update for the whole batch instead of one per item
  /// (a scheduler stepping its batch writes no cache line shared with other threads per token),
  /// and no result written per successful item. Recency: item i is stamped as if called i-th
  /// right when the batch started (an entry that another thread touched after that keeps its
  /// later stamp). Duplicate ids are appended twice.
  void append_batch(std::span<const SeqId> seqs, std::size_t num_tokens, AppendBatchOutcome& out);
  /// The same with a token count per item (speculative decoding: each sequence keeps the tokens
  /// it accepted; 0 is allowed): append(seqs[i], num_tokens[i]) for each i, in order, exactly as
  /// above. Errors: invalid_argument when the two spans differ in length (then nothing is
  /// appended and `out` is cleared); otherwise every item's outcome is in `out`.
  Result<void> append_batch(std::span<const SeqId> seqs, std::span<const std::size_t> num_tokens,
                            AppendBatchOutcome& out);

  /// Drops the sequence and one reference to each of its blocks. Errors: sequence_not_found.
  Result<void> free(SeqId seq);

  // ---- prefix caching (see "Prefix caching" above; shard-locking unless marked) ----
  /// Registers `seq` with the blocks of `prompt`: the cached blocks of its longest cached prefix
  /// (under `salt`) are shared, new blocks are taken for the rest, all or nothing. Returns how
  /// many leading tokens were found cached: a multiple of block_size and at most
  /// prompt.size() - 1 (the last prompt token is always computed, to produce logits). Commits
  /// nothing: the caller writes the KV of the other tokens, then commit()s or appends.
  /// With prefix caching off it acts as allocate(seq, prompt.size()) and returns 0.
  /// Errors: invalid_argument (empty prompt); invalid_operation (exists); out_of_memory (then no
  /// holder count changed).
  Result<std::size_t> allocate(SeqId seq, std::span<const TokenId> prompt,
                               std::string_view salt = {});
  /// append(seq, tokens.size()) that records the ids, so that full blocks can be published. It
  /// first commits every token the sequence held before the call (the forward pass that produced
  /// these tokens computed them). On a sequence allocated by count, or with prefix caching off,
  /// it is the count form. Errors: as the count form.
  Result<std::optional<CopyOp>> append(SeqId seq, std::span<const TokenId> tokens);
  /// One decode step with token ids, one token per item: append(seqs[i], {tokens[i]}) in order,
  /// with append_batch's outcome and recency rules. Errors: invalid_argument when the spans
  /// differ in length (nothing appended, `out` cleared).
  Result<void> append_batch(std::span<const SeqId> seqs, std::span<const TokenId> tokens,
                            AppendBatchOutcome& out);
  /// The caller has written the KV of the first `num_tokens` tokens of `seq`: the full blocks
  /// among them become findable. Returns how many blocks were newly published (0 for a
  /// sequence that does not publish: allocated by count, or after StreamingLLM).
  /// Errors: sequence_not_found; invalid_argument when num_tokens exceeds the sequence's length.
  Result<std::size_t> commit(SeqId seq, std::size_t num_tokens);
  /// How many leading tokens of `tokens` allocate(.., tokens, salt) would find cached now, with
  /// no effect. Thread-safe, lock-free.
  std::size_t match_prefix(std::span<const TokenId> tokens, std::string_view salt = {}) const;
  /// Findable blocks, held or not. Lock-free (exact when no call is in flight).
  std::size_t cached_block_count() const noexcept;
  /// Findable blocks held by no sequence (counted in free_block_count()). Lock-free.
  std::size_t reclaimable_block_count() const noexcept;
  /// The prefix cache's counters (prefix_types.hpp). Lock-free.
  PrefixCacheStats prefix_stats() const noexcept;
  /// Forgets every hash: held blocks stay with their sequences (and are not published again),
  /// reclaimable ones become plain free. Thread-safe; calls racing with it may publish blocks
  /// that stay findable.
  Result<void> reset_prefix_cache();
  /// How many sequences hold block `b` (the pool's count for blocks of count-mode sequences, the
  /// prefix cache's holder count for those of token-mode ones). For tests and inspection.
  std::size_t block_ref_count(BlockId b) const noexcept;
  /// free_many takes ids in chunks of this many: each chunk's shards are locked at once.
  static constexpr std::size_t kFreeManyChunk = 32;
  /// free(seqs[i]) for i = 0, 1, ... in that order (beam losers, a finished batch). `out`
  /// (cleared first, capacity kept) lists the items that failed with the Error that call would
  /// return (sequence_not_found for an unknown id, or for an id already freed by an earlier item);
  /// every other item was freed. A failed item does not stop the others. The difference from
  /// separate calls is cost: the ids go in chunks of kFreeManyChunk; a chunk locks its shards at
  /// once (address order), removes its sequences, and drops the references of all of them with
  /// one count update per distinct block (a block that m of them hold loses m references in one
  /// step), then unlocks. Blocks are released before those locks are dropped, as with free: a
  /// caller that sees a sequence gone also sees its blocks free. Takes the shard locks of a chunk.
  void free_many(std::span<const SeqId> seqs, FreeManyOutcome& out);
  FreeManyOutcome free_many(std::span<const SeqId> seqs) {
    FreeManyOutcome out;
    free_many(seqs, out);
    return out;
  }

  /// Creates `dst` sharing every block of `src` (reference counts up, no block taken).
  /// Errors: invalid_operation for src == dst ("Cannot fork sequence S<n> onto itself") or an
  /// existing dst ("Destination sequence S<n> already exists"); sequence_not_found for src.
  /// Takes the shard locks of src and dst (fork_many with one destination).
  Result<void> fork(SeqId src, SeqId dst);
  /// fork(src, d) for every d of `dsts` in one step, all or nothing (parallel sampling, beam
  /// expansion): each block of src gains dsts.size() references in one count update. Each child
  /// is what fork would make (same blocks, tokens and runs, src's priority, access_count 1), and
  /// the children are stamped as if forked one after another in dsts order. Errors, checked in
  /// this order, and then nothing changes: invalid_operation "Cannot fork sequence S<n> onto
  /// itself" if some dst == src; invalid_argument if an id appears twice in dsts or dsts has
  /// 2^32 - 1 ids or more; invalid_operation "Destination sequence S<n> already exists" for the
  /// first existing dst; sequence_not_found for src. Takes the shard locks of src and every dst
  /// at once (address order, each shard once).
  Result<void> fork_many(SeqId src, std::span<const SeqId> dsts);

  /// Drops the last `num_tokens` tokens of `seq` (rejected speculative-decoding drafts; as
  /// TensorRT-LLM's rewindKVCache) and returns how many blocks left its table. Blocks that hold
  /// no kept token are released (one reference each, under the shard lock, as free); a kept block
  /// stays as it is, shared or not (no copy): the next append into a kept partly filled block that
  /// is shared copies it first, as after fork. After StreamingLLM the token runs are cut from the
  /// end: the newest kept tokens go first, the dead slots between runs stay dead, and a run that
  /// loses all its tokens is gone. Not an access: recency and LFU count stay.
  /// Errors: sequence_not_found; invalid_argument when num_tokens exceeds the sequence's length.
  Result<std::size_t> truncate(SeqId seq, std::size_t num_tokens);

  /// A snapshot copy of the sequence, or nullopt.
  std::optional<SequenceInfo> get_sequence(SeqId seq) const;
  /// Ids of all live sequences (each shard read under its lock; unordered).
  std::vector<SeqId> sequence_ids() const;

  // ---- eviction ----
  /// The sequence the strategy would evict now, or nullopt if there is none.
  std::optional<SeqId> select_eviction_target() const;
  /// Frees the strategy's victim and counts an eviction.
  /// Errors: invalid_operation "No sequences to evict".
  Result<SeqId> evict();
  /// Evicts until utilization() <= target or no sequence is left. target must be in 0..1
  /// (invalid_argument otherwise).
  Result<std::vector<SeqId>> evict_to_threshold(double target);
  /// Keeps the first `sink_tokens` and the last `window_tokens` tokens of `seq`, frees every block
  /// that holds none of them, and returns the number of tokens dropped. See "Defined edge cases".
  Result<std::size_t> apply_streaming_llm(SeqId seq, std::size_t sink_tokens,
                                          std::size_t window_tokens);

  /// The shard `seq` lives in (0..kShards-1), by Options::affinity_shift: for tests and tuning.
  std::size_t shard_index(SeqId seq) const noexcept;

  /// The underlying pool (for inspection: ref counts, validate_unsafe).
  const BlockPool& pool() const noexcept;

  /// Full structural check of the cache and its pool. NOT thread-safe: call only when quiescent.
  /// Returns "" when all hold: every referenced block's count equals the number of block tables
  /// holding it; free + referenced == total; each shared block has the same fill in every table
  /// holding it; each index matches its map.
  std::string validate_unsafe() const;

 private:
  // Everything else lives behind Impl (src/cache/cache_impl.hpp). These three stay inline because
  // block_size(), total_blocks() and the memory figures above are inline reads of constants.
  struct Impl;
  std::size_t num_blocks_;
  std::size_t block_size_;
  std::size_t block_bytes_;
  std::unique_ptr<Impl> impl_;
};

/// The seed's Display form:
///   PagedKvCache
///     Strategy: LRU (block_size=16)
///     Blocks: 3/10 (30.0% used)
///     Memory: 0.79 MB / 2.62 MB
///     Sequences: 1 active
///     Stats: allocs=3, frees=0, evictions=0, forks=0
std::ostream& operator<<(std::ostream& os, const PagedKvCache& cache);

}  // namespace pkv
