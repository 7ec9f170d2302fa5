// src/cache/truncate.cpp — truncate: drop a sequence's last tokens (rejected speculative drafts)
// and the blocks left without a kept token.
#include <algorithm>
#include <mutex>
#include <span>
#include <string>

#include "cache/cache_impl.hpp"

namespace pkv {

using detail::Entry;
using detail::Shard;
using detail::ShardLock;

// The one place truncate gives blocks back: blocks [keep, blocks.size()) of `e` leave its table,
// one reference each, released under the shard lock (as Shard::take_locked says). Block keep - 1
// (if any) may be left partly filled: it stays as it is, shared or not. Prefix caching extends
// With prefix caching, a published block keeps its content and stays findable: truncate writes
// no KV, and the next append into a cut published block copies it first (append_locked treats a
// findable last block as shared), so it stays full and unchanged.
// Returns how many blocks left the table.
std::size_t PagedKvCache::Impl::truncate_blocks_locked(Entry& e, std::size_t keep) {
  const std::size_t dropped = e.blocks.size() - keep;
  if (dropped == 0) return 0;
  release_blocks(std::span<const BlockId>(e.blocks).subspan(keep), e.token_mode);
  e.blocks.resize(keep);  // shrinking: no allocation
  return dropped;
}

Result<std::size_t> PagedKvCache::truncate(SeqId seq, std::size_t num_tokens) {
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::lock_guard<ShardLock> g(sh.mu);
  Entry* found = sh.map.find_entry(seq);
  if (found == nullptr) return Error::sequence_not_found(seq);
  Entry& e = *found;
  if (num_tokens > e.num_tokens)
    return Error::invalid_argument("truncate: cannot drop " + std::to_string(num_tokens) +
                                   " tokens from " + to_string(seq) + ", which holds " +
                                   std::to_string(e.num_tokens));
  if (num_tokens == 0) return std::size_t{0};
  // Cut the runs from the end (the newest kept tokens first); a run left empty goes. Runs lie in
  // increasing slot order, so the kept tokens are exactly the slots below the new end slot.
  sh.update(e, [&](Entry& x) {
    std::uint64_t cut = num_tokens;
    while (cut > 0) {
      TokenRun& last = x.runs.back();
      if (last.length <= cut) {
        cut -= last.length;
        x.runs.pop_back();
      } else {
        last.length -= cut;
        cut = 0;
      }
    }
    x.num_tokens -= num_tokens;
    x.end_slot = Entry::end_of(x.runs);
    x.truncated = true;
    // The new last block may be an earlier one that another sequence holds (fork), with its
    // tokens in the slots now free here: the next append must read its count and copy.
    x.maybe_shared = true;
    if (x.token_mode) {  // the chain's bookkeeping follows the kept tokens
      const std::size_t full = x.num_tokens / m.block_size;
      if (x.publishing) x.tokens.resize(x.num_tokens);
      if (x.hashes.size() > full) x.hashes.resize(full);
      x.published = std::min(x.published, full);
      x.committed = std::min<std::uint64_t>(x.committed, x.num_tokens);
    }
  });
  const std::size_t keep = e.end_slot / m.block_size + (e.end_slot % m.block_size != 0 ? 1 : 0);
  const std::size_t dropped = m.truncate_blocks_locked(e, keep);
  PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  return dropped;
}

}  // namespace pkv
