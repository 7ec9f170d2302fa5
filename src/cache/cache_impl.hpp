// src/cache/cache_impl.hpp — PagedKvCache's state (PagedKvCache::Impl) and the helpers its calls
// share; the calls themselves are in the .cpp files next to it, one concern each:
//   cache.cpp          construction, configuration, pin / copy_done, figures and stats, printing
//   sequences.cpp      allocate, free, free_many, get_sequence, sequence_ids
//   fork.cpp           fork and fork_many
//   append.cpp         append and append_batch
//   truncate.cpp       truncate (its block release in one helper, truncate_blocks_locked)
//   eviction.cpp       select_eviction_target, evict, evict_to_threshold
//   streaming_llm.cpp  apply_streaming_llm over the pure compaction of streaming_llm.hpp
//   validate.cpp       validate_unsafe and the per-shard validator
//   prefix.cpp         prefix caching's calls: allocate / append with token ids, commit,
//                      match_prefix, its figures (over prefix_cache.hpp)
//   blocks.cpp         taking and dropping blocks for sequences, managed or plain
// and the helpers of the multi-shard calls: shard_set.hpp (several shard locks in address order),
// refcounts.hpp (count changes of n per block: retain_n / release_n, and the fold).
// The cache's accounting (exact whenever no call is in flight):
//   pool.free_count() + reclaimable + #{ b : holders(b) > 0 } == num_blocks
//   holders(b) == #{ entries holding b in blocks } + #{ entries holding b in pending }
//   where holders(b) is the pool's ref_count(b) for a plain block and the prefix cache's holder
//   count for a managed one (held by token-mode entries only), and reclaimable blocks hold the
//   pool's reference of the cache (prefix_cache.hpp)
//   sum over shards of size == num_sequences()
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>

#include "block_pool_impl.hpp"  // the pool's definitions, so its calls inline here as in the pool
#include "cache/placement.hpp"
#include "cache/prefix_cache.hpp"
#include "cache/shard.hpp"
#include "config.hpp"
#include "pkv/block_pool.hpp"
#include "pkv/detail/cache_line.hpp"
#include "pkv/detail/thread_index.hpp"
#include "pkv/paged_kv_cache.hpp"

namespace pkv {

namespace detail {

/// Statistics striped by thread (stats() sums them); relaxed counters.
struct alignas(kCacheLine) Stripe {
  std::atomic<std::uint64_t> evictions{0};
  std::atomic<std::uint64_t> forks{0};
};
inline constexpr std::size_t kStripes = 64;

/// What append did to one entry (a one-byte code; the CopyOp and the Error come back apart).
enum class AppendStep : std::uint8_t { failed, appended, copied };

/// append's Result from the locked body's outcome, built in place (both append forms).
inline Result<std::optional<CopyOp>> append_result(AppendStep step, const CopyOp& copy,
                                                   std::optional<Error>& err) {
  if (step == AppendStep::appended) return Result<std::optional<CopyOp>>(std::in_place);
  if (step == AppendStep::copied) return Result<std::optional<CopyOp>>(std::in_place, copy);
  return std::move(*err);
}

/// The configuration checks of PagedKvCache::create; sets *block_bytes on success.
std::optional<Error> config_error(std::size_t num_blocks, std::size_t block_size,
                                  std::size_t num_heads, std::size_t head_dim,
                                  const PagedKvCache::Options& options, std::size_t* block_bytes);

}  // namespace detail

struct PagedKvCache::Impl {
  Impl(std::size_t num_blocks, std::size_t block_size, const Options& options);

  // ---- configuration (read-only after construction) ----
  const std::size_t num_blocks;
  const std::size_t block_size;
  const bool hold_copy_sources;
  const detail::Placement placement;
  const PrefixCachingOptions prefix_options;
  BlockPool pool;

  // ---- prefix caching: created by the first call that uses token ids ----
  std::once_flag prefix_once;
  std::unique_ptr<detail::PrefixCache> prefix_owner;
  std::atomic<detail::PrefixCache*> prefix{nullptr};  // release once built, acquire to use
  detail::PrefixCache* prefix_or_null() const noexcept {
    return prefix.load(std::memory_order_acquire);
  }
  detail::PrefixCache& prefix_cache();  // builds it on first use

  // ---- shards and shared words ----
  std::array<detail::Shard, kShards> shards;
  std::array<detail::Stripe, detail::kStripes> stripes;
  // Bit i set while shard i's published head is not empty (PublishedHead): victim scans read
  // these kShards / 64 words and then only the heads of occupied shards.
  alignas(detail::kCacheLine) std::array<std::atomic<std::uint64_t>, kShards / 64> occupied{};
  static_assert(kShards % 64 == 0);
  // Logical clock for recency: one relaxed RMW on its own line (tick()).
  alignas(detail::kCacheLine) std::atomic<std::uint64_t> clock{0};
  alignas(detail::kCacheLine) std::atomic<std::uint64_t> peak{0};  // CAS-max, relaxed (a figure)
  std::atomic<double> threshold{0.9};
  static_assert(std::atomic<double>::is_always_lock_free);
  // Excludes strategy changes (writer) from victim selection (readers). Never taken by
  // allocate / append / free / fork / get_sequence.
  mutable std::shared_mutex strategy_mu;
  EvictionStrategy strategy;  // guarded by strategy_mu

  // ---- helpers the calls share ----

  detail::Shard& shard_at(SeqId seq, std::size_t hash) noexcept {
    return shards[placement.shard(seq, hash)];
  }
  detail::Shard& shard_of(SeqId seq) noexcept { return shard_at(seq, std::hash<SeqId>{}(seq)); }
  std::size_t index_of(const detail::Shard& sh) const noexcept {
    return static_cast<std::size_t>(&sh - shards.data());
  }
  detail::Stripe& my_stripe() noexcept {
    return stripes[detail::thread_index() & (detail::kStripes - 1)];
  }

  /// A recency stamp, taken under the shard lock of the sequence it stamps. One relaxed RMW on a
  /// line of its own: its modification order agrees with happens-before, so calls that happen
  /// one after another are ordered exactly. Within a shard the stamps rise, since they are taken
  /// under the shard lock; the recency list's O(1) push to the tail relies on that.
  std::uint64_t tick() noexcept { return clock.fetch_add(1, std::memory_order_relaxed) + 1; }

  /// Raises `peak` to the pool's used count (after a call took blocks).
  void note_peak() noexcept {
    const std::uint64_t used = num_blocks - free_blocks();
    std::uint64_t p = peak.load(std::memory_order_relaxed);
    while (used > p && !peak.compare_exchange_weak(p, used, std::memory_order_relaxed)) {
    }
  }

  /// The per-shard validator, for PKV_ASSERT_EXPENSIVE after a locked mutation of `sh`.
  std::string validate_shard(const detail::Shard& sh) const {
    return sh.validate_locked(index_of(sh), placement, block_size, pool, prefix_or_null());
  }

  // blocks.cpp: blocks for a sequence; `managed` = the sequence is in token mode.
  /// Takes k blocks into `out` (appended), plain free ones first, then reclaimable ones, least
  /// recently released first; all or nothing (Errc::out_of_memory, `out` unchanged).
  Result<void> acquire_blocks(std::size_t k, std::vector<BlockId>& out, bool managed) {
    if (!managed) {  // the plain path stays the pool's own while it has free blocks
      Result<void> r = pool.acquire(k, out);
      if (r || prefix_or_null() == nullptr) return r;
    }
    return acquire_blocks_slow(k, out, managed);
  }
  Result<void> acquire_blocks_slow(std::size_t k, std::vector<BlockId>& out, bool managed);
  void retain_blocks(std::span<const BlockId> ids, bool managed);
  /// n references more to each block (fork_many); managed blocks in one add of n each.
  void retain_blocks_n(std::span<const BlockId> ids, std::uint32_t n, bool managed);
  void release_block(BlockId b, bool managed);
  void release_blocks(std::span<const BlockId> ids, bool managed);
  std::uint64_t holders(BlockId b, bool managed) const noexcept {
    return managed ? prefix_or_null()->holders(b) : pool.ref_count(b);
  }
  /// Free blocks as a user counts them: plain free + reclaimable, at most num_blocks. The two
  /// counters (and the pool's per-thread ones) are read one after another while other calls move
  /// blocks between them, so the raw sum can count a moving block twice; clamped, it stays a
  /// value the concurrent calls could produce, and num_blocks - free_blocks() cannot wrap.
  std::size_t free_blocks() const noexcept {
    const detail::PrefixCache* pc = prefix_or_null();
    return std::min<std::size_t>(num_blocks,
                                 pool.free_count() + (pc != nullptr ? pc->reclaimable() : 0));
  }

  // truncate.cpp
  std::size_t truncate_blocks_locked(detail::Entry& e, std::size_t keep);

  // append.cpp
  detail::AppendStep append_locked(detail::Shard& sh, detail::Entry& e, std::size_t num_tokens,
                                   std::uint64_t stamp, bool* took, CopyOp* copy,
                                   std::optional<Error>* err);
  // Every append_batch form: item i appends per_item[i] tokens (PerItem) or num_tokens; with
  // ids (WithIds: the token-id form, one token per item) a token-mode item records ids[i]
  // (record_appended), and without, a token-mode item is an error.
  template <bool PerItem, bool WithIds = false>
  void append_items(std::span<const SeqId> seqs, std::size_t num_tokens,
                    const std::size_t* per_item, AppendBatchOutcome& out,
                    const TokenId* ids = nullptr);
  // prefix.cpp: after a token-mode entry appended `ids` (its shard lock held): records them and
  // publishes the full blocks among the `held` tokens it had before the append.
  void record_appended(detail::Entry& e, std::span<const TokenId> ids, std::uint64_t held);
};

}  // namespace pkv
