// src/cache/sequences.cpp — a sequence's life outside append: allocate, free, fork, and the
// snapshots get_sequence and sequence_ids. Each call locks its sequence's shard (fork: two).
#include <mutex>

#include "cache/cache_impl.hpp"

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

Result<void> PagedKvCache::fork(SeqId src, SeqId dst) {
  if (src == dst)
    return Error::invalid_operation("Cannot fork sequence " + to_string(src) + " onto itself");
  Impl& m = *impl_;
  Shard& a = m.shard_of(src);
  Shard& b = m.shard_of(dst);
  // Two shard locks in address order (one if both ids share a shard): no deadlock with another
  // fork locking the same pair the other way round.
  std::unique_lock<ShardLock> l1, l2;
  if (&a == &b) {
    l1 = std::unique_lock<ShardLock>(a.mu);
  } else {
    Shard* first = &a < &b ? &a : &b;
    Shard* second = &a < &b ? &b : &a;
    l1 = std::unique_lock<ShardLock>(first->mu);
    l2 = std::unique_lock<ShardLock>(second->mu);
  }
  if (b.map.contains(dst))
    return Error::invalid_operation("Destination sequence " + to_string(dst) + " already exists");
  auto it = a.map.find(src);
  if (it == a.map.end()) return Error::sequence_not_found(src);
  Entry& s = it->second;
  m.retain_blocks(s.blocks, s.token_mode);
  Entry d(dst);
  d.blocks = s.blocks;
  d.runs = s.runs;
  d.end_slot = s.end_slot;
  d.num_tokens = s.num_tokens;
  d.priority = s.priority;  // a beam or sample inherits its request's priority
  d.streamed = s.streamed;
  d.maybe_shared = s.maybe_shared = true;  // both now hold the same last block
  if (s.token_mode) {  // the child continues the same chain of hashes
    d.token_mode = true;
    d.publishing = s.publishing;
    d.tokens = s.tokens;
    d.hashes = s.hashes;
    d.salt_root = s.salt_root;
    d.committed = s.committed;
    d.published = s.published;
  }
  d.last_access = m.tick();
  d.access_count = 1;
  b.insert_locked(dst, std::move(d));
  PKV_ASSERT_EXPENSIVE(m.validate_shard(a));
  PKV_ASSERT_EXPENSIVE(m.validate_shard(b));
  m.my_stripe().forks.fetch_add(1, std::memory_order_relaxed);  // striped statistic
  return {};
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
