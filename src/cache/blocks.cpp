// src/cache/blocks.cpp — taking and dropping a sequence's blocks: plain blocks through the pool's
// reference counts, managed ones (token-mode sequences) through the prefix cache's holder counts,
// and reclaimable cached blocks taken only once no plain free block is left.
#include <algorithm>

#include "cache/cache_impl.hpp"
#include "cache/refcounts.hpp"

namespace pkv {

detail::PrefixCache& PagedKvCache::Impl::prefix_cache() {
  std::call_once(prefix_once, [&] {
    prefix_owner = std::make_unique<detail::PrefixCache>(num_blocks, block_size, prefix_options);
    // release: pairs with prefix_or_null()'s acquire; whoever sees the pointer sees it built.
    prefix.store(prefix_owner.get(), std::memory_order_release);
  });
  return *prefix_owner;
}

Result<void> PagedKvCache::Impl::acquire_blocks_slow(std::size_t k, std::vector<BlockId>& out,
                                                     bool managed) {
  detail::PrefixCache* pc = prefix_or_null();
  const std::size_t base = out.size();
  Result<void> r = pool.acquire(k, out);
  if (!r) {
    if (pc == nullptr || pc->reclaimable() == 0) return r;
    // Not enough even with every reclaimable block: fail before reclaiming any, so that a failed
    // allocation forgets no cached content (exact when no other call is in flight).
    if (free_blocks() < k) return Error::out_of_memory(k, free_blocks());
    // No stranding with cached blocks: plain free ones first, then reclaimable ones, until k.
    // Every block taken so far holds one pool reference owned by this call; on failure they all
    // go back to the pool (the reclaimed ones have lost their hash: they become plain free).
    while (out.size() - base < k) {
      const std::size_t need = k - (out.size() - base);
      const std::size_t plain = std::min(need, pool.free_count());
      if (plain > 0 && pool.acquire(plain, out)) continue;
      const std::optional<BlockId> b = pc->reclaim(/*managed=*/false);
      if (!b) break;
      out.push_back(*b);
    }
    if (out.size() - base < k) {
      const std::size_t available = free_blocks() + (out.size() - base);
      (void)pool.release(std::span<const BlockId>(out.data() + base, out.size() - base));
      out.resize(base);
      return Error::out_of_memory(k, available);
    }
  }
  if (managed)
    for (std::size_t i = base; i < out.size(); ++i) pc->adopt(out[i]);
  return {};
}

void PagedKvCache::Impl::retain_blocks(std::span<const BlockId> ids, bool managed) {
  if (!managed) {
    (void)pool.retain(ids);  // every id is held by the caller's sequence: cannot fail
    return;
  }
  detail::PrefixCache& pc = *prefix_or_null();
  for (BlockId b : ids) pc.retain(b);
}

void PagedKvCache::Impl::retain_blocks_n(std::span<const BlockId> ids, std::uint32_t n,
                                         bool managed) {
  if (!managed) {
    (void)detail::retain_n(pool, ids, n);  // every id is held by the caller's sequence
    return;
  }
  detail::PrefixCache& pc = *prefix_or_null();
  for (BlockId b : ids) pc.retain(b, n);
}

void PagedKvCache::Impl::release_block(BlockId b, bool managed) {
  if (!managed) {
    (void)pool.release(b);
    return;
  }
  if (prefix_or_null()->release(b)) (void)pool.release(b);
}

void PagedKvCache::Impl::release_blocks(std::span<const BlockId> ids, bool managed) {
  if (!managed) {
    (void)pool.release(ids);
    return;
  }
  // Tail first: the deepest block of a chain becomes reclaimable (and is reclaimed) before its
  // parents, so a cached prefix shrinks from its end.
  prefix_or_null()->release_tail_first(ids, [this](BlockId b) { (void)pool.release(b); });
}

}  // namespace pkv
