// src/cache/prefix_cache.cpp — the prefix cache's block states, lock-free index and reclaim queue
// (contract and memory ordering in prefix_cache.hpp).
#include "cache/prefix_cache.hpp"

#include <algorithm>
#include <bit>

namespace pkv::detail {

PrefixCache::PrefixCache(std::size_t num_blocks, std::size_t block_size,
                         const PrefixCachingOptions& options)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      options_(options),
      meta_(std::make_unique<BlockMeta[]>(num_blocks)) {
  if (options.verify_tokens)
    tokens_ = std::make_unique<std::atomic<TokenId>[]>(num_blocks * block_size);
  // Each index shard holds its share of the findable blocks (at most num_blocks in all) at a load
  // factor of at most 3/4 of the live + deleted slots; 4x the even share leaves room for skew
  // (keys are uniform digests). A shard that fills anyway refuses the publish (a counted miss).
  const std::size_t per_shard = std::bit_ceil(4 * num_blocks / kIndexShards + 16);
  for (IndexShard& sh : index_) {
    sh.slots = std::make_unique<Slot[]>(per_shard);
    sh.mask = per_shard - 1;
  }
}

void PrefixCache::adopt(BlockId b) noexcept {
  BlockMeta& m = meta_[b.value];
  // relaxed: the block came from the pool to this caller alone; its holders learn of it through
  // the shard lock. The generation is kept so that stale index entries never match it again.
  const std::uint64_t gen = m.state.load(std::memory_order_relaxed) & ~(kGenOne - 1);
  m.state.store(gen | kManaged | 1, std::memory_order_relaxed);
}

PrefixCache::Drop PrefixCache::drop(BlockId b, std::uint32_t* epoch) {
  BlockMeta& m = meta_[b.value];
  // acq_rel: a drop orders this holder's use of the block before whatever the last dropper (or a
  // reclaimer, after the CAS that takes it) does next.
  const std::uint64_t before = m.state.fetch_sub(1, std::memory_order_acq_rel);
  PKV_ASSERT((before & kHolders) != 0 && (before & kManaged) != 0);
  if ((before & kHolders) != 1) return Drop::held;
  const std::uint64_t after = before - 1;
  if ((after & kFindable) == 0) {
    // Not findable and no holder: nobody else can reach it (hits need the findable bit). Back to
    // the pool, unmanaged; the generation stays.
    m.state.store(after & ~(kGenOne - 1), std::memory_order_relaxed);
    return Drop::plain;
  }
  // Reclaimable. (A hit may revive it before it is queued, or after: then its queue entry is
  // stale, and skipped when popped.) relaxed: the epoch is read under queue_mu_, after the
  // enqueue that follows this in the same thread.
  *epoch = m.release_epoch.fetch_add(1, std::memory_order_relaxed) + 1;
  return Drop::reclaimable;
}

void PrefixCache::enqueue(const QueueEntry* entries, std::size_t n) {
  // relaxed: a figure, and a hint for allocators (exact when no call is in flight).
  reclaimable_.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  std::lock_guard<std::mutex> g(queue_mu_);
  queue_.insert(queue_.end(), entries, entries + n);
  if (queue_.size() > 2 * num_blocks_ + 64) compact_queue_locked();
}

bool PrefixCache::release(BlockId b) {
  std::uint32_t epoch = 0;
  const Drop d = drop(b, &epoch);
  if (d == Drop::reclaimable) {
    const QueueEntry e{b.value, epoch};
    enqueue(&e, 1);
  }
  return d == Drop::plain;
}

bool PrefixCache::hash_equals(const BlockMeta& m, const BlockHash& h) const noexcept {
  for (std::size_t w = 0; w < 4; ++w) {
    std::uint64_t want;
    std::memcpy(&want, h.bytes.data() + 8 * w, 8);
    // acquire: pairs with the publisher's release store (see Memory ordering).
    if (m.hash[w].load(std::memory_order_acquire) != want) return false;
  }
  return true;
}

bool PrefixCache::tokens_equal(BlockId b, std::span<const TokenId> tokens) const noexcept {
  if (!options_.verify_tokens) return true;
  if (tokens.size() != block_size_) return false;
  const std::atomic<TokenId>* stored = &tokens_[b.value * block_size_];
  for (std::size_t i = 0; i < block_size_; ++i)
    if (stored[i].load(std::memory_order_acquire) != tokens[i]) return false;  // as hash_equals
  return true;
}

template <class Visit>
bool PrefixCache::index_find(const IndexShard& sh, std::uint64_t key, Visit&& visit) const {
  for (std::size_t i = key & sh.mask, n = 0; n <= sh.mask; i = (i + 1) & sh.mask, ++n) {
    // acquire: pairs with index_insert's release store of the key (the value was stored first).
    const std::uint64_t k = sh.slots[i].key.load(std::memory_order_acquire);
    if (k == kEmpty) return false;
    if (k == key && visit(sh.slots[i].value.load(std::memory_order_acquire))) return true;
  }
  return false;
}

PrefixCache::Hit PrefixCache::try_hit(const BlockHash& h, std::span<const TokenId> tokens) {
  // Among duplicates, a held one first: sharing it takes no free block, reviving a reclaimable
  // one takes one, so an allocate that fits with the held copies never fails (or reclaims other
  // prefixes) for having revived the other copy. A second pass revives only if the first saw a
  // reclaimable candidate (a miss costs one probe).
  bool saw_reclaimable = false;
  Hit hit = try_hit_pass(h, tokens, /*held_only=*/true, &saw_reclaimable);
  if (!hit && saw_reclaimable) hit = try_hit_pass(h, tokens, /*held_only=*/false, nullptr);
  return hit;
}

PrefixCache::Hit PrefixCache::try_hit_pass(const BlockHash& h, std::span<const TokenId> tokens,
                                           bool held_only, bool* saw_reclaimable) {
  const std::uint64_t key = key_of(h);
  Hit hit;
  index_find(shard_of(key), key, [&](std::uint64_t value) {
    const std::uint32_t block = static_cast<std::uint32_t>(value);
    if (block >= num_blocks_) return false;
    BlockMeta& m = meta_[block];
    std::uint64_t s = m.state.load(std::memory_order_acquire);
    for (;;) {
      if ((s & kFindable) == 0 || (s >> 32) != (value >> 32)) return false;
      if (!hash_equals(m, h)) return false;
      if (!tokens_equal(BlockId{block}, tokens)) {
        // Counted in the first pass only: a second pass meets no candidate the first did not.
        if (held_only) verify_failures_.fetch_add(1, std::memory_order_relaxed);  // a figure
        return false;
      }
      if (held_only && (s & kHolders) == 0) {
        *saw_reclaimable = true;
        return false;
      }
      // The hit: one CAS expecting exactly the validated word (acq_rel: the revived block's
      // content, written before it was published, is visible to this holder).
      if (m.state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        hit.block = block;
        hit.revived = (s & kHolders) == 0 ? 1 : 0;  // the caller's note_revived counts it
        return true;
      }
    }
  });
  return hit;
}

std::optional<std::uint64_t> PrefixCache::peek_holders(const BlockHash& h,
                                                       std::span<const TokenId> tokens) const {
  const std::uint64_t key = key_of(h);
  // As try_hit: a held duplicate if there is one, else a reclaimable one (holders 0).
  std::optional<std::uint64_t> holders;
  index_find(shard_of(key), key, [&](std::uint64_t value) {
    const std::uint32_t block = static_cast<std::uint32_t>(value);
    if (block >= num_blocks_) return false;
    const BlockMeta& m = meta_[block];
    const std::uint64_t s = m.state.load(std::memory_order_acquire);
    if ((s & kFindable) == 0 || (s >> 32) != (value >> 32)) return false;
    if (!hash_equals(m, h) || !tokens_equal(BlockId{block}, tokens)) return false;
    // Valid if generation and findable bit did not change meanwhile (see Memory ordering); the
    // holder count may: sharers hitting or releasing the block do not change its content, and
    // treating that as a change made lookups miss held blocks whenever a sharer came or went.
    const std::uint64_t now = m.state.load(std::memory_order_acquire);
    if ((now & ~kHolders) != (s & ~kHolders)) return false;
    holders = now & kHolders;
    return *holders != 0;  // a held one ends the search; a reclaimable one may have a held twin
  });
  return holders;
}

bool PrefixCache::publish(BlockId b, const BlockHash& h, std::span<const TokenId> tokens) {
  BlockMeta& m = meta_[b.value];
  std::uint64_t s = m.state.load(std::memory_order_acquire);
  if ((s & kFindable) != 0) return false;  // a sharer published it already
  PKV_ASSERT((s & kManaged) != 0 && (s & kHolders) != 0);
  // The content's names, before the findable bit (release: see Memory ordering). A sharer
  // publishing the same full block at the same time writes the same values.
  for (std::size_t w = 0; w < 4; ++w) {
    std::uint64_t word;
    std::memcpy(&word, h.bytes.data() + 8 * w, 8);
    m.hash[w].store(word, std::memory_order_release);
  }
  if (options_.verify_tokens) {
    std::atomic<TokenId>* stored = &tokens_[b.value * block_size_];
    for (std::size_t i = 0; i < block_size_; ++i)
      stored[i].store(tokens[i], std::memory_order_release);
  }
  // Holders may change meanwhile (sharers fork or free): retry until the bit is set or a sharer
  // set it first.
  while (!m.state.compare_exchange_weak(s, s | kFindable, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
    if ((s & kFindable) != 0) return false;
  }
  const std::uint64_t key = key_of(h);
  IndexShard& sh = shard_of(key);
  bool inserted;
  {
    std::lock_guard<BasicSpinLock<std::atomic>> g(sh.mu);
    inserted = index_insert(sh, key, (s & ~(kGenOne - 1)) | b.value);
  }
  if (!inserted) {
    // Index shard full: unpublish (new generation), as if never published.
    std::uint64_t cur = m.state.load(std::memory_order_acquire);
    while (!m.state.compare_exchange_weak(cur, (cur & ~kFindable) + kGenOne,
                                          std::memory_order_acq_rel, std::memory_order_acquire)) {
    }
    return false;
  }
  findable_.fetch_add(1, std::memory_order_relaxed);  // relaxed: figures
  published_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void PrefixCache::forget(BlockId b, std::uint64_t old_state) {
  findable_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: a figure
  // The caller's CAS made the block unfindable, and nobody writes its hash until it is published
  // again by a holder, which is the caller or comes after it: these loads read the published one.
  BlockHash h;
  for (std::size_t w = 0; w < 4; ++w) {
    const std::uint64_t word = meta_[b.value].hash[w].load(std::memory_order_acquire);
    std::memcpy(h.bytes.data() + 8 * w, &word, 8);
  }
  const std::uint64_t key = key_of(h);
  IndexShard& sh = shard_of(key);
  std::lock_guard<BasicSpinLock<std::atomic>> g(sh.mu);
  index_erase(sh, key, (old_state & ~(kGenOne - 1)) | b.value);
}

bool PrefixCache::queue_entry_live(std::uint32_t block, std::uint32_t epoch) const noexcept {
  const BlockMeta& m = meta_[block];
  const std::uint64_t s = m.state.load(std::memory_order_acquire);
  return m.release_epoch.load(std::memory_order_relaxed) == epoch && (s & kFindable) != 0 &&
         (s & kHolders) == 0;
}

void PrefixCache::compact_queue_locked() {
  std::erase_if(queue_, [&](const auto& e) { return !queue_entry_live(e.block, e.epoch); });
}

std::optional<BlockId> PrefixCache::reclaim(bool managed) {
  std::uint32_t block = 0;
  std::uint64_t old_state = 0;
  {
    std::lock_guard<std::mutex> g(queue_mu_);
    for (;;) {
      if (queue_.empty()) return std::nullopt;
      const auto [b, epoch] = queue_.front();
      queue_.pop_front();
      BlockMeta& m = meta_[b];
      if (m.release_epoch.load(std::memory_order_relaxed) != epoch) continue;  // released again
      std::uint64_t s = m.state.load(std::memory_order_acquire);
      bool taken = false;
      while ((s & kFindable) != 0 && (s & kHolders) == 0) {
        // The reclaim: unfindable, next generation, one holder (managed) or none (the caller
        // owns the pool's reference). Fails, and the entry is dropped, if a hit revived it.
        std::uint64_t next = ((s & ~(kGenOne - 1)) + kGenOne) | (managed ? (kManaged | 1) : 0);
        // The stale_hash mutation (scripts/mutation-check.sh): the block keeps its findable bit
        // and generation, so its old index entry still finds it; the checks must fail.
        if (PKV_MUTATION_STALE_HASH)
          next = (s & ~kHolders & ~kManaged) | (next & (kManaged | kHolders));
        if (m.state.compare_exchange_weak(s, next, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
          taken = true;
          break;
        }
      }
      if (!taken) continue;
      block = b;
      old_state = s;
      break;
    }
  }
  reclaimable_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: figures
  reclaimed_.fetch_add(1, std::memory_order_relaxed);
  if (!PKV_MUTATION_STALE_HASH) forget(BlockId{block}, old_state);
  return BlockId{block};
}

bool PrefixCache::index_insert(IndexShard& sh, std::uint64_t key, std::uint64_t value) {
  if (4 * (sh.used + 1) > 3 * (sh.mask + 1)) {
    index_compact(sh);
    if (4 * (sh.used + 1) > 3 * (sh.mask + 1)) return false;
  }
  for (std::size_t i = key & sh.mask;; i = (i + 1) & sh.mask) {
    const std::uint64_t k = sh.slots[i].key.load(std::memory_order_relaxed);  // guarded by mu
    if (k != kEmpty && k != kDeleted) continue;
    // Value first, then the key (release): a reader that sees the key sees this value.
    sh.slots[i].value.store(value, std::memory_order_release);
    sh.slots[i].key.store(key, std::memory_order_release);
    if (k == kEmpty) ++sh.used;
    ++sh.live;
    return true;
  }
}

void PrefixCache::index_erase(IndexShard& sh, std::uint64_t key, std::uint64_t value) {
  for (std::size_t i = key & sh.mask, n = 0; n <= sh.mask; i = (i + 1) & sh.mask, ++n) {
    const std::uint64_t k = sh.slots[i].key.load(std::memory_order_relaxed);  // guarded by mu
    if (k == kEmpty) return;  // not present (a reset or a full shard's refusal got there first)
    if (k == key && sh.slots[i].value.load(std::memory_order_relaxed) == value) {
      sh.slots[i].key.store(kDeleted, std::memory_order_release);
      --sh.live;
      return;
    }
  }
}

void PrefixCache::index_compact(IndexShard& sh) {
  // Rehash the live entries in place, without the deleted ones. A reader racing with this may
  // miss an entry (a counted miss, see Concurrency); it can never see a wrong block, since every
  // candidate is validated at the block.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> live;
  for (std::size_t i = 0; i <= sh.mask; ++i) {
    const std::uint64_t k = sh.slots[i].key.load(std::memory_order_relaxed);
    if (k != kEmpty && k != kDeleted)
      live.emplace_back(k, sh.slots[i].value.load(std::memory_order_relaxed));
    sh.slots[i].key.store(kEmpty, std::memory_order_release);
  }
  sh.used = sh.live = 0;
  for (const auto& [k, v] : live) (void)index_insert(sh, k, v);
}

PrefixCacheStats PrefixCache::stats() const noexcept {
  PrefixCacheStats s;
  s.requests = requests_.load(std::memory_order_relaxed);
  s.queries = queries_.load(std::memory_order_relaxed);
  s.hits = hits_.load(std::memory_order_relaxed);
  s.published = published_.load(std::memory_order_relaxed);
  s.reclaimed = reclaimed_.load(std::memory_order_relaxed);
  s.verify_failures = verify_failures_.load(std::memory_order_relaxed);
  return s;
}

std::string PrefixCache::validate_unsafe() const {
  std::size_t findable = 0;
  std::size_t reclaimable = 0;
  for (std::size_t i = 0; i < num_blocks_; ++i) {
    const std::uint64_t s = meta_[i].state.load();
    if ((s & kFindable) == 0) continue;
    ++findable;
    if ((s & kManaged) == 0) return "B" + std::to_string(i) + " is findable but not managed";
    if ((s & kHolders) == 0) ++reclaimable;
    BlockHash h;
    for (std::size_t w = 0; w < 4; ++w) {
      const std::uint64_t word = meta_[i].hash[w].load();
      std::memcpy(h.bytes.data() + 8 * w, &word, 8);
    }
    const std::uint64_t want = (s & ~(kGenOne - 1)) | i;
    std::size_t entries = 0;
    for (const IndexShard& sh : index_)
      for (std::size_t j = 0; j <= sh.mask; ++j)
        if (sh.slots[j].key.load() == key_of(h) && sh.slots[j].value.load() == want) ++entries;
    if (entries != 1)
      return "B" + std::to_string(i) + " is findable with " + std::to_string(entries) +
             " index entries";
    if (!peek(h, {})) {
      if (!options_.verify_tokens) return "B" + std::to_string(i) + " is not found by its hash";
    }
  }
  if (findable != this->findable()) return "findable count disagrees with the block states";
  if (reclaimable != this->reclaimable())
    return "reclaimable count disagrees with the block states";
  std::size_t queued = 0;
  for (const auto& [b, e] : queue_) queued += queue_entry_live(b, e) ? 1 : 0;
  if (queued != reclaimable) return "a reclaimable block is missing from the reclaim queue";
  return {};
}

}  // namespace pkv::detail
