// sim/trace.hpp — request traces with prefix structure, for replaying prefix caching (issue 11).
//
// What it does
//   * Reads a Mooncake trace (FAST'25, kvcache-ai/Mooncake `FAST25-release/traces/`): JSONL, one
//     object a line, {"timestamp": ms, "input_length": prompt tokens, "output_length": generated
//     tokens, "hash_ids": [...]}, one hash id per 512-token block of the prompt, where an id stands
//     for its block and every block before it.
//   * Expands a request into token ids: trace block t (a full 512-token block) holds
//     trace_token(hash_ids[t], j) for j < 512, so equal ids give equal tokens and pkv's own block
//     hashes see equal content exactly where the trace says so; the tokens of a partial last block
//     come from the request (request_token(index, position)), so they equal no other request's.
//   * Computes the upper bound of the prefix hit rate: what an infinite cache with pkv's rules
//     would reach on the trace in file order (a cache block hits iff an earlier prompt held the
//     same tokens up to its end in a full block; only full blocks; the last prompt token is always
//     computed, so a prompt of n tokens hits at most floor((n - 1) / block_size) blocks).
//   * Generates the `shared-prefix:G:P:S:Q` dataset (SGLang's generated-shared-prefix benchmark):
//     G groups of P prompts; the prompts of a group share one S-token system prompt, each adds its
//     own Q-token question.
//
// Token derivation (a data format: do not change, traces replayed elsewhere must agree)
//   mix(x) = splitmix64's output function of x; tokens are its low 17 bits (a tokenizer's range).
//     trace_token(id, j)         = mix(id * 512 + j) & 0x1FFFF                  (ids < 2^53)
//     tagged(tag, key, pos)      = mix(tag << 62 | (key mod 2^30) << 32 | (pos mod 2^32)) & 0x1FFFF
//     request_token(index, pos)  = tagged(2, index, pos)
//     shared-prefix: system prompt of group g = tagged(1, g, k), question q = tagged(3, q, k)
//   The four input domains are disjoint (top two bits). Distinct inputs never repeat a whole
//   block: 16 equal tokens by chance has probability 2^-272.
//
// Thread safety: plain functions and value types; no shared state.
//
// Errors: parse_mooncake_trace / load_mooncake_trace throw TraceError, whose what() is
// "SOURCE:LINE: what is wrong" (malformed JSON, a missing or mistyped field, input_length 0,
// len(hash_ids) != ceil(input_length / 512), a negative id, timestamps going backwards).
// parse_shared_prefix returns nullopt and sets *error for a malformed spec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "pkv/block_hash.hpp"

namespace pkv::sim {

/// Tokens per hash id in a Mooncake trace.
inline constexpr std::size_t kTraceBlockTokens = 512;

struct TraceRequest {
  double timestamp_ms = 0;
  std::uint32_t input_length = 0;
  std::uint32_t output_length = 0;
  std::vector<std::uint64_t> hash_ids;  // ceil(input_length / 512) of them
};

struct Trace {
  std::string source;  // file name (or what the caller called the stream)
  std::vector<TraceRequest> requests;

  std::uint64_t prompt_tokens() const noexcept;
  std::uint64_t output_tokens() const noexcept;
};

class TraceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses a Mooncake JSONL stream (blank lines are skipped). Throws TraceError.
Trace parse_mooncake_trace(std::istream& in, const std::string& source = "<stream>");
/// Opens and parses `path`. Throws TraceError (also when the file cannot be opened).
Trace load_mooncake_trace(const std::string& path);

/// Token j (< 512) of the trace block whose hash id is `hash_id`.
TokenId trace_token(std::uint64_t hash_id, std::size_t j) noexcept;
/// Token at absolute position `position` of request number `index` when it is not the trace's:
/// its partial last prompt block, and its generated tokens (positions >= input_length).
TokenId request_token(std::uint64_t index, std::uint64_t position) noexcept;

/// The prompt of request number `index` (its position in the trace), input_length tokens.
std::vector<TokenId> expand_prompt(const TraceRequest& request, std::uint64_t index);
/// The same into `out` (cleared first; its capacity is reused).
void expand_prompt(const TraceRequest& request, std::uint64_t index, std::vector<TokenId>& out);

/// What an infinite cache would hit.
struct PrefixBound {
  std::size_t block_size = 0;
  std::uint64_t requests = 0;
  std::uint64_t prompt_tokens = 0;  // queries
  std::uint64_t hit_tokens = 0;     // hits, a multiple of block_size per request

  double hit_rate() const noexcept {
    return prompt_tokens == 0
               ? 0.0
               : static_cast<double>(hit_tokens) / static_cast<double>(prompt_tokens);
  }
};

/// The bound on a Mooncake trace from its hash ids alone (no tokens are made): a request's first
/// d full trace blocks hit iff an earlier request had the same chain of ids as full blocks; the
/// hit is floor(min(512 d, n - 1) / block_size) * block_size tokens. Equals what
/// InfiniteCacheBound counts on the expanded prompts, for every block_size dividing 512.
/// block_size 0 throws std::invalid_argument.
PrefixBound infinite_cache_bound(const Trace& trace, std::size_t block_size);

/// The LRU model of Mooncake's Fig. 9 (the theoretical hit rate against capacity): a cache of
/// capacity_tokens / 512 trace blocks, nothing else in memory (no running requests, no outputs),
/// requests in file order; a request hits its longest prefix of full trace blocks in the cache
/// (counted with the rules above), then its full blocks are touched, deepest first, and inserted,
/// the least recently used evicted. capacity_tokens >= the trace's distinct full blocks x 512
/// gives infinite_cache_bound. block_size 0 throws std::invalid_argument.
PrefixBound lru_cache_bound(const Trace& trace, std::size_t block_size,
                            std::size_t capacity_tokens);

/// The bound on any prompts, fed one at a time in arrival order, from their tokens: chain hashes
/// of full blocks (xxh3_128, empty salt) kept in a set. Memory: one BlockHash (plus a hash-set
/// node) per distinct full block seen. Not thread-safe.
class InfiniteCacheBound {
 public:
  /// Throws std::invalid_argument when block_size == 0.
  explicit InfiniteCacheBound(std::size_t block_size);
  /// Counts the prompt's hit, then remembers its full blocks. Returns the hit (tokens).
  std::size_t add(std::span<const TokenId> prompt);
  const PrefixBound& result() const noexcept { return bound_; }

 private:
  PrefixBound bound_;
  std::unordered_set<BlockHash> seen_;
};

// ---- shared-prefix:G:P:S:Q ----------------------------------------------------------------------

struct SharedPrefixSpec {
  std::size_t groups = 0;
  std::size_t prompts_per_group = 0;
  std::size_t system_tokens = 0;
  std::size_t question_tokens = 0;
};

/// Parses "shared-prefix:G:P:S:Q" (G, P >= 1; S + Q >= 1; each and G * P at most 2^24). On error
/// returns
/// nullopt and, when `error` is not null, says what is wrong.
std::optional<SharedPrefixSpec> parse_shared_prefix(std::string_view text,
                                                    std::string* error = nullptr);

struct SharedPrefixPrompt {
  std::size_t group = 0;
  std::size_t index_in_group = 0;
  std::vector<TokenId> tokens;  // system prompt of the group, then the prompt's question
};

/// The G * P prompts, group by group; with shuffle, in a Fisher-Yates order drawn from `seed`
/// (a splitmix64 stream: the same on every platform).
std::vector<SharedPrefixPrompt> generate_shared_prefix(const SharedPrefixSpec& spec, bool shuffle,
                                                       std::uint64_t seed);

}  // namespace pkv::sim
