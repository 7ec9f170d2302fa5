// src/cache/streaming_llm.cpp — apply_streaming_llm: keep a sequence's attention sinks and recent
// window, free the blocks that hold neither (the compaction itself is a pure function).
#include "cache/streaming_llm.hpp"

#include <algorithm>
#include <limits>
#include <mutex>

#include "cache/cache_impl.hpp"

namespace pkv {

using detail::Entry;
using detail::Shard;
using detail::ShardLock;

detail::StreamingCompaction detail::compact_streaming(std::span<const TokenRun> runs,
                                                      std::size_t num_blocks,
                                                      std::size_t block_size,
                                                      std::uint64_t num_tokens, std::uint64_t sink,
                                                      std::uint64_t window) {
  // Kept tokens [0, sink) and [n - window, n), located in slot space through the runs.
  std::vector<TokenRun> pieces;  // in old slot space, first_token already renumbered
  auto collect = [&](std::uint64_t t0, std::uint64_t t1, std::uint64_t renumber_to) {
    for (const TokenRun& r : runs) {
      const std::uint64_t lo = std::max(t0, r.first_token);
      const std::uint64_t hi = std::min(t1, r.first_token + r.length);
      if (lo >= hi) continue;
      pieces.push_back(TokenRun{renumber_to + (lo - t0), r.slot + (lo - r.first_token), hi - lo});
    }
  };
  collect(0, sink, 0);
  collect(num_tokens - window, num_tokens, sink);

  // Keep exactly the blocks that hold a kept token, numbered in order.
  StreamingCompaction out;
  std::vector<std::uint64_t>& new_index = out.new_index;
  new_index.assign(num_blocks, StreamingCompaction::kDropped);
  for (const TokenRun& p : pieces) {
    for (std::uint64_t b = p.slot / block_size; b <= (p.slot + p.length - 1) / block_size; ++b)
      new_index[b] = 0;
  }
  for (std::size_t b = 0; b < num_blocks; ++b)
    if (new_index[b] == 0) new_index[b] = out.kept_blocks++;
  // Renumber slots into the compacted table; merge runs that became adjacent.
  for (TokenRun p : pieces) {
    p.slot = new_index[p.slot / block_size] * block_size + p.slot % block_size;
    if (!out.runs.empty() && out.runs.back().first_token + out.runs.back().length == p.first_token &&
        out.runs.back().slot + out.runs.back().length == p.slot) {
      out.runs.back().length += p.length;
    } else {
      out.runs.push_back(p);
    }
  }
  return out;
}

Result<std::size_t> PagedKvCache::apply_streaming_llm(SeqId seq, std::size_t sink,
                                                      std::size_t window) {
  if (sink > std::numeric_limits<std::size_t>::max() - window)
    return Error::invalid_argument("sink_tokens + window_tokens overflows");
  if (sink + window == 0)
    return Error::invalid_argument("StreamingLLM must keep at least one token (sink + window)");
  Impl& m = *impl_;
  Shard& sh = m.shard_of(seq);
  std::vector<BlockId> dropped;
  std::size_t evicted = 0;
  {
    std::lock_guard<ShardLock> g(sh.mu);
    Entry* found = sh.map.find_entry(seq);
    if (found == nullptr) return Error::sequence_not_found(seq);
    Entry& e = *found;
    const std::uint64_t n = e.num_tokens;
    const std::uint64_t keep = sink + window;
    if (n <= keep) return std::size_t{0};

    detail::StreamingCompaction c =
        detail::compact_streaming(e.runs, e.blocks.size(), block_size_, n, sink, window);
    std::vector<BlockId> kept;
    kept.reserve(c.kept_blocks);
    dropped.reserve(e.blocks.size() - c.kept_blocks);
    for (std::size_t b = 0; b < e.blocks.size(); ++b) {
      if (c.new_index[b] != detail::StreamingCompaction::kDropped) {
        kept.push_back(e.blocks[b]);
      } else {
        dropped.push_back(e.blocks[b]);
      }
    }
    sh.update(e, [&](Entry& x) {
      x.blocks = std::move(kept);
      x.runs = std::move(c.runs);
      x.end_slot = Entry::end_of(x.runs);
      x.num_tokens = keep;
      x.streamed = true;
      x.maybe_shared = true;  // the new last block may be an earlier, shared one
      x.publishing = false;   // its blocks are no longer a prefix of anything
      // ... so its chain is dead: no hashes, nothing offered, no commit beyond the kept tokens.
      x.hashes.clear(), x.published = 0, x.committed = std::min<std::uint64_t>(x.committed, keep);
    });
    evicted = n - keep;
    // Under the lock, as Shard::take_locked says.
    m.release_blocks(dropped, e.token_mode);
    PKV_ASSERT_EXPENSIVE(m.validate_shard(sh));
  }
  return evicted;
}

}  // namespace pkv
