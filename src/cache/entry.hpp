// src/cache/entry.hpp — one sequence's state inside its shard: the block table, where its tokens
// sit, and what the victim index orders it by.
//
// Invariants (checked by Shard::validate_locked, run after every locked mutation with
// -Dexpensive_checks=true, and by PagedKvCache::validate_unsafe):
//   runs[0].first_token == 0,  runs[j+1].first_token == runs[j].first_token + runs[j].length
//   sum(runs[j].length) == num_tokens,       runs.empty() == (num_tokens == 0)
//   end_slot == runs.back().slot + runs.back().length   (0 without runs)
//   runs[j].slot + runs[j].length <= blocks.size() * block_size
//   every block of `blocks` holds at least one kept token
//   pins > 0  <=>  the entry is not in its shard's victim index
//   !streamed  =>  runs.size() <= 1  (only StreamingLLM leaves dead slots)
//   token mode (allocated with token ids, prefix caching on):
//     tokens.size() == num_tokens (while publishing),  committed <= num_tokens,
//     published <= hashes.size() <= num_tokens / block_size,
//     blocks[0, published) are findable or were published once (their hashes are hashes[i]),
//     every block of `blocks` and `pending` is managed (prefix_cache.hpp)
// Not thread-safe: guarded by its shard's lock.
#pragma once

#include <cstdint>
#include <vector>

#include "pkv/block_hash.hpp"
#include "pkv/types.hpp"

namespace pkv::detail {

/// Recency-list links (LRU / StreamingLLM victim index). Each shard's list is a ring through a
/// sentinel hook in the index, so linking and unlinking never branch on the list's ends.
struct ListHook {
  ListHook* prev = nullptr;  // shard-guarded, like the whole list
  ListHook* next = nullptr;
};

struct Entry : ListHook {  // the hook links it into its shard's recency list
  explicit Entry(SeqId s) : id(s) {}
  SeqId id;
  std::vector<BlockId> blocks;
  std::vector<TokenRun> runs;  // empty iff num_tokens == 0
  // The slot the next token goes to (see the invariants). Kept here so that append's fast path
  // reads no line outside the entry; every change of `runs` sets it.
  std::uint64_t end_slot = 0;
  std::uint64_t num_tokens = 0;
  std::uint64_t last_access = 0;
  std::uint64_t access_count = 0;
  std::uint32_t priority = 0;
  std::uint32_t pins = 0;  // pin() count; pinned entries are not in the victim index
  bool streamed = false;   // StreamingLLM left dead slots in some block
  // truncate() dropped tokens: a block this entry shares may hold more filled slots for another
  // holder than for this one (fork passes it on, as it passes `streamed` on).
  bool truncated = false;
  // The last block may be held by another sequence too: set by fork (on both sides), by
  // StreamingLLM and by truncate (a kept earlier block may be shared), cleared once append finds
  // the last block private. While clear, append skips the reference-count read: the last block of
  // this entry can only become shared through fork of this entry, which holds this shard's lock.
  bool maybe_shared = false;
  // Allocated with token ids on a prefix-caching cache: its blocks are managed (holder counts in
  // the prefix cache's block states) and appending by count is refused. The count forms' fast
  // path bails on it.
  bool token_mode = false;
  bool publishing = false;  // token_mode and its blocks still a prefix (StreamingLLM clears it)
  std::vector<BlockId> pending;  // copy-on-write sources still held (Options::hold_copy_sources)

  // ---- token mode only ----
  std::vector<TokenId> tokens;     // every token's id, in order (while publishing)
  std::vector<BlockHash> hashes;   // chain hashes of full blocks [0, hashes.size())
  BlockHash salt_root{};           // h_{-1} = H(salt)
  std::uint64_t committed = 0;     // leading tokens whose KV the caller has written
  std::size_t published = 0;       // blocks [0, published) have been made findable

  std::uint64_t next_slot() const noexcept { return end_slot; }
  // What end_slot must be for these runs.
  static std::uint64_t end_of(const std::vector<TokenRun>& rs) noexcept {
    return rs.empty() ? 0 : rs.back().slot + rs.back().length;
  }
};

}  // namespace pkv::detail
