// src/cache/sequences.cpp — a sequence's life outside append and fork: allocate, free and
// free_many, and the snapshots get_sequence and sequence_ids. Each call locks its sequence's
// shard (free_many: the shards of a chunk of ids at once).
#include <algorithm>
#include <array>
#include <mutex>

#include "cache/cache_impl.hpp"
#include "cache/refcounts.hpp"
#include "cache/shard_set.hpp"

namespace pkv {

using detail::Entry;
using detail::Shard;
using detail::ShardLock;

Result<void> PagedKvCache::allocate(SeqId seq, std::size_t num_tokens) {
  Impl& m = *impl_;
  const std::size_t nb = num_tokens / block_size_ + (num_tokens % block_size_ != 0 ? 1 : 0);
  Shard& sh = m.shard_of(seq);
  {
    std::lock_guard<ShardLock> g(sh.mu);
    if (sh.map.contains(seq))
      return Error::invalid_operation("Sequence " + to_string(seq) + " already exists");
    Entry e(seq);
    if (nb > 0) {
      if (Result<void> r = m.acquire_blocks(nb, e.blocks, false); !r) return r.error();
      e.runs.push_back(TokenRun{0, 0, num_tokens});
      e.end_slot = num_tokens;
    }
    e.num_tokens = num_tokens;
    e.last_access = m.tick();
    e.access_count = 1;
    sh.insert_locked(seq, std::move(e));
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  if (nb > 0) m.note_peak();
  return {};
}

Result<void> PagedKvCache::free(SeqId seq) {
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::vector<BlockId> released;  // dropped after the unlock
  {
    std::lock_guard<ShardLock> g(sh.mu);
    auto it = sh.map.find(seq);
    if (it == sh.map.end()) return Error::sequence_not_found(seq);
    released = sh.take_locked(
        it, [&](std::span<const BlockId> ids, bool managed) { m.release_blocks(ids, managed); });
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  return {};
}

void PagedKvCache::free_many(std::span<const SeqId> seqs, FreeManyOutcome& out) {
  Impl& m = *impl_;
  out.clear();
  out.errors.reserve(seqs.size());  // room for every item's error before anything changes
  out.items = seqs.size();
  // A chunk's tables, moved out of its entries and released before its unlock (their buffers
  // are freed after it). Lists 0..kFreeManyChunk-1 are block tables, the rest held sources.
  std::array<std::vector<BlockId>, 2 * kFreeManyChunk> lists;
  std::array<std::span<const BlockId>, 2 * kFreeManyChunk> spans;
  std::vector<detail::BlockRefs> refs;  // one entry per distinct block of the chunk
  std::vector<BlockId> rest;            // fold scratch
  std::vector<std::uint64_t> fold;      // fold scratch
  std::vector<std::vector<BlockId>> managed;  // token-mode tables, released one by one
  for (std::size_t c0 = 0; c0 < seqs.size(); c0 += kFreeManyChunk) {
    const std::span<const SeqId> chunk =
        seqs.subspan(c0, std::min(kFreeManyChunk, seqs.size() - c0));
    std::array<std::uint32_t, kFreeManyChunk> missing;  // items not found (errors built unlocked)
    std::size_t n_missing = 0;
    {
      detail::ShardSetLock locks;
      for (SeqId id : chunk) locks.add(m.shard_of(id));
      locks.lock_all();
      // Room for every reference the chunk may drop (an id named twice counts twice), so that
      // nothing below allocates once the first sequence is gone.
      std::size_t room = 0;
      for (SeqId id : chunk) {
        if (const Entry* e = m.shard_of(id).map.find_entry(id))
          room += e->blocks.size() + e->pending.size();
      }
      refs.clear();
      refs.reserve(room);
      rest.reserve(room);
      fold.reserve(detail::fold_table_size(room));
      managed.clear();
      managed.reserve(chunk.size());
      std::size_t n_tables = 0, n_held = 0;
      bool aligned = true;  // every table freed is of a sequence StreamingLLM never touched
      for (std::size_t i = 0; i < chunk.size(); ++i) {
        Shard& sh = m.shard_of(chunk[i]);
        auto it = sh.map.find(chunk[i]);
        if (it == sh.map.end()) {  // unknown, or freed by an earlier item
          missing[n_missing++] = static_cast<std::uint32_t>(i);
          continue;
        }
        if (it->second.token_mode) {
          // Managed blocks: their holder counts are the prefix cache's; released now, tail
          // first, like free() (the folded pool release below is for plain blocks).
          managed.push_back(sh.take_locked(it, [&](std::span<const BlockId> ids, bool mode) {
            m.release_blocks(ids, mode);
          }));
          continue;
        }
        aligned = aligned && !it->second.streamed;
        std::vector<BlockId>& held = lists[kFreeManyChunk + n_held];
        sh.take_tables_locked(it, lists[n_tables], held);
        spans[n_tables] = lists[n_tables];
        ++n_tables;
        if (!held.empty()) spans[kFreeManyChunk + n_held++] = held;
      }
      if (n_tables == 1 && n_held == 0) {
        // One table: its blocks are distinct already.
        (void)m.pool.release(spans[0]);
      } else if (n_tables > 0) {
        // One count update per distinct block. Held copy sources (hold_copy_sources) join the
        // lists after the tables; they were blocks of some table at any index, so with them the
        // index compare does not apply and everything goes through the hash fold.
        std::move(spans.begin() + kFreeManyChunk, spans.begin() + kFreeManyChunk + n_held,
                  spans.begin() + n_tables);
        detail::fold_tables(
            std::span<const std::span<const BlockId>>(spans.data(), n_tables + n_held),
            aligned && n_held == 0, refs, rest, fold);
        detail::release_n(m.pool, refs);
      }
      for ([[maybe_unused]] Shard* sh : locks.shards()) PKV_ASSERT_EXPENSIVE(m.validate_shard(*sh));
    }
    for (std::size_t j = 0; j < n_missing; ++j)
      out.errors.push_back({c0 + missing[j], Error::sequence_not_found(chunk[missing[j]])});
  }
}

std::optional<SequenceInfo> PagedKvCache::get_sequence(SeqId seq) const {
  Shard& sh = impl_->shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  const Entry* e = sh.map.find_entry(seq);
  if (e == nullptr) return std::nullopt;
  SequenceInfo info;
  info.seq_id = seq;
  info.num_tokens = e->num_tokens;
  info.block_ids = e->blocks;
  info.last_access = e->last_access;
  info.access_count = e->access_count;
  info.priority = e->priority;
  info.token_runs = e->runs;
  return info;
}

std::vector<SeqId> PagedKvCache::sequence_ids() const {
  std::vector<SeqId> ids;
  ids.reserve(num_sequences());
  for (const Shard& sh : impl_->shards) {
    std::lock_guard<ShardLock> g(sh.mu);
    for (const auto& kv : sh.map) ids.push_back(kv.first);
  }
  return ids;
}

}  // namespace pkv
