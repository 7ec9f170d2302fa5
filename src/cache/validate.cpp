// src/cache/validate.cpp — the cache's structural checks: one shard's invariants
// (Shard::validate_locked, shard.hpp and entry.hpp state them) and the whole cache's accounting
// across shards and the pool (validate_unsafe, cache_impl.hpp states it).
#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/cache_impl.hpp"

namespace pkv {

using detail::Entry;
using detail::Key;
using detail::Shard;

namespace {

// entry.hpp's invariants for one entry: "" when they hold.
std::string validate_entry(const Entry& e, std::size_t block_size) {
  std::uint64_t tokens = 0;
  std::vector<std::uint8_t> used(e.blocks.size(), 0);
  for (const TokenRun& r : e.runs) {
    if (r.first_token != tokens || r.length == 0) return to_string(e.id) + ": bad token runs";
    tokens += r.length;
    if (r.slot + r.length > e.blocks.size() * block_size)
      return to_string(e.id) + ": a run points past its block table";
    for (std::uint64_t b = r.slot / block_size; b <= (r.slot + r.length - 1) / block_size; ++b)
      used[b] = 1;
  }
  if (tokens != e.num_tokens) return to_string(e.id) + ": runs do not cover num_tokens";
  if (e.end_slot != Entry::end_of(e.runs))
    return to_string(e.id) + ": end_slot does not match its runs";
  if (std::find(used.begin(), used.end(), 0) != used.end())
    return to_string(e.id) + ": holds a block with none of its tokens";
  if (!e.streamed && e.runs.size() > 1) return to_string(e.id) + ": dead slots without StreamingLLM";
  return {};
}

}  // namespace

std::string detail::Shard::validate_locked(std::size_t my_index, const Placement& placement,
                                           std::size_t block_size, const BlockPool& pool,
                                           const PrefixCache* prefix) const {
  const std::string where = "shard " + std::to_string(my_index) + ": ";
  if (std::string e = map.validate(); !e.empty()) return where + e;
  std::size_t unpinned = 0;
  for (const auto& kv : map) unpinned += kv.second.pins == 0 ? 1 : 0;
  if (size.load(std::memory_order_relaxed) != map.size())
    return where + "size disagrees with the map";
  const std::string idx = index.validate(unpinned, [&](const Entry& x) {
    const Entry* in = map.find_entry(x.id);
    return in == &x && x.pins == 0;
  });
  if (!idx.empty()) return where + idx;
  const std::optional<Key> h = index.head();
  if (head.last() != (h ? *h : kNoKey) || head.read() != head.last())
    return where + "published head is stale";
  if (head.occupied() != h.has_value()) return where + "occupancy bit disagrees with its head";
  for (const auto& [seq, e] : map) {
    if (e.pins == 0 && !index.contains(e)) return to_string(seq) + " missing from index";
    if (placement.shard(seq, std::hash<SeqId>{}(seq)) != my_index)
      return to_string(seq) + " is in the wrong shard";
    if (std::string err = validate_entry(e, block_size); !err.empty()) return err;
    if (e.token_mode && prefix == nullptr) return to_string(seq) + " is in token mode without a prefix cache";
    if (e.token_mode && (e.published > e.hashes.size() || e.committed > e.num_tokens ||
                         e.hashes.size() > e.num_tokens / block_size ||
                         (e.publishing && e.tokens.size() != e.num_tokens)))
      return to_string(seq) + ": token-mode bookkeeping is inconsistent";
    for (const std::vector<BlockId>* list : {&e.blocks, &e.pending}) {
      for (BlockId b : *list) {
        if (pool.ref_count(b) == 0) return to_string(seq) + " holds free block " + to_string(b);
        if (e.token_mode && ((prefix->state(b) & PrefixCache::kManaged) == 0 ||
                             prefix->holders(b) == 0))
          return to_string(seq) + " holds " + to_string(b) + ", not managed or without holders";
      }
    }
  }
  return {};
}

std::string PagedKvCache::validate_unsafe() const {
  const Impl& m = *impl_;
  if (std::string e = m.pool.validate_unsafe(); !e.empty()) return "pool: " + e;
  struct Holder {
    std::uint64_t fill;
    bool dropped;  // the holder dropped tokens (StreamingLLM, truncate): its fill may be lower
    bool managed;
  };
  std::unordered_map<std::uint32_t, std::vector<Holder>> holders;
  for (std::size_t s = 0; s < kShards; ++s) {
    const Shard& sh = m.shards[s];
    if (std::string e = m.validate_shard(sh); !e.empty()) return e;
    for (const auto& [seq, e] : sh.map) {
      for (BlockId b : e.pending) holders[b.value].push_back(Holder{0, true, e.token_mode});
      for (std::size_t b = 0; b < e.blocks.size(); ++b) {
        const std::uint64_t fill =
            b + 1 < e.blocks.size() ? block_size_ : e.next_slot() - b * block_size_;
        holders[e.blocks[b].value].push_back(
            Holder{fill, e.streamed || e.truncated, e.token_mode});
      }
    }
  }
  for (const auto& [block, hs] : holders) {
    const std::uint64_t count = m.holders(BlockId{block}, hs.front().managed);
    for (const Holder& h : hs)
      if (h.managed != hs.front().managed)
        return "B" + std::to_string(block) + " is held by token-mode and count-mode sequences";
    if (count != hs.size() || (hs.front().managed && m.pool.ref_count(BlockId{block}) != 1))
      return "B" + std::to_string(block) + ": ref count " + std::to_string(count) +
             " != " + std::to_string(hs.size()) + " tables holding it";
    // A shared block is frozen: every holder that never dropped tokens sees the same fill, so no
    // holder wrote into it after the fork (copy-on-write did its job).
    for (const Holder& h : hs) {
      if (!h.dropped && !hs.front().dropped && h.fill != hs.front().fill)
        return "B" + std::to_string(block) + " is shared with different fills (" +
               std::to_string(h.fill) + " vs " + std::to_string(hs.front().fill) +
               "): a sharer wrote into it";
    }
  }
  const detail::PrefixCache* pc = m.prefix_or_null();
  const std::size_t reclaimable = pc != nullptr ? pc->reclaimable() : 0;
  if (pc != nullptr)
    if (std::string e = pc->validate_unsafe(); !e.empty()) return "prefix cache: " + e;
  if (holders.size() + reclaimable != m.pool.used_count())
    return "referenced blocks (" + std::to_string(holders.size()) + ") + reclaimable (" +
           std::to_string(reclaimable) + ") != used blocks (" +
           std::to_string(m.pool.used_count()) + ")";
  return {};
}

}  // namespace pkv
