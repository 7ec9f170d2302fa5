// src/cache/streaming_llm.hpp — StreamingLLM's compaction of one sequence's token runs: which
// blocks keep a token of the first `sink` and the last `window` tokens, and where those tokens
// sit once the other blocks are gone. A pure function (tests/test_streaming_llm.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "pkv/types.hpp"

namespace pkv::detail {

struct StreamingCompaction {
  /// Per block of the old table: its index in the compacted table if it holds a kept token (the
  /// kept blocks stay, in order), kDropped otherwise.
  std::vector<std::uint64_t> new_index;
  static constexpr std::uint64_t kDropped = ~std::uint64_t{0};
  /// How many blocks stay.
  std::size_t kept_blocks = 0;
  /// The kept tokens' runs in the compacted table (kept blocks renumbered 0, 1, ...), tokens
  /// renumbered 0 .. sink + window - 1, adjacent runs merged.
  std::vector<TokenRun> runs;
};

/// Compacts `runs` (a sequence of `num_tokens` tokens over `num_blocks` blocks of `block_size`
/// slots, as entry.hpp's invariants say) to the first `sink` and the last `window` tokens.
/// Requires sink + window < num_tokens (no overflow): the caller has handled the other cases.
StreamingCompaction compact_streaming(std::span<const TokenRun> runs, std::size_t num_blocks,
                                      std::size_t block_size, std::uint64_t num_tokens,
                                      std::uint64_t sink, std::uint64_t window);

}  // namespace pkv::detail
