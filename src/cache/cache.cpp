// src/cache/cache.cpp — PagedKvCache's construction and configuration, pinning and copy
// completion, its lock-free figures and statistics, and the seed's Display form.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <ostream>
#include <shared_mutex>
#include <stdexcept>

#include "cache/cache_impl.hpp"

namespace pkv {

using detail::Entry;
using detail::Shard;
using detail::ShardLock;

std::optional<Error> detail::config_error(std::size_t num_blocks, std::size_t block_size,
                                          std::size_t num_heads, std::size_t head_dim,
                                          const PagedKvCache::Options& options,
                                          std::size_t* block_bytes) {
  if (num_blocks == 0) return Error::invalid_argument("num_blocks must be at least 1");
  if (block_size == 0) return Error::invalid_argument("block_size must be at least 1");
  if (num_heads == 0) return Error::invalid_argument("num_heads must be at least 1");
  if (head_dim == 0) return Error::invalid_argument("head_dim must be at least 1");
  if (num_blocks > BlockPool::kMaxBlocks)
    return Error::invalid_argument("num_blocks " + std::to_string(num_blocks) +
                                   " exceeds the 32-bit block id space");
  // 2 (K and V) x block_size x num_heads x head_dim x 2 bytes (f16), times num_blocks, must fit.
  std::size_t bytes = 4;
  for (std::size_t f : {block_size, num_heads, head_dim, num_blocks}) {
    if (bytes > std::numeric_limits<std::size_t>::max() / f)
      return Error::invalid_argument(
          "block_size x num_heads x head_dim x num_blocks overflows the memory size");
    bytes *= f;
  }
  if (auto e = detail::pool_config_error(num_blocks, options.pool)) return e;
  if (options.affinity_shift > 63)
    return Error::invalid_argument("affinity_shift " + std::to_string(options.affinity_shift) +
                                   " is not a bit position of a 64-bit id (0..63)");
  *block_bytes = bytes / num_blocks;
  return std::nullopt;
}

PagedKvCache::Impl::Impl(std::size_t nb, std::size_t bs, const Options& options)
    : num_blocks(nb),
      block_size(bs),
      hold_copy_sources(options.hold_copy_sources),
      placement(detail::Placement::from_affinity_shift(options.affinity_shift)),
      prefix_options(options.prefix),
      pool(nb, options.pool) {
  for (std::size_t i = 0; i < kShards; ++i)
    shards[i].head.attach(&occupied[i / 64], std::uint64_t{1} << (i % 64));
}

// ---- construction and configuration ----

Result<std::unique_ptr<PagedKvCache>> PagedKvCache::create(std::size_t num_blocks,
                                                           std::size_t block_size,
                                                           std::size_t num_heads,
                                                           std::size_t head_dim, Options options) {
  std::size_t bytes = 0;
  if (auto e = detail::config_error(num_blocks, block_size, num_heads, head_dim, options, &bytes))
    return *e;
  return std::make_unique<PagedKvCache>(num_blocks, block_size, num_heads, head_dim, options);
}

PagedKvCache::PagedKvCache(std::size_t num_blocks, std::size_t block_size, std::size_t num_heads,
                           std::size_t head_dim, Options options)
    : num_blocks_(num_blocks), block_size_(block_size), block_bytes_(0) {
  if (auto e =
          detail::config_error(num_blocks, block_size, num_heads, head_dim, options, &block_bytes_))
    throw std::invalid_argument(e->message());
  impl_ = std::make_unique<Impl>(num_blocks, block_size, options);
}

PagedKvCache::~PagedKvCache() = default;

const BlockPool& PagedKvCache::pool() const noexcept {
  return impl_->pool;
}

std::size_t PagedKvCache::shard_index(SeqId seq) const noexcept {
  return impl_->index_of(impl_->shard_of(seq));
}

Result<void> PagedKvCache::set_eviction_strategy(const EvictionStrategy& s) {
  if (s.kind() == EvictionStrategy::Kind::priority && s.levels() == 0)
    return Error::invalid_argument("Priority strategy needs at least 1 level");
  if (s.kind() == EvictionStrategy::Kind::streaming_llm) {
    if (s.sink_tokens() + s.window_tokens() == 0 ||
        s.sink_tokens() > std::numeric_limits<std::size_t>::max() - s.window_tokens())
      return Error::invalid_argument("StreamingLLM needs 1 <= sink + window (no overflow)");
  }
  Impl& m = *impl_;
  std::unique_lock<std::shared_mutex> w(m.strategy_mu);
  m.strategy = s;
  for (Shard& sh : m.shards) {
    std::lock_guard<ShardLock> g(sh.mu);
    sh.rebuild(s.kind());
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  return {};
}

EvictionStrategy PagedKvCache::eviction_strategy() const {
  std::shared_lock<std::shared_mutex> r(impl_->strategy_mu);
  return impl_->strategy;
}

Result<void> PagedKvCache::set_eviction_threshold(double threshold) {
  if (std::isnan(threshold)) return Error::invalid_argument("eviction threshold is NaN");
  impl_->threshold.store(std::clamp(threshold, 0.0, 1.0), std::memory_order_relaxed);
  return {};
}

double PagedKvCache::eviction_threshold() const noexcept {
  return impl_->threshold.load(std::memory_order_relaxed);
}

Result<void> PagedKvCache::set_priority(SeqId seq, std::uint32_t priority) {
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  Entry* e = sh.map.find_entry(seq);
  if (e == nullptr) return Error::sequence_not_found(seq);
  sh.update(*e, [&](Entry& x) { x.priority = priority; });
  PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  return {};
}

// ---- pinning and copy completion ----

Result<void> PagedKvCache::pin(SeqId seq) {
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  Entry* e = sh.map.find_entry(seq);
  if (e == nullptr) return Error::sequence_not_found(seq);
  if (e->pins == std::numeric_limits<std::uint32_t>::max())
    return Error::invalid_operation("Sequence " + to_string(seq) + " is pinned too often");
  if (e->pins == 0) sh.index_erase(*e);  // out of the victims' reach
  ++e->pins;
  PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  return {};
}

Result<void> PagedKvCache::unpin(SeqId seq) {
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  Entry* e = sh.map.find_entry(seq);
  if (e == nullptr) return Error::sequence_not_found(seq);
  if (e->pins == 0)
    return Error::invalid_operation("Sequence " + to_string(seq) + " is not pinned");
  if (--e->pins == 0) sh.index_insert(*e);
  PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  return {};
}

Result<std::size_t> PagedKvCache::copy_done(SeqId seq) {
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::vector<BlockId> pending;
  {
    std::lock_guard<ShardLock> g(sh.mu);
    Entry* e = sh.map.find_entry(seq);
    if (e == nullptr) return Error::sequence_not_found(seq);
    pending.swap(e->pending);
    // Under the lock, as Shard::take_locked says.
    m.release_blocks(pending, e->token_mode);
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  return pending.size();
}

// ---- figures ----

std::size_t PagedKvCache::free_block_count() const noexcept {
  return impl_->free_blocks();
}
std::size_t PagedKvCache::used_block_count() const noexcept {
  return num_blocks_ - std::min(num_blocks_, impl_->free_blocks());
}

double PagedKvCache::utilization() const noexcept {
  return static_cast<double>(used_block_count()) / static_cast<double>(num_blocks_);
}

bool PagedKvCache::needs_eviction() const noexcept {
  return utilization() >= eviction_threshold();
}

std::size_t PagedKvCache::num_sequences() const noexcept {
  std::size_t n = 0;
  for (const Shard& sh : impl_->shards) n += sh.size.load(std::memory_order_relaxed);
  return n;
}

CacheStats PagedKvCache::stats() const noexcept {
  const Impl& m = *impl_;
  CacheStats s;
  s.total_allocations = m.pool.total_acquired();
  s.total_frees = m.pool.total_released();
  for (const detail::Stripe& st : m.stripes) {
    s.total_evictions += st.evictions.load(std::memory_order_relaxed);
    s.total_forks += st.forks.load(std::memory_order_relaxed);
  }
  s.peak_blocks_used = m.peak.load(std::memory_order_relaxed);
  return s;
}

// ---- printing ----

std::ostream& operator<<(std::ostream& os, const PagedKvCache& c) {
  const CacheStats s = c.stats();
  const std::size_t used = c.used_block_count();
  char buf[256];
  os << "PagedKvCache\n";
  os << "  Strategy: " << c.eviction_strategy() << " (block_size=" << c.block_size() << ")\n";
  std::snprintf(buf, sizeof buf, "  Blocks: %zu/%zu (%.1f%% used)\n", used, c.total_blocks(),
                static_cast<double>(used) / static_cast<double>(c.total_blocks()) * 100.0);
  os << buf;
  std::snprintf(buf, sizeof buf, "  Memory: %.2f MB / %.2f MB\n",
                static_cast<double>(used * c.block_memory_bytes()) / 1'000'000.0,
                static_cast<double>(c.total_memory_bytes()) / 1'000'000.0);
  os << buf;
  os << "  Sequences: " << c.num_sequences() << " active\n";
  os << "  Stats: allocs=" << s.total_allocations << ", frees=" << s.total_frees
     << ", evictions=" << s.total_evictions << ", forks=" << s.total_forks << '\n';
  return os;
}

}  // namespace pkv
