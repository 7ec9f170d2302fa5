// src/cache/prefix.cpp — prefix caching's calls: allocate and append with token ids, commit,
// match_prefix, reset and the figures (the block states and the index are prefix_cache.hpp's).
#include <algorithm>
#include <mutex>

#include "cache/cache_impl.hpp"

namespace pkv {

using detail::AppendStep;
using detail::Entry;
using detail::PrefixCache;
using detail::Shard;
using detail::ShardLock;

namespace {

// Publishes the full blocks among the first `committed` tokens of a token-mode entry that are not
// published yet (caller holds its shard lock). Returns how many became findable.
std::size_t publish_committed(PrefixCache& pc, Entry& e, std::uint64_t committed,
                              std::size_t block_size) {
  e.committed = std::max(e.committed, committed);
  if (!e.publishing) return 0;
  const std::size_t full = std::min<std::size_t>(e.committed / block_size, e.blocks.size());
  const HashAlgorithm alg = pc.options().hash;
  std::size_t count = 0;
  for (; e.published < full; ++e.published) {
    const std::size_t i = e.published;
    const std::span<const TokenId> block(e.tokens.data() + i * block_size, block_size);
    if (e.hashes.size() == i)
      e.hashes.push_back(chain_hash(i == 0 ? e.salt_root : e.hashes[i - 1], block, alg));
    if (pc.publish(e.blocks[i], e.hashes[i], block)) ++count;
  }
  return count;
}

}  // namespace

Result<std::size_t> PagedKvCache::allocate(SeqId seq, std::span<const TokenId> prompt,
                                           std::string_view salt) {
  if (prompt.empty())
    return Error::invalid_argument("allocate: the prompt must hold at least one token");
  Impl& m = *impl_;
  if (!m.prefix_options.enabled) {
    if (Result<void> r = allocate(seq, prompt.size()); !r) return r.error();
    return std::size_t{0};
  }
  PrefixCache& pc = m.prefix_cache();
  const HashAlgorithm alg = m.prefix_options.hash;
  const std::size_t bs = block_size_;
  // The chain of the prompt's full blocks, hashed before any lock is taken.
  const BlockHash root = salt_hash(salt, alg);
  std::vector<BlockHash> hashes;
  hashes.reserve(prompt.size() / bs);
  for (std::size_t i = 0; i < prompt.size() / bs; ++i)
    hashes.push_back(chain_hash(i == 0 ? root : hashes[i - 1], prompt.subspan(i * bs, bs), alg));
  const std::size_t max_hit = (prompt.size() - 1) / bs;  // the last token is always computed
  const std::size_t nb = prompt.size() / bs + (prompt.size() % bs != 0 ? 1 : 0);
  std::size_t hit = 0;
  Shard& sh = m.shard_of(seq);
  {
    std::lock_guard<ShardLock> g(sh.mu);
    if (sh.map.contains(seq))
      return Error::invalid_operation("Sequence " + to_string(seq) + " already exists");
    // When plain free blocks may not cover the prompt, check first, with no effect, that the hits
    // plus plain free and reclaimable blocks do (reviving a reclaimable hit and giving it back on
    // failure would move it in the reclaim order). Exact when no other call is in flight; a race
    // that makes the allocation fail after all is undone below.
    if (m.pool.free_count() < nb) {
      std::size_t found = 0, revived = 0;
      for (; found < max_hit; ++found) {
        const auto holders = pc.peek_holders(hashes[found], prompt.subspan(found * bs, bs));
        if (!holders) break;
        revived += *holders == 0 ? 1 : 0;
      }
      const std::size_t available = m.free_blocks() - std::min(revived, m.free_blocks());
      if (nb - found > available) return Error::out_of_memory(nb - found, available);
    }
    Entry e(seq);
    e.blocks.reserve(nb);
    // The longest cached prefix: one CAS per hit block, no lock.
    std::size_t revived = 0;
    for (; hit < max_hit; ++hit) {
      const detail::PrefixCache::Hit b = pc.try_hit(hashes[hit], prompt.subspan(hit * bs, bs));
      if (!b) break;
      e.blocks.push_back(BlockId{b.block});
      revived += b.revived;
    }
    pc.note_revived(revived);
    if (Result<void> r = m.acquire_blocks(nb - hit, e.blocks, true); !r) {
      // All or nothing: the revived blocks go back as they were (reclaimable again if no one
      // else holds them).
      m.release_blocks(std::span<const BlockId>(e.blocks.data(), hit), true);
      return r.error();
    }
    e.token_mode = true;
    e.publishing = true;
    e.runs.push_back(TokenRun{0, 0, prompt.size()});
    e.end_slot = prompt.size();
    e.num_tokens = prompt.size();
    e.tokens.assign(prompt.begin(), prompt.end());
    e.hashes = std::move(hashes);
    e.salt_root = root;
    e.committed = hit * bs;  // the hit blocks' KV is there already
    e.published = hit;
    e.last_access = m.tick();
    e.access_count = 1;
    sh.insert_locked(seq, std::move(e));
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  m.note_peak();
  pc.count_request(prompt.size(), hit * bs);
  return hit * bs;
}

Result<std::optional<CopyOp>> PagedKvCache::append(SeqId seq, std::span<const TokenId> tokens) {
  Impl& m = *impl_;
  if (!m.prefix_options.enabled) return append(seq, tokens.size());
  // Built here if no call has built it yet. (Falling back to the count form while it did not
  // exist raced with another thread's token-id allocate of this very sequence: the count form
  // then refused a token-mode sequence.)
  (void)m.prefix_cache();
  const std::size_t hash = std::hash<SeqId>{}(seq);
  Shard& sh = m.shard_at(seq, hash);
  bool took = false;
  std::optional<Error> err;
  CopyOp copy;
  AppendStep step;
  {
    std::lock_guard<ShardLock> g(sh.mu);
    Entry* e = sh.map.find_entry(seq, hash);
    if (e == nullptr) return Error::sequence_not_found(seq);
    const std::uint64_t held = e->num_tokens;
    step = m.append_locked(sh, *e, tokens.size(), m.tick(), &took, &copy, &err);
    if (step != AppendStep::failed && e->token_mode) m.record_appended(*e, tokens, held);
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  if (took) m.note_peak();
  return detail::append_result(step, copy, err);
}

Result<void> PagedKvCache::append_batch(std::span<const SeqId> seqs,
                                        std::span<const TokenId> tokens, AppendBatchOutcome& out) {
  if (tokens.size() != seqs.size()) {
    out.clear();
    return Error::invalid_argument("append_batch: " + std::to_string(seqs.size()) +
                                   " sequences but " + std::to_string(tokens.size()) +
                                   " token ids");
  }
  Impl& m = *impl_;
  if (!m.prefix_options.enabled) {
    append_batch(seqs, 1, out);  // no sequence is in token mode
    return {};
  }
  (void)m.prefix_cache();  // as append(seq, tokens)
  m.append_items<false, true>(seqs, 1, nullptr, out, tokens.data());
  return {};
}

void PagedKvCache::Impl::record_appended(Entry& e, std::span<const TokenId> ids,
                                         std::uint64_t held) {
  if (e.publishing) e.tokens.insert(e.tokens.end(), ids.begin(), ids.end());
  publish_committed(*prefix_or_null(), e, held, block_size);
}

Result<std::size_t> PagedKvCache::commit(SeqId seq, std::size_t num_tokens) {
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  Entry* e = sh.map.find_entry(seq);
  if (e == nullptr) return Error::sequence_not_found(seq);
  if (num_tokens > e->num_tokens)
    return Error::invalid_argument("commit: " + std::to_string(num_tokens) + " tokens, but " +
                                   to_string(seq) + " holds " + std::to_string(e->num_tokens));
  if (!e->token_mode) return std::size_t{0};
  const std::size_t n = publish_committed(*m.prefix_or_null(), *e, num_tokens, block_size_);
  PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  return n;
}

std::size_t PagedKvCache::match_prefix(std::span<const TokenId> tokens,
                                       std::string_view salt) const {
  const Impl& m = *impl_;
  const PrefixCache* pc = m.prefix_or_null();
  if (pc == nullptr || tokens.empty()) return 0;
  const HashAlgorithm alg = m.prefix_options.hash;
  const std::size_t bs = block_size_;
  const std::size_t max_hit = (tokens.size() - 1) / bs;
  BlockHash h = salt_hash(salt, alg);
  std::size_t hit = 0;
  for (; hit < max_hit; ++hit) {
    const std::span<const TokenId> block = tokens.subspan(hit * bs, bs);
    h = chain_hash(h, block, alg);
    if (!pc->peek(h, block)) break;
  }
  return hit * bs;
}

std::size_t PagedKvCache::cached_block_count() const noexcept {
  const PrefixCache* pc = impl_->prefix_or_null();
  return pc != nullptr ? pc->findable() : 0;
}

std::size_t PagedKvCache::reclaimable_block_count() const noexcept {
  const PrefixCache* pc = impl_->prefix_or_null();
  return pc != nullptr ? pc->reclaimable() : 0;
}

PrefixCacheStats PagedKvCache::prefix_stats() const noexcept {
  const PrefixCache* pc = impl_->prefix_or_null();
  return pc != nullptr ? pc->stats() : PrefixCacheStats{};
}

Result<void> PagedKvCache::reset_prefix_cache() {
  Impl& m = *impl_;
  PrefixCache* pc = m.prefix_or_null();
  if (pc == nullptr) return {};
  pc->reset([&](BlockId b) { (void)m.pool.release(b); });
  return {};
}

std::size_t PagedKvCache::block_ref_count(BlockId b) const noexcept {
  const Impl& m = *impl_;
  if (b.value >= m.num_blocks) return 0;
  const PrefixCache* pc = m.prefix_or_null();
  if (pc != nullptr && (pc->state(b) & PrefixCache::kManaged) != 0) return pc->holders(b);
  return m.pool.ref_count(b);
}

}  // namespace pkv
