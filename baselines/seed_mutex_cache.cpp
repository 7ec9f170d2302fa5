// baselines/seed_mutex_cache.cpp — see seed_mutex_cache.hpp. Follows shared/seed/cache.rs line by
// line; each method takes mu_ once and calls *_locked helpers.
#include "seed_mutex_cache.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <ostream>
#include <stdexcept>

namespace pkv::baseline {

SeedMutexCache::SeedMutexCache(std::size_t num_blocks, std::size_t block_size,
                               std::size_t num_heads, std::size_t head_dim)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      block_bytes_(2 * block_size * num_heads * head_dim * 2) {
  if (num_blocks == 0 || block_size == 0 || num_heads == 0 || head_dim == 0) {
    throw std::invalid_argument(
        "SeedMutexCache: num_blocks, block_size, num_heads and head_dim "
        "must be non-zero");
  }
  if (num_blocks > std::numeric_limits<std::uint32_t>::max()) {
    throw std::invalid_argument("SeedMutexCache: num_blocks must fit a 32-bit block id");
  }
  for (std::size_t i = 0; i < num_blocks; ++i) {
    free_blocks_.push_back(BlockId{static_cast<std::uint32_t>(i)});
  }
}

// ---- configuration ----------------------------------------------------------------------------

Result<void> SeedMutexCache::set_eviction_strategy(const EvictionStrategy& strategy) {
  if (strategy.kind() == EvictionStrategy::Kind::priority && strategy.levels() == 0) {
    return Error::invalid_argument("Priority strategy needs at least one level");
  }
  if (strategy.kind() == EvictionStrategy::Kind::streaming_llm &&
      strategy.sink_tokens() + strategy.window_tokens() == 0) {
    return Error::invalid_argument("StreamingLLM needs sink_tokens + window_tokens > 0");
  }
  std::lock_guard lock(mu_);
  strategy_ = strategy;
  return {};
}

EvictionStrategy SeedMutexCache::eviction_strategy() const {
  std::lock_guard lock(mu_);
  return strategy_;
}

Result<void> SeedMutexCache::set_eviction_threshold(double threshold) {
  if (std::isnan(threshold)) return Error::invalid_argument("eviction threshold is NaN");
  std::lock_guard lock(mu_);
  threshold_ = std::clamp(threshold, 0.0, 1.0);
  return {};
}

double SeedMutexCache::eviction_threshold() const {
  std::lock_guard lock(mu_);
  return threshold_;
}

Result<void> SeedMutexCache::set_priority(SeqId seq, std::uint32_t priority) {
  std::lock_guard lock(mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) return Error::sequence_not_found(seq);
  it->second.priority = priority;
  return {};
}

// ---- figures ----------------------------------------------------------------------------------

std::size_t SeedMutexCache::free_block_count() const {
  std::lock_guard lock(mu_);
  return free_blocks_.size();
}

std::size_t SeedMutexCache::used_block_count() const {
  std::lock_guard lock(mu_);
  return used_locked();
}

double SeedMutexCache::utilization() const {
  std::lock_guard lock(mu_);
  return static_cast<double>(used_locked()) / static_cast<double>(num_blocks_);
}

bool SeedMutexCache::needs_eviction() const {
  std::lock_guard lock(mu_);
  return static_cast<double>(used_locked()) / static_cast<double>(num_blocks_) >= threshold_;
}

std::size_t SeedMutexCache::num_sequences() const {
  std::lock_guard lock(mu_);
  return sequences_.size();
}

CacheStats SeedMutexCache::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

// ---- blocks (mu_ held) ------------------------------------------------------------------------

Result<BlockId> SeedMutexCache::allocate_block() {
  if (free_blocks_.empty()) return Error::out_of_memory(1, 0);  // the seed's report, verbatim
  const BlockId id = free_blocks_.front();
  free_blocks_.pop_front();
  block_refs_.insert_or_assign(id, 1u);
  ++stats_.total_allocations;
  const std::uint64_t used = used_locked();
  if (used > stats_.peak_blocks_used) stats_.peak_blocks_used = used;
  return id;
}

Result<void> SeedMutexCache::free_block(BlockId id) {
  auto it = block_refs_.find(id);
  if (it == block_refs_.end()) return Error::block_not_found(id);
  if (--it->second == 0) {
    block_refs_.erase(it);
    free_blocks_.push_back(id);
    ++stats_.total_frees;
  }
  return {};
}

// ---- sequences --------------------------------------------------------------------------------

Result<void> SeedMutexCache::allocate(SeqId seq, std::size_t num_tokens) {
  std::lock_guard lock(mu_);
  if (sequences_.contains(seq)) {
    return Error::invalid_operation("Sequence " + to_string(seq) + " already exists");
  }
  const std::size_t needed = blocks_needed(num_tokens);
  if (needed > free_blocks_.size()) return Error::out_of_memory(needed, free_blocks_.size());

  std::vector<BlockId> block_ids;
  block_ids.reserve(needed);
  for (std::size_t i = 0; i < needed; ++i) {
    auto b = allocate_block();
    if (!b) return b.error();  // unreachable: checked above
    block_ids.push_back(b.value());
  }
  Info info;
  info.seq_id = seq;
  info.num_tokens = num_tokens;
  info.block_ids = std::move(block_ids);
  touch(info);
  sequences_.emplace(seq, std::move(info));
  return {};
}

Result<std::optional<CopyOp>> SeedMutexCache::append(SeqId seq, std::size_t num_tokens) {
  std::lock_guard lock(mu_);
  return append_locked(seq, num_tokens);
}

void SeedMutexCache::append_batch(std::span<const SeqId> seqs, std::size_t num_tokens,
                                  AppendBatchOutcome& out) {
  out.clear();
  out.items = seqs.size();
  std::lock_guard lock(mu_);  // the mutex design's batch: one lock for the whole step
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    auto r = append_locked(seqs[i], num_tokens);
    if (!r) out.errors.push_back({i, r.error()});  // (no copy-on-write: never a CopyOp)
  }
}

Result<std::optional<CopyOp>> SeedMutexCache::append_locked(SeqId seq, std::size_t num_tokens) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) return Error::sequence_not_found(seq);
  const std::size_t old_tokens = it->second.num_tokens;
  if (num_tokens > std::numeric_limits<std::size_t>::max() - old_tokens) {
    return Error::invalid_argument("token count overflows");
  }
  const std::size_t new_tokens = old_tokens + num_tokens;
  const std::size_t old_blocks = blocks_needed(old_tokens);
  const std::size_t new_blocks = blocks_needed(new_tokens);
  const std::size_t additional = new_blocks > old_blocks ? new_blocks - old_blocks : 0;
  if (additional > free_blocks_.size()) {
    return Error::out_of_memory(additional, free_blocks_.size());
  }
  std::vector<BlockId> new_ids;
  new_ids.reserve(additional);
  for (std::size_t i = 0; i < additional; ++i) {
    auto b = allocate_block();
    if (!b) return b.error();  // unreachable: checked above
    new_ids.push_back(b.value());
  }
  Info& info = it->second;
  info.block_ids.insert(info.block_ids.end(), new_ids.begin(), new_ids.end());
  info.num_tokens = new_tokens;
  touch(info);
  return std::optional<CopyOp>{};
}

Result<void> SeedMutexCache::free_locked(SeqId seq) {
  auto node = sequences_.extract(seq);
  if (node.empty()) return Error::sequence_not_found(seq);
  for (const BlockId id : node.mapped().block_ids) {
    auto r = free_block(id);
    if (!r) return r;
  }
  return {};
}

Result<void> SeedMutexCache::free(SeqId seq) {
  std::lock_guard lock(mu_);
  return free_locked(seq);
}

Result<void> SeedMutexCache::fork(SeqId src, SeqId dst) {
  std::lock_guard lock(mu_);
  if (sequences_.contains(dst)) {
    return Error::invalid_operation("Destination sequence " + to_string(dst) + " already exists");
  }
  auto it = sequences_.find(src);
  if (it == sequences_.end()) return Error::sequence_not_found(src);
  const Info src_info = it->second;  // the seed clones the source
  for (const BlockId id : src_info.block_ids) {
    auto r = block_refs_.find(id);
    if (r != block_refs_.end()) ++r->second;
  }
  Info dst_info;
  dst_info.seq_id = dst;
  dst_info.num_tokens = src_info.num_tokens;
  dst_info.block_ids = src_info.block_ids;
  touch(dst_info);
  sequences_.emplace(dst, std::move(dst_info));
  ++stats_.total_forks;
  return {};
}

std::optional<SequenceInfo> SeedMutexCache::get_sequence(SeqId seq) const {
  std::lock_guard lock(mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) return std::nullopt;
  const Info& info = it->second;
  SequenceInfo out;
  out.seq_id = info.seq_id;
  out.num_tokens = info.num_tokens;
  out.block_ids = info.block_ids;
  out.last_access = info.last_access;
  out.access_count = info.access_count;
  out.priority = info.priority;
  out.token_runs.push_back(TokenRun{0, 0, info.num_tokens});
  return out;
}

std::vector<SeqId> SeedMutexCache::sequence_ids() const {
  std::lock_guard lock(mu_);
  std::vector<SeqId> ids;
  ids.reserve(sequences_.size());
  for (const auto& [id, info] : sequences_) ids.push_back(id);
  return ids;
}

// ---- eviction ---------------------------------------------------------------------------------

std::optional<SeqId> SeedMutexCache::select_locked() const {
  if (sequences_.empty()) return std::nullopt;
  // Rust's min_by_key keeps the first minimum, max_by_key the last maximum.
  const Info* best = nullptr;
  switch (strategy_.kind()) {
    case EvictionStrategy::Kind::lru:
    case EvictionStrategy::Kind::streaming_llm:  // the seed falls back to LRU
      for (const auto& [id, s] : sequences_) {
        if (best == nullptr || s.last_access < best->last_access) best = &s;
      }
      break;
    case EvictionStrategy::Kind::lfu:
      for (const auto& [id, s] : sequences_) {
        if (best == nullptr || s.access_count < best->access_count) best = &s;
      }
      break;
    case EvictionStrategy::Kind::longest_first:
      for (const auto& [id, s] : sequences_) {
        if (best == nullptr || s.num_tokens >= best->num_tokens) best = &s;
      }
      break;
    case EvictionStrategy::Kind::priority:
      for (const auto& [id, s] : sequences_) {
        if (best == nullptr || s.priority < best->priority) best = &s;
      }
      break;
  }
  return best->seq_id;
}

std::optional<SeqId> SeedMutexCache::select_eviction_target() const {
  std::lock_guard lock(mu_);
  return select_locked();
}

Result<SeqId> SeedMutexCache::evict_locked() {
  const auto target = select_locked();
  if (!target) return Error::invalid_operation("No sequences to evict");
  auto r = free_locked(*target);
  if (!r) return r.error();
  ++stats_.total_evictions;
  return *target;
}

Result<SeqId> SeedMutexCache::evict() {
  std::lock_guard lock(mu_);
  return evict_locked();
}

Result<std::vector<SeqId>> SeedMutexCache::evict_to_threshold(double target) {
  std::lock_guard lock(mu_);
  std::vector<SeqId> evicted;
  while (static_cast<double>(used_locked()) / static_cast<double>(num_blocks_) > target &&
         !sequences_.empty()) {
    auto r = evict_locked();
    if (!r) return r.error();
    evicted.push_back(r.value());
  }
  return evicted;
}

Result<std::size_t> SeedMutexCache::apply_streaming_llm(SeqId seq, std::size_t sink_tokens,
                                                        std::size_t window_tokens) {
  std::lock_guard lock(mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) return Error::sequence_not_found(seq);
  Info& info = it->second;
  const std::size_t keep = sink_tokens + window_tokens;
  if (info.num_tokens <= keep) return std::size_t{0};

  const std::size_t old_blocks = blocks_needed(info.num_tokens);
  const std::size_t new_blocks = blocks_needed(keep);
  const std::size_t to_free = old_blocks > new_blocks ? old_blocks - new_blocks : 0;
  // The seed's off-by-one, kept: it skips sink / block_size + 1 blocks.
  const std::size_t skip = sink_tokens / block_size_ + 1;
  std::vector<BlockId> remove;
  for (std::size_t i = skip; i < info.block_ids.size() && remove.size() < to_free; ++i) {
    remove.push_back(info.block_ids[i]);
  }
  const std::size_t dropped = info.num_tokens - keep;
  for (const BlockId id : remove) {
    auto r = free_block(id);
    if (!r) return r.error();
  }
  for (const BlockId id : remove) {  // the seed's retain(|&id| id != block_id), once per block
    std::erase(info.block_ids, id);
  }
  info.num_tokens = keep;
  return dropped;
}

// ---- checks and printing ----------------------------------------------------------------------

std::string SeedMutexCache::validate_unsafe() const {
  std::lock_guard lock(mu_);
  std::unordered_map<BlockId, std::uint32_t> seen;
  for (const auto& [id, info] : sequences_) {
    for (const BlockId b : info.block_ids) ++seen[b];
  }
  if (seen.size() != block_refs_.size()) return "referenced block count != tables' block count";
  for (const auto& [b, n] : seen) {
    auto r = block_refs_.find(b);
    if (r == block_refs_.end() || r->second != n) return "ref count mismatch at " + to_string(b);
  }
  if (free_blocks_.size() + block_refs_.size() != num_blocks_) return "free + referenced != total";
  return {};
}

std::ostream& operator<<(std::ostream& os, const SeedMutexCache& cache) {
  std::lock_guard lock(cache.mu_);
  const std::size_t used = cache.used_locked();
  char buf[160];
  os << "PagedKvCache\n";
  os << "  Strategy: " << cache.strategy_ << " (block_size=" << cache.block_size_ << ")\n";
  std::snprintf(buf, sizeof buf, "  Blocks: %zu/%zu (%.1f%% used)\n", used, cache.num_blocks_,
                100.0 * static_cast<double>(used) / static_cast<double>(cache.num_blocks_));
  os << buf;
  std::snprintf(buf, sizeof buf, "  Memory: %.2f MB / %.2f MB\n",
                static_cast<double>(used * cache.block_bytes_) / 1e6,
                static_cast<double>(cache.num_blocks_ * cache.block_bytes_) / 1e6);
  os << buf;
  os << "  Sequences: " << cache.sequences_.size() << " active\n";
  os << "  Stats: allocs=" << cache.stats_.total_allocations
     << ", frees=" << cache.stats_.total_frees << ", evictions=" << cache.stats_.total_evictions
     << ", forks=" << cache.stats_.total_forks << "\n";
  return os;
}

}  // namespace pkv::baseline
