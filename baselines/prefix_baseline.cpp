// PrefixBaseline (prefix_baseline.hpp): vLLM v1's block pool with prefix caching, one mutex.
#include "prefix_baseline.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace pkv::baseline {

namespace {
std::size_t blocks_for(std::size_t tokens, std::size_t block_size) {
  return tokens / block_size + (tokens % block_size != 0 ? 1 : 0);
}
}  // namespace

PrefixBaseline::PrefixBaseline(std::size_t num_blocks, std::size_t block_size, HashAlgorithm hash)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      hash_(hash),
      head_(static_cast<std::uint32_t>(num_blocks)),
      tail_(static_cast<std::uint32_t>(num_blocks + 1)) {
  if (num_blocks == 0 || block_size == 0) {
    throw std::invalid_argument("PrefixBaseline: num_blocks and block_size must be positive");
  }
  if (num_blocks > kNone - 2) throw std::invalid_argument("PrefixBaseline: too many blocks");
  blocks_.resize(num_blocks + 2);
  blocks_[head_].next = tail_;
  blocks_[tail_].prev = head_;
  for (std::size_t b = 0; b < num_blocks; ++b) queue_push_back(static_cast<std::uint32_t>(b));
}

// ---- free queue ---------------------------------------------------------------------------------

void PrefixBaseline::queue_remove(std::uint32_t b) {
  Block& k = blocks_[b];
  blocks_[k.prev].next = k.next;
  blocks_[k.next].prev = k.prev;
  k.prev = k.next = kNone;
  k.in_queue = false;
  --queue_len_;
}

void PrefixBaseline::queue_push_back(std::uint32_t b) {
  Block& k = blocks_[b];
  k.prev = blocks_[tail_].prev;
  k.next = tail_;
  blocks_[k.prev].next = b;
  blocks_[tail_].prev = b;
  k.in_queue = true;
  ++queue_len_;
}

void PrefixBaseline::queue_push_front(std::uint32_t b) {
  Block& k = blocks_[b];
  k.next = blocks_[head_].next;
  k.prev = head_;
  blocks_[k.next].prev = b;
  blocks_[head_].next = b;
  k.in_queue = true;
  ++queue_len_;
}

std::uint32_t PrefixBaseline::queue_pop_front() {
  const std::uint32_t b = blocks_[head_].next;  // callers check queue_len_ first
  queue_remove(b);
  return b;
}

// ---- hash map -----------------------------------------------------------------------------------

std::optional<std::uint32_t> PrefixBaseline::lookup(const BlockHash& h) const {
  const auto it = cached_.find(h);
  if (it == cached_.end()) return std::nullopt;
  return it->second;
}

void PrefixBaseline::unpublish(std::uint32_t b) {
  Block& k = blocks_[b];
  auto [it, end] = cached_.equal_range(k.hash);
  for (; it != end; ++it) {
    if (it->second == b) {
      cached_.erase(it);
      break;
    }
  }
  k.has_hash = false;
}

std::size_t PrefixBaseline::longest_hit(std::span<const BlockHash> hashes, std::size_t max_blocks,
                                        std::vector<std::uint32_t>* hit_blocks) const {
  const std::size_t n = std::min(max_blocks, hashes.size());
  std::size_t i = 0;
  for (; i < n; ++i) {
    const auto b = lookup(hashes[i]);
    if (!b) break;
    if (hit_blocks != nullptr) hit_blocks->push_back(*b);
  }
  return i;
}

std::size_t PrefixBaseline::publish_locked(Seq& s, std::size_t num_tokens) {
  const std::size_t full = std::min(num_tokens / block_size_, s.hashes.size());
  std::size_t published = 0;
  for (std::size_t i = s.published; i < full; ++i) {
    Block& k = blocks_[s.blocks[i]];
    if (k.has_hash) continue;  // cannot happen without fork; kept so a block is never mapped twice
    k.has_hash = true;
    k.hash = s.hashes[i];
    cached_.emplace(k.hash, s.blocks[i]);
    ++published;
  }
  s.published = std::max(s.published, full);
  stats_.published += published;
  return published;
}

void PrefixBaseline::release_locked(Seq& s) {
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) {  // tail first
    Block& k = blocks_[*it];
    if (--k.ref != 0) continue;
    if (k.has_hash) {
      queue_push_back(*it);  // reclaimable: LRU order, the deepest block of the chain first
      ++reclaimable_;
    } else {
      queue_push_front(*it);  // plain free: reused before any cached block is reclaimed
    }
  }
}

// ---- sequences ----------------------------------------------------------------------------------

Result<std::size_t> PrefixBaseline::allocate(SeqId seq, std::span<const TokenId> prompt,
                                             std::string_view salt) {
  if (prompt.empty()) return Error::invalid_argument("allocate: empty prompt");
  // Everything that does not need the pool is done before the lock: the hashes (as vLLM's
  // Request computes them) and the sequence's own vectors.
  Seq s;
  s.root = salt_hash(salt, hash_);
  s.hashes = block_hashes(prompt, block_size_, salt, hash_);
  s.tokens.assign(prompt.begin(), prompt.end());
  const std::size_t max_hit = (prompt.size() - 1) / block_size_;
  const std::size_t total = blocks_for(prompt.size(), block_size_);
  s.blocks.reserve(total);

  std::lock_guard lock(mu_);
  if (seqs_.contains(seq)) {
    return Error::invalid_operation("Sequence " + to_string(seq) + " already exists");
  }
  const std::size_t hits = longest_hit(s.hashes, max_hit, &s.blocks);
  std::size_t reviving = 0;
  for (const std::uint32_t b : s.blocks) reviving += blocks_[b].ref == 0 ? 1 : 0;
  const std::size_t need = total - hits;
  const std::size_t available = queue_len_ - reviving;
  if (need > available) return Error::out_of_memory(need, available);  // nothing touched yet

  for (const std::uint32_t b : s.blocks) {
    Block& k = blocks_[b];
    if (k.ref++ == 0) {  // a reclaimable block revived
      queue_remove(b);
      --reclaimable_;
    }
  }
  for (std::size_t i = 0; i < need; ++i) {
    const std::uint32_t b = queue_pop_front();
    Block& k = blocks_[b];
    if (k.has_hash) {  // reclaim: the block is no longer findable under its old hash
      unpublish(b);
      --reclaimable_;
      ++stats_.reclaimed;
    }
    k.ref = 1;
    s.blocks.push_back(b);
  }
  s.published = hits;
  ++stats_.requests;
  stats_.queries += prompt.size();
  stats_.hits += hits * block_size_;
  seqs_.emplace(seq, std::move(s));
  return hits * block_size_;
}

Result<std::optional<CopyOp>> PrefixBaseline::append(SeqId seq, std::span<const TokenId> tokens) {
  std::lock_guard lock(mu_);
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return Error::sequence_not_found(seq);
  Seq& s = it->second;
  const std::size_t held = s.tokens.size();
  const std::size_t need = blocks_for(held + tokens.size(), block_size_) - s.blocks.size();
  if (need > queue_len_) return Error::out_of_memory(need, queue_len_);

  publish_locked(s, held);  // the forward pass that produced `tokens` computed the held ones
  for (std::size_t i = 0; i < need; ++i) {
    const std::uint32_t b = queue_pop_front();
    Block& k = blocks_[b];
    if (k.has_hash) {
      unpublish(b);
      --reclaimable_;
      ++stats_.reclaimed;
    }
    k.ref = 1;
    s.blocks.push_back(b);
  }
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  const std::span<const TokenId> all(s.tokens);
  while (s.hashes.size() < all.size() / block_size_) {
    const std::size_t i = s.hashes.size();
    const BlockHash& parent = i == 0 ? s.root : s.hashes[i - 1];
    s.hashes.push_back(chain_hash(parent, all.subspan(i * block_size_, block_size_), hash_));
  }
  return std::optional<CopyOp>{};
}

Result<std::size_t> PrefixBaseline::commit(SeqId seq, std::size_t num_tokens) {
  std::lock_guard lock(mu_);
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return Error::sequence_not_found(seq);
  if (num_tokens > it->second.tokens.size()) {
    return Error::invalid_argument("commit: " + std::to_string(num_tokens) + " tokens, but " +
                                   to_string(seq) + " holds " +
                                   std::to_string(it->second.tokens.size()));
  }
  return publish_locked(it->second, num_tokens);
}

Result<void> PrefixBaseline::free(SeqId seq) {
  std::lock_guard lock(mu_);
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return Error::sequence_not_found(seq);
  release_locked(it->second);
  seqs_.erase(it);
  return {};
}

std::optional<SequenceInfo> PrefixBaseline::get_sequence(SeqId seq) const {
  std::lock_guard lock(mu_);
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return std::nullopt;
  SequenceInfo info;
  info.seq_id = seq;
  info.num_tokens = it->second.tokens.size();
  info.block_ids.reserve(it->second.blocks.size());
  for (const std::uint32_t b : it->second.blocks) info.block_ids.push_back(BlockId{b});
  info.token_runs.push_back(TokenRun{0, 0, info.num_tokens});
  return info;
}

std::size_t PrefixBaseline::num_sequences() const {
  std::lock_guard lock(mu_);
  return seqs_.size();
}

// ---- the prefix cache ---------------------------------------------------------------------------

std::size_t PrefixBaseline::match_prefix(std::span<const TokenId> tokens,
                                         std::string_view salt) const {
  if (tokens.empty()) return 0;
  const std::size_t max_hit = (tokens.size() - 1) / block_size_;
  const auto hashes = block_hashes(tokens.first(max_hit * block_size_), block_size_, salt, hash_);
  std::lock_guard lock(mu_);
  return longest_hit(hashes, max_hit, nullptr) * block_size_;
}

std::size_t PrefixBaseline::cached_block_count() const {
  std::lock_guard lock(mu_);
  return cached_.size();
}

std::size_t PrefixBaseline::reclaimable_block_count() const {
  std::lock_guard lock(mu_);
  return reclaimable_;
}

std::size_t PrefixBaseline::free_block_count() const {
  std::lock_guard lock(mu_);
  return queue_len_;
}

PrefixCacheStats PrefixBaseline::prefix_stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

Result<void> PrefixBaseline::reset_prefix_cache() {
  std::lock_guard lock(mu_);
  for (std::size_t b = 0; b < num_blocks_; ++b) blocks_[b].has_hash = false;
  cached_.clear();
  reclaimable_ = 0;  // the queue now holds only plain free blocks, in any order
  return {};
}

std::string PrefixBaseline::validate() const {
  std::lock_guard lock(mu_);
  std::ostringstream err;
  // The queue: consistent links, only unreferenced blocks, plain ones before hashed ones.
  std::size_t len = 0, hashed = 0;
  bool seen_hashed = false;
  std::uint32_t prev = head_;
  for (std::uint32_t b = blocks_[head_].next; b != tail_; b = blocks_[b].next) {
    if (b >= num_blocks_ || len > num_blocks_) {
      err << "queue link out of range; ";
      break;
    }
    const Block& k = blocks_[b];
    if (!k.in_queue) err << "B" << b << " linked but not marked in_queue; ";
    if (k.prev != prev) err << "B" << b << " prev link broken; ";
    if (k.ref != 0) err << "B" << b << " queued with ref " << k.ref << "; ";
    if (k.has_hash) {
      ++hashed;
      seen_hashed = true;
    } else if (seen_hashed) {
      err << "plain B" << b << " queued after a reclaimable block; ";
    }
    prev = b;
    ++len;
  }
  if (len != queue_len_) err << "queue length " << len << " != " << queue_len_ << "; ";
  if (hashed != reclaimable_) err << "reclaimable " << hashed << " != " << reclaimable_ << "; ";
  // Reference counts against the sequences' block tables.
  std::vector<std::uint32_t> refs(num_blocks_, 0);
  for (const auto& [id, s] : seqs_) {
    for (const std::uint32_t b : s.blocks) ++refs[b];
    if (s.blocks.size() != blocks_for(s.tokens.size(), block_size_)) {
      err << to_string(id) << " has " << s.blocks.size() << " blocks for " << s.tokens.size()
          << " tokens; ";
    }
    if (s.hashes.size() != s.tokens.size() / block_size_) err << to_string(id) << " hashes; ";
    if (s.published > s.hashes.size()) err << to_string(id) << " published too far; ";
  }
  std::size_t with_hash = 0, held = 0;
  for (std::size_t b = 0; b < num_blocks_; ++b) {
    const Block& k = blocks_[b];
    if (k.ref != refs[b]) err << "B" << b << " ref " << k.ref << " != " << refs[b] << "; ";
    if ((k.ref == 0) != k.in_queue) err << "B" << b << " ref/queue mismatch; ";
    with_hash += k.has_hash ? 1 : 0;
    held += k.ref > 0 ? 1 : 0;
  }
  if (queue_len_ + held != num_blocks_) err << "free + held != total; ";
  if (with_hash != cached_.size()) err << "map has " << cached_.size() << " != " << with_hash;
  for (const auto& [h, b] : cached_) {
    if (!blocks_[b].has_hash || blocks_[b].hash != h) err << "map entry for B" << b << " stale; ";
  }
  return err.str();
}

}  // namespace pkv::baseline
