// stress/checks.cpp — the quiescent checks (all workers parked at the barrier, and at the end):
// validate_unsafe, the per-id sequence accounting (created - freed - evicted is 0 or 1 and equals
// "the cache has it"), the counters against the logged calls, and the KV data of every tracked
// live sequence read back through its block table; at the end every block must come back.
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "stress.hpp"

namespace pkv::stress {

void Stress::quiescent_check(bool final) {
  ++checks_;
  if (std::string v = cache_->validate_unsafe(); !v.empty()) violation("validate_unsafe: " + v);

  // Sequence accounting.
  std::vector<std::uint64_t> vanished;
  for (Worker& w : workers_) {
    for (std::uint64_t id : w.ledger.created) accounts_[id].created += 1;
    for (std::uint64_t id : w.ledger.freed) accounts_[id].gone += 1;
    for (std::uint64_t id : w.ledger.evicted) accounts_[id].gone += 1;
    logged_evictions_ += w.ledger.evicted.size();
    logged_forks_ += w.ledger.forks;
    vanished.insert(vanished.end(), w.ledger.vanished.begin(), w.ledger.vanished.end());
    w.ledger = Ledger{};
  }
  std::vector<SeqId> ids = cache_->sequence_ids();
  std::unordered_map<std::uint64_t, bool> alive;
  for (SeqId id : ids) alive[id.value] = true;
  if (alive.size() != ids.size()) violation("sequence_ids lists an id twice");
  if (ids.size() != cache_->num_sequences())
    violation("num_sequences " + std::to_string(cache_->num_sequences()) +
              " != " + std::to_string(ids.size()) + " listed");
  for (SeqId id : ids) {
    auto it = accounts_.find(id.value);
    if (it == accounts_.end() || it->second.created - it->second.gone != 1)
      violation(pkv::to_string(id) + " is alive but was never created (or already freed)");
  }
  std::unordered_map<std::uint64_t, bool> tracked;
  for (Worker& w : workers_)
    for (const Tracked& tr : w.live) tracked[tr.id] = true;
  for (std::uint64_t id : vanished) {
    if (alive.contains(id) && !tracked.contains(id))
      violation(s(id) + " vanished for its owner but is alive");
    auto it = accounts_.find(id);
    if (it != accounts_.end() && it->second.gone == 0)
      violation(s(id) + " vanished for its owner but nobody freed or evicted it");
  }
  for (auto it = accounts_.begin(); it != accounts_.end();) {
    const std::int64_t d = it->second.created - it->second.gone;
    if (d < 0 || d > 1) {
      violation(s(it->first) + ": created " + std::to_string(it->second.created) +
                " times, freed or evicted " + std::to_string(it->second.gone) + " times");
    } else if (d == 1 && !alive.contains(it->first)) {
      violation(s(it->first) + " was lost: created, never freed nor evicted, not in the cache");
    }
    if (d == 0) {
      it = accounts_.erase(it);
    } else {
      ++it;
    }
  }

  // Counters (exact when quiescent).
  const pkv::CacheStats st = cache_->stats();
  const std::uint64_t used = cache_->used_block_count();
  if (st.total_evictions != logged_evictions_)
    violation("total_evictions " + std::to_string(st.total_evictions) +
              " != " + std::to_string(logged_evictions_) + " evictions returned to callers");
  if (st.total_forks != logged_forks_)
    violation("total_forks " + std::to_string(st.total_forks) +
              " != " + std::to_string(logged_forks_) + " successful forks");
  // A reclaimable block (findable, held by no sequence) is counted free but has not gone back
  // to the pool: the pool's counters see it as still taken (0 without prefix caching).
  const std::uint64_t reclaimable = cache_->reclaimable_block_count();
  if (st.total_allocations - st.total_frees != used + reclaimable)
    violation("total_allocations - total_frees != used + reclaimable blocks");
  if (reclaimable > cache_->cached_block_count() || reclaimable > cache_->free_block_count())
    violation("more reclaimable blocks than cached or free ones");
  if (st.peak_blocks_used < used || st.peak_blocks_used > cache_->total_blocks())
    violation("peak_blocks_used out of range");
  if (cache_->free_block_count() + used != cache_->total_blocks())
    violation("free + used != total");

  // KV data of every tracked live sequence.
  for (Worker& w : workers_) {
    for (std::size_t i = 0; i < w.live.size();) {
      Tracked& tr = w.live[i];
      std::optional<SequenceInfo> info = cache_->get_sequence(SeqId{tr.id});
      if (!info) {  // evicted; accounting above proved it
        forget(w, i, false);
        continue;
      }
      ++i;
      if (info->num_tokens != tr.tokens) {
        violation(s(tr.id) + ": " + std::to_string(info->num_tokens) + " tokens, owner expects " +
                  std::to_string(tr.tokens));
        continue;
      }
      if (!runs_ok(*info)) violation(s(tr.id) + ": malformed token runs");
      if (tr.tainted) continue;
      for (std::uint64_t k = 0; k < tr.tokens; ++k) {
        const Slot want = slot_of_key(tr.keys[k]);
        const Slot* cell = arena_.token(*info, k);
        if (cell == nullptr) {
          violation(s(tr.id) + ": kept token " + std::to_string(k) + " is beyond its blocks");
          break;
        }
        const Slot& got = *cell;
        ++tokens_checked_;
        if (std::memcmp(&got, &want, sizeof(Slot)) != 0) {
          violation(s(tr.id) + ": KV data of kept token " + std::to_string(k) + " is wrong (K " +
                    std::to_string(got.k) + ", expected " + std::to_string(want.k) + ")");
          break;
        }
      }
    }
  }

  if (!final) return;
  // Free everything: every block must come back.
  for (SeqId id : cache_->sequence_ids()) {
    if (auto r = cache_->free(id); !r) violation("final free(" + pkv::to_string(id) + ") failed");
  }
  for (Worker& w : workers_) w.live.clear();
  if (cache_->free_block_count() != cache_->total_blocks())
    violation("after freeing everything " + std::to_string(cache_->free_block_count()) + " of " +
              std::to_string(cache_->total_blocks()) + " blocks are free");
  if (cache_->num_sequences() != 0) violation("sequences left after freeing everything");
  if (std::string v = cache_->validate_unsafe(); !v.empty()) violation("final validate: " + v);
  reclaimed_ = cache_->prefix_stats().reclaimed;  // before reset_prefix_cache (for the summary)
  // Every cached block is reclaimable now; forgetting the hashes gives them back to the pool.
  if (cache_->reclaimable_block_count() != cache_->cached_block_count())
    violation("a cached block is held after freeing everything");
  if (auto r = cache_->reset_prefix_cache(); !r) violation("reset_prefix_cache failed");
  if (cache_->reclaimable_block_count() != 0 || cache_->cached_block_count() != 0 ||
      cache_->free_block_count() != cache_->total_blocks())
    violation("reset_prefix_cache left cached blocks or lost free ones");
  const pkv::CacheStats end = cache_->stats();
  if (end.total_allocations != end.total_frees) violation("total_allocations != total_frees");
}

}  // namespace pkv::stress
