// pkv/types.hpp — value types shared by BlockPool and PagedKvCache.
//
// Contract
//   Everything here is a plain value type: copyable, not synchronised, safe to use from any thread
//   as long as one object is not written by one thread while another reads it. Names, texts and
//   printed forms follow the seed (`PagedKvCache` in Rust) so existing callers and tests carry
//   over:
//     SeqId   prints S<n>      BlockId prints B<n>
//     Error   texts "Out of memory: requested {r} blocks, {a} available", "Sequence not found:
//     S{n}",
//             "Block not found: B{n}", "Invalid operation: {msg}", and (new) "Invalid argument:
//             {msg}"
//
//   Result<T> is a small std::expected stand-in (C++20 has none): has_value(), explicit bool,
//   value(), error(). Calling value() on an error, or error() on a value, is a programming error
//   and aborts with a message (it is never an outcome of bad API input).
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace pkv {

/// Sequence (request) id. Printed `S<n>`.
struct SeqId {
  std::uint64_t value = 0;
  friend constexpr auto operator<=>(const SeqId&, const SeqId&) = default;
};

/// Physical block index. Printed `B<n>`.
struct BlockId {
  std::uint32_t value = 0;
  friend constexpr auto operator<=>(const BlockId&, const BlockId&) = default;
};

std::ostream& operator<<(std::ostream& os, SeqId id);
std::ostream& operator<<(std::ostream& os, BlockId id);
std::string to_string(SeqId id);
std::string to_string(BlockId id);

/// The outcomes an operation can report instead of a value.
enum class Errc : std::uint8_t {
  out_of_memory,       ///< not enough free blocks; nothing was taken
  sequence_not_found,  ///< no live sequence has this id
  block_not_found,     ///< the block id is out of range or not referenced
  invalid_operation,   ///< the call is well formed but not allowed in this state
  invalid_argument,    ///< an argument is out of its domain (zero sizes, overflow, NaN, ...)
};

const char* to_string(Errc code) noexcept;

/// An error: a code to branch on and the seed's human-readable message.
class Error {
 public:
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  static Error out_of_memory(std::size_t requested, std::size_t available);
  static Error sequence_not_found(SeqId id);
  static Error block_not_found(BlockId id);
  static Error invalid_operation(const std::string& what);
  static Error invalid_argument(const std::string& what);

  Errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

  friend bool operator==(const Error&, const Error&) = default;

 private:
  Errc code_;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Error& e);

namespace detail {
[[noreturn]] void bad_result_access(const char* what) noexcept;
}  // namespace detail

/// A value of type T, or an Error. std::expected-like; no exceptions.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  /// Constructs the value in place from `args` (no T temporary is made and moved).
  template <class... Args>
  explicit Result(std::in_place_t, Args&&... args)
      : v_(std::in_place_index<0>, std::forward<Args>(args)...) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    if (!has_value()) detail::bad_result_access("value() on an error Result");
    return std::get<0>(v_);
  }
  const T& value() const& {
    if (!has_value()) detail::bad_result_access("value() on an error Result");
    return std::get<0>(v_);
  }
  T&& value() && {
    if (!has_value()) detail::bad_result_access("value() on an error Result");
    return std::get<0>(std::move(v_));
  }
  const Error& error() const {
    if (has_value()) detail::bad_result_access("error() on a Result that holds a value");
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

/// Success without a value, or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : e_(std::move(error)) {}  // NOLINT: implicit by design

  bool has_value() const noexcept { return !e_.has_value(); }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const {
    if (!has_value()) detail::bad_result_access("value() on an error Result");
  }
  const Error& error() const {
    if (has_value()) detail::bad_result_access("error() on a Result that holds a value");
    return *e_;
  }

 private:
  std::optional<Error> e_;
};

/// How the cache picks a whole sequence to evict when memory runs out.
/// Ties are always broken by least recent access (then by smaller SeqId).
class EvictionStrategy {
 public:
  enum class Kind : std::uint8_t { lru, lfu, longest_first, priority, streaming_llm };

  static constexpr EvictionStrategy lru() noexcept { return EvictionStrategy(Kind::lru, 0, 0, 0); }
  static constexpr EvictionStrategy lfu() noexcept { return EvictionStrategy(Kind::lfu, 0, 0, 0); }
  static constexpr EvictionStrategy longest_first() noexcept {
    return EvictionStrategy(Kind::longest_first, 0, 0, 0);
  }
  /// Lowest priority value is evicted first. `levels` is informational (printed); any u32 priority
  /// is accepted by set_priority.
  static constexpr EvictionStrategy priority(std::uint32_t levels) noexcept {
    return EvictionStrategy(Kind::priority, levels, 0, 0);
  }
  /// StreamingLLM evicts tokens (apply_streaming_llm); for whole-sequence eviction it uses LRU.
  static constexpr EvictionStrategy streaming_llm(std::size_t sink_tokens,
                                                  std::size_t window_tokens) noexcept {
    return EvictionStrategy(Kind::streaming_llm, 0, sink_tokens, window_tokens);
  }

  constexpr EvictionStrategy() noexcept = default;  // LRU, the seed's default

  constexpr Kind kind() const noexcept { return kind_; }
  constexpr std::uint32_t levels() const noexcept { return levels_; }
  constexpr std::size_t sink_tokens() const noexcept { return sink_; }
  constexpr std::size_t window_tokens() const noexcept { return window_; }

  friend constexpr bool operator==(const EvictionStrategy&, const EvictionStrategy&) = default;

 private:
  constexpr EvictionStrategy(Kind k, std::uint32_t levels, std::size_t sink, std::size_t window)
      : kind_(k), levels_(levels), sink_(sink), window_(window) {}

  Kind kind_ = Kind::lru;
  std::uint32_t levels_ = 0;
  std::size_t sink_ = 0;
  std::size_t window_ = 0;
};

/// Printed as the seed prints it: `LRU`, `LFU`, `LongestFirst`, `Priority(<levels>)`,
/// `StreamingLLM(sink=<s>, window=<w>)`.
std::ostream& operator<<(std::ostream& os, const EvictionStrategy& s);
std::string to_string(const EvictionStrategy& s);

/// A run of consecutive token slots: tokens [first_token, first_token + length) of the sequence's
/// kept tokens live in slots [slot, slot + length) of its block table, where slot s is offset
/// s % block_size of block_ids[s / block_size]. A sequence that never had StreamingLLM applied has
/// one run {0, 0, num_tokens}, or none while it has no tokens.
struct TokenRun {
  std::uint64_t first_token = 0;
  std::uint64_t slot = 0;
  std::uint64_t length = 0;
  friend bool operator==(const TokenRun&, const TokenRun&) = default;
};

/// A snapshot of one sequence, copied out of the cache (later calls do not change it).
struct SequenceInfo {
  SeqId seq_id;
  std::size_t num_tokens = 0;        ///< tokens kept (after StreamingLLM: sink + window + new)
  std::vector<BlockId> block_ids;    ///< the block table, in order
  std::uint64_t last_access = 0;     ///< logical clock; larger = more recent (exact order)
  std::uint64_t access_count = 0;    ///< LFU count: allocate/fork set 1, each append adds 1
  std::uint32_t priority = 0;        ///< set_priority; lower is evicted first under Priority
  std::vector<TokenRun> token_runs;  ///< where each kept token sits (see TokenRun)

  std::size_t num_blocks() const noexcept { return block_ids.size(); }
  /// Slot (index into the block table's token slots) of kept token `i`; i < num_tokens.
  std::uint64_t slot_of(std::uint64_t i) const noexcept;
};

/// The seed's five counters. A snapshot; counters are striped inside the cache.
struct CacheStats {
  std::uint64_t total_allocations = 0;  ///< blocks taken from the free list
  std::uint64_t total_frees = 0;        ///< blocks returned to the free list
  std::uint64_t total_evictions = 0;    ///< sequences evicted by evict / evict_to_threshold
  std::uint64_t total_forks = 0;        ///< successful forks
  std::uint64_t peak_blocks_used = 0;   ///< high-water mark of used blocks (see PagedKvCache)
  friend bool operator==(const CacheStats&, const CacheStats&) = default;
};

/// A copy the caller must perform before writing the appended tokens: copy all KV data of block
/// `src` into block `dst` (copy-on-write after fork).
struct CopyOp {
  BlockId src;
  BlockId dst;
  friend bool operator==(const CopyOp&, const CopyOp&) = default;
};

std::ostream& operator<<(std::ostream& os, const CopyOp& op);

/// What one append_batch(seqs, n, out) did, in the form a decode step consumes it: every item
/// appended except those listed in `errors`, and `copies` holds the CopyOps to perform before
/// the step's writes (at most one per item). Both lists are in item order. A success costs no
/// write, so a step of B items writes O(copies + errors) results, not B. Reuse one object across
/// steps: append_batch clears it and keeps the capacity.
struct AppendBatchOutcome {
  struct ItemCopy {
    std::size_t item;  // index into the call's seqs
    CopyOp copy;
    friend bool operator==(const ItemCopy&, const ItemCopy&) = default;
  };
  struct ItemError {
    std::size_t item;  // index into the call's seqs
    Error error;       // why this item changed nothing
  };
  std::size_t items = 0;  // seqs.size() of the call
  std::vector<ItemCopy> copies;
  std::vector<ItemError> errors;

  bool all_appended() const noexcept { return errors.empty(); }
  /// Item i's outcome, exactly what append(seqs[i], n) returns (O(log) lookup). i < items.
  Result<std::optional<CopyOp>> item(std::size_t i) const;
  /// The outcome of every item, in order (for tests and logs; allocates).
  std::vector<Result<std::optional<CopyOp>>> per_item() const;
  void clear() noexcept {
    items = 0;
    copies.clear();
    errors.clear();
  }
};

/// What one free_many(seqs, out) did: every item freed except those listed in `errors` (in item
/// order, each with the Error free(seqs[i]) would have returned at that point: an unknown id, or
/// an id named again after its first occurrence freed it). Reuse one object across calls:
/// free_many clears it and keeps the capacity.
struct FreeManyOutcome {
  using ItemError = AppendBatchOutcome::ItemError;
  std::size_t items = 0;  // seqs.size() of the call
  std::vector<ItemError> errors;

  bool all_freed() const noexcept { return errors.empty(); }
  /// Item i's outcome, exactly what free(seqs[i]) returns in that order (O(log) lookup). i < items.
  Result<void> item(std::size_t i) const;
  void clear() noexcept {
    items = 0;
    errors.clear();
  }
};

}  // namespace pkv

template <>
struct std::hash<pkv::SeqId> {
  std::size_t operator()(pkv::SeqId id) const noexcept {
    // splitmix64 finaliser: request ids are often sequential; spread them over shards and buckets.
    std::uint64_t x = id.value + 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return static_cast<std::size_t>(x ^ (x >> 31));
  }
};

template <>
struct std::hash<pkv::BlockId> {
  std::size_t operator()(pkv::BlockId id) const noexcept {
    return std::hash<std::uint32_t>{}(id.value);
  }
};
