// src/cache/append.cpp — append and append_batch: growing sequences, copy-on-write of a shared
// last block, and the decode step's one clock update per batch.
#include <algorithm>
#include <limits>
#include <mutex>

#include "cache/cache_impl.hpp"

namespace pkv {

using detail::AppendStep;
using detail::Entry;
using detail::Shard;
using detail::ShardLock;

namespace {

// append's fast path, inline in append and append_batch (append_locked, out of line, does the
// rest): the tokens fit in the free slots of a last block that is known to be private, so no
// copy, no block taken and no overflow (the slots exist). Most decode steps. Caller holds the
// shard lock. Returns false, having changed nothing, when the slow path must run.
[[gnu::always_inline]] inline bool append_fast(Shard& sh, Entry& e, std::size_t block_size,
                                               std::size_t num_tokens, std::uint64_t stamp) {
  if (num_tokens == 0 || e.maybe_shared || e.token_mode || e.runs.empty() ||
      num_tokens > e.blocks.size() * block_size - e.next_slot())
    return false;
  e.runs.back().length += num_tokens;
  e.end_slot += num_tokens;
  sh.touch_appended(e, num_tokens, stamp);
  return true;
}

// The count forms on a token-mode sequence (its ids would be missing from its chain).
[[gnu::cold]] Error appended_by_count(SeqId seq) {
  return Error::invalid_operation("Sequence " + to_string(seq) +
                                  " was allocated with token ids: append token ids");
}

}  // namespace

// The body of append() for one entry whose shard lock the caller holds. `stamp` is the recency
// stamp of this access (see tick()); an entry touched meanwhile with a later stamp keeps it.
// Sets *took when blocks were taken (the caller notes the peak after unlocking). The outcome is a
// one-byte code; the CopyOp (rare) comes back through *copy and the Error (cold) through *err, so
// the common return writes one byte, not a Result.
AppendStep PagedKvCache::Impl::append_locked(Shard& sh, Entry& e, std::size_t num_tokens,
                                             std::uint64_t stamp, bool* took, CopyOp* copy,
                                             std::optional<Error>* err) {
  if (num_tokens > std::numeric_limits<std::size_t>::max() - e.num_tokens) {
    err->emplace(Error::invalid_argument("appending " + std::to_string(num_tokens) + " tokens to " +
                                         to_string(e.id) + " overflows its token count"));
    return AppendStep::failed;
  }
  AppendStep outcome = AppendStep::appended;
  if (num_tokens > 0) {
    const std::uint64_t next = e.next_slot();
    const std::uint64_t room = e.blocks.size() * block_size - next;  // free slots in last block
    // Copy-on-write: the last block has free slots we are about to write, and another sequence
    // holds it. Its count cannot rise meanwhile: only fork adds references, and fork of any
    // holder of this block locks that holder's shard; the one holder whose next write goes
    // here is `seq`, whose shard we hold. (Two sharers may both copy; never neither.) The cow
    // mutation build (scripts/mutation-check.sh) drops the copy, so the checks must fail.
    // A findable block is shared with every future hit: after a truncate into it, it copies too.
    const bool cow = !PKV_MUTATION_COW && room > 0 && e.maybe_shared &&
                     (holders(e.blocks.back(), e.token_mode) > 1 ||
                      (e.token_mode && prefix_or_null()->findable(e.blocks.back())));
    const std::uint64_t beyond = num_tokens > room ? num_tokens - room : 0;
    const std::uint64_t fresh = beyond / block_size + (beyond % block_size != 0 ? 1 : 0);
    const std::uint64_t need = fresh + (cow ? 1 : 0);
    // After this append the last block is private: a fresh copy, a fresh block, or one whose
    // count we just read as 1 (nothing can raise it while we hold this shard's lock, see above).
    if (need > 0) {
      const std::size_t old_len = e.blocks.size();
      // Grow geometrically here: acquire() reserves only what it appends. (A request larger
      // than the pool fails in acquire with out_of_memory; reserve nothing for it.)
      if (need <= num_blocks && e.blocks.capacity() < old_len + need)
        e.blocks.reserve(std::max<std::size_t>(2 * e.blocks.capacity(), old_len + need));
      // acquire appends to e.blocks, or fails and leaves it unchanged (nothing changed then).
      if (Result<void> r = acquire_blocks(need, e.blocks, e.token_mode); !r) {
        err->emplace(r.error());
        return AppendStep::failed;
      }
      *took = true;
      if (cow) {
        // The first fresh block replaces the shared last block (the CopyOp's destination).
        const BlockId unshared = e.blocks[old_len - 1];
        *copy = CopyOp{unshared, e.blocks[old_len]};
        outcome = AppendStep::copied;
        e.blocks[old_len - 1] = e.blocks[old_len];
        e.blocks.erase(e.blocks.begin() + static_cast<std::ptrdiff_t>(old_len));
        // Our reference to the source: held until copy_done(), or dropped now (under the lock,
        // as Shard::take_locked says).
        if (hold_copy_sources) {
          e.pending.push_back(unshared);
        } else {
          release_block(unshared, e.token_mode);
        }
      }
    }
    e.maybe_shared = false;  // (only after success: a failed append changes nothing)
    if (e.runs.empty()) {
      e.runs.push_back(TokenRun{0, next, num_tokens});
    } else {
      e.runs.back().length += num_tokens;  // appended tokens follow the last kept slot
    }
    e.end_slot = next + num_tokens;
  }
  sh.touch_appended(e, num_tokens, stamp);
  return outcome;
}

Result<std::optional<CopyOp>> PagedKvCache::append(SeqId seq, std::size_t num_tokens) {
  Impl& m = *impl_;
  // One hash for the shard and the slot (after the lock the compiler would compute it again).
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
    const std::uint64_t stamp = m.tick();
    if (append_fast(sh, *e, block_size_, num_tokens, stamp)) {
      step = AppendStep::appended;
    } else if (e->token_mode) {
      return appended_by_count(seq);
    } else {
      step = m.append_locked(sh, *e, num_tokens, stamp, &took, &copy, &err);
    }
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  if (took) m.note_peak();
  return detail::append_result(step, copy, err);
}

void PagedKvCache::append_batch(std::span<const SeqId> seqs, std::size_t num_tokens,
                                AppendBatchOutcome& out) {
  impl_->append_items<false>(seqs, num_tokens, nullptr, out);
}

Result<void> PagedKvCache::append_batch(std::span<const SeqId> seqs,
                                        std::span<const std::size_t> num_tokens,
                                        AppendBatchOutcome& out) {
  if (num_tokens.size() != seqs.size()) {
    out.clear();
    return Error::invalid_argument("append_batch: " + std::to_string(seqs.size()) +
                                   " sequences but " + std::to_string(num_tokens.size()) +
                                   " token counts");
  }
  impl_->append_items<true>(seqs, 0, num_tokens.data(), out);
  return {};
}

// Separate instantiations, so the uniform form keeps its count loop-invariant and the count
// forms carry nothing of the token-id form.
template <bool PerItem, bool WithIds>
void PagedKvCache::Impl::append_items(std::span<const SeqId> seqs, std::size_t num_tokens,
                                      const std::size_t* per_item, AppendBatchOutcome& out,
                                      const TokenId* ids) {
  out.clear();
  // Room for every item's copy or error before any item changes anything: no allocation, so no
  // exception, after the first item (a CopyOp lost that way would leave a block uncopied).
  // Capacity is kept across calls, so a scheduler reusing `out` allocates only while warming up.
  out.copies.reserve(seqs.size());
  out.errors.reserve(seqs.size());
  out.items = seqs.size();
  if (seqs.empty()) return;
  // One clock update for the whole batch: item i is stamped base + i + 1, so the items are
  // ordered among themselves as separate calls would be, and after every call that returned
  // before this one started. (tick() takes one stamp; this takes seqs.size() at once.)
  const std::uint64_t base = clock.fetch_add(seqs.size(), std::memory_order_relaxed);
  bool took = false;
  std::optional<Error> err;
  CopyOp copy;
  std::size_t next_hash = std::hash<SeqId>{}(seqs[0]);
  Shard* next_shard = &shard_at(seqs[0], next_hash);
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const SeqId seq = seqs[i];
    const std::size_t hash = next_hash;
    Shard& sh = *next_shard;
    // The next item's shard line (lock, table header, list ends) starts loading now, so its
    // miss overlaps this item's work. A prefetch reads no data: nothing races.
    if (i + 1 < seqs.size()) {
      next_hash = std::hash<SeqId>{}(seqs[i + 1]);
      next_shard = &shard_at(seqs[i + 1], next_hash);
      __builtin_prefetch(next_shard, 1);
    }
    std::size_t n = num_tokens;
    if constexpr (PerItem) n = per_item[i];
    AppendStep step = AppendStep::failed;
    {
      std::lock_guard<ShardLock> g(sh.mu);
      Entry* e = sh.map.find_entry(seq, hash);
      if (e == nullptr) {
        err.emplace(Error::sequence_not_found(seq));
      } else {
        if (append_fast(sh, *e, block_size, n, base + i + 1)) {  // never a token-mode entry
          step = AppendStep::appended;
        } else if (e->token_mode && !WithIds) {
          err.emplace(appended_by_count(seq));
        } else if constexpr (WithIds) {
          const std::uint64_t held = e->num_tokens;
          step = append_locked(sh, *e, n, base + i + 1, &took, &copy, &err);
          if (e->token_mode && step != AppendStep::failed)
            record_appended(*e, std::span<const TokenId>(ids + i, 1), held);
        } else {
          step = append_locked(sh, *e, n, base + i + 1, &took, &copy, &err);
        }
      }
      PKV_ASSERT_EXPENSIVE(validate_shard(sh));
    }
    // A success writes nothing; copies and errors are listed with their item's index.
    if (step == AppendStep::copied) {
      out.copies.push_back({i, copy});
    } else if (step == AppendStep::failed) {
      out.errors.push_back({i, std::move(*err)});
      err.reset();
    }
  }
  if (took) note_peak();
}

// The token-id form of append_batch (prefix.cpp) calls the uniform one.
template void PagedKvCache::Impl::append_items<false, true>(std::span<const SeqId>, std::size_t,
                                                            const std::size_t*, AppendBatchOutcome&,
                                                            const TokenId*);

}  // namespace pkv
