// tests/model/reference_model.hpp — a sequential reference model of pkv::PagedKvCache.
//
// What it is
//   The seed's semantics (shared/seed/cache.rs) with pkv's documented fixes, written as plainly as
//   possible so that it can serve as the oracle for property tests, the linearizability checker
//   and the fuzzer. It follows the contract in include/pkv/paged_kv_cache.hpp and types.hpp, not
//   the implementation in src/: no shards, no pool, no runs arithmetic. Each sequence keeps the
//   slot of every kept token explicitly; blocks are the model's own ids 0..num_blocks-1 with a
//   FIFO free list (ids differ from the real cache's: compare sharing structure, not ids).
//
//   NOT thread-safe (a plain value type: copy it to branch, as the linearizability search does).
//
// Semantics in one place (every rule is the header's; error codes in brackets)
//   allocate(s, n)     s exists [invalid_operation "Sequence S<n> already exists"]; needs
//                      ceil(n / block_size) blocks, all or nothing [out_of_memory "requested r,
//                      f available"]; n == 0 makes an empty sequence. access_count = 1, last_access
//                      = tick.
//   append(s, n)       s missing [sequence_not_found]; num_tokens + n overflows [invalid_argument];
//                      n == 0 succeeds (no block, no CopyOp) and counts as an access. Otherwise
//                      room = free slots after the last kept token's slot; cow = room > 0 and the
//                      last block is shared; takes ceil(max(0, n - room) / bs) + cow blocks, all
//                      or nothing (out_of_memory reports that total). With cow the sequence moves
//                      to a fresh block and CopyOp{old, fresh} is returned; the old block loses one
//                      reference (with Options::hold_copy_sources the sequence keeps that reference
//                      as "pending" until copy_done / free / evict). Then tick and access_count
//                      + 1.
//   fork(src, dst)     src == dst [invalid_operation "Cannot fork sequence S<n> onto itself"];
//                      dst exists [invalid_operation "Destination sequence S<n> already exists"];
//                      src missing [sequence_not_found]. dst shares every block (refs + 1), copies
//                      tokens, layout and priority; last_access = tick, access_count = 1; dst is
//                      not pinned and holds no pending copy source.
//   free(s)            s missing [sequence_not_found]; each block (and pending source) loses a
//                      reference and returns to the free list at 0. Pinned sequences too.
//                      Token mode: pending sources first (last first), then the table tail first.
//   fork_many(src, ds) errors in this order, each changing nothing: some d == src [fork's
//                      invalid_operation]; an id twice in ds [invalid_argument]; the first d that
//                      exists [fork's invalid_operation]; src missing [sequence_not_found]. Empty
//                      ds checks only src. Otherwise fork(src, ds[i]) for i in order.
//   free_many(ss)      free(ss[i]) for i in order; failed items {i, sequence_not_found}, ascending.
//   truncate(s, n)     s missing [sequence_not_found]; n > num_tokens [invalid_argument]; n == 0
//                      returns 0. Else drops the last n kept tokens, keeps the blocks [0,
//                      ceil(end_slot / bs)) (end_slot: one past the last kept token's slot),
//                      drops one reference of each other block and returns how many left. Not
//                      an access (recency and access_count stay); pending sources stay.
//   pin(s) / unpin(s)  s missing [sequence_not_found]; unpin of an unpinned sequence
//                      [invalid_operation "Sequence S<n> is not pinned"]. Pins nest.
//   copy_done(s)       s missing [sequence_not_found]; releases s's pending sources, returns how
//                      many (0 without hold_copy_sources).
//   evict()            victim = the unpinned sequence with the smallest (primary, last_access):
//                      primary is 0 for LRU and StreamingLLM, access_count for LFU, -num_tokens
//                      for LongestFirst, the priority for Priority; none [invalid_operation "No
//                      sequences to evict"]. select_eviction_target: the same choice, or none.
//   evict_to_threshold(u)  u outside 0..1 or NaN [invalid_argument]; evicts while utilization > u
//                      and an unpinned sequence is left.
//   apply_streaming_llm(s, sink, window)  sink + window overflows or is 0 [invalid_argument,
//                      checked before the lookup]; s missing [sequence_not_found]; n <= sink +
//                      window returns 0 and changes nothing; else keeps tokens [0, sink) and
//                      [n - window, n) in their slots, keeps exactly the blocks holding one of them
//                      (table order), frees the others, and returns n - sink - window. Recency is
//                      unchanged.
//   set_priority / set_eviction_threshold / set_eviction_strategy: see the header.
//   Statistics: total_allocations counts blocks taken (COW blocks too), total_frees blocks
//   returned, peak_blocks_used the largest used count right after a call that took blocks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pkv/prefix_types.hpp"
#include "pkv/types.hpp"

namespace pkv::model {

inline constexpr std::uint64_t kMaxBlocks = 0xFFFFFFFEu;  // BlockPool::kMaxBlocks
inline constexpr std::uint32_t kMaxMagazine = 64;         // BlockPool::kMaxMagazine

/// Texts of the documented errors, built here (not through pkv::Error's factories) so a wrong
/// text in the library is caught.
namespace text {
inline std::string seq(SeqId s) {
  return "S" + std::to_string(s.value);
}
inline Error out_of_memory(std::uint64_t requested, std::uint64_t available) {
  return Error(Errc::out_of_memory, "Out of memory: requested " + std::to_string(requested) +
                                        " blocks, " + std::to_string(available) + " available");
}
inline Error not_found(SeqId s) {
  return Error(Errc::sequence_not_found, "Sequence not found: " + seq(s));
}
inline Error invalid_operation(const std::string& what) {
  return Error(Errc::invalid_operation, "Invalid operation: " + what);
}
/// invalid_argument texts are not specified beyond their prefix; see same_error().
inline Error invalid_argument(const std::string& what) {
  return Error(Errc::invalid_argument, "Invalid argument: " + what);
}
}  // namespace text

/// True when `real` is the error the model predicts: same code, and the same text except for
/// invalid_argument, whose text the contract fixes only up to the "Invalid argument: " prefix.
inline bool same_error(const Error& real, const Error& model) {
  if (real.code() != model.code()) return false;
  if (model.code() == Errc::invalid_argument)
    return real.message().rfind("Invalid argument: ", 0) == 0;
  return real.message() == model.message();
}

/// The seed's printed strategy names.
inline std::string strategy_name(const EvictionStrategy& s) {
  switch (s.kind()) {
    case EvictionStrategy::Kind::lru:
      return "LRU";
    case EvictionStrategy::Kind::lfu:
      return "LFU";
    case EvictionStrategy::Kind::longest_first:
      return "LongestFirst";
    case EvictionStrategy::Kind::priority:
      return "Priority(" + std::to_string(s.levels()) + ")";
    case EvictionStrategy::Kind::streaming_llm:
      return "StreamingLLM(sink=" + std::to_string(s.sink_tokens()) +
             ", window=" + std::to_string(s.window_tokens()) + ")";
  }
  return "?";
}

/// What create() must say about a configuration: nullopt when valid (then *block_bytes is set).
inline std::optional<Errc> config_error(std::uint64_t num_blocks, std::uint64_t block_size,
                                        std::uint64_t num_heads, std::uint64_t head_dim,
                                        std::uint64_t magazine_size,
                                        std::uint64_t* block_bytes = nullptr) {
  if (num_blocks == 0 || block_size == 0 || num_heads == 0 || head_dim == 0)
    return Errc::invalid_argument;
  if (num_blocks > kMaxBlocks) return Errc::invalid_argument;
  if (magazine_size > kMaxMagazine) return Errc::invalid_argument;
  // 2 (K, V) x block_size x num_heads x head_dim x 2 bytes, times num_blocks, must fit size_t.
  constexpr std::uint64_t kMax = std::numeric_limits<std::size_t>::max();
  std::uint64_t bytes = 4;
  for (std::uint64_t f : {block_size, num_heads, head_dim}) {
    if (bytes > kMax / f) return Errc::invalid_argument;
    bytes *= f;
  }
  if (bytes > kMax / num_blocks) return Errc::invalid_argument;
  if (block_bytes != nullptr) *block_bytes = bytes;
  return std::nullopt;
}

class ReferenceModel {
 public:
  using Key = std::pair<std::string, std::vector<TokenId>>;
  struct Seq {
    std::vector<std::uint32_t> blocks;  // model block ids, table order
    std::vector<std::uint64_t> slots;   // slot of kept token i (strictly increasing)
    std::uint64_t last_access = 0;
    std::uint64_t access_count = 0;
    std::uint32_t priority = 0;
    bool streamed = false;
    std::uint32_t pins = 0;
    std::vector<std::uint32_t> pending;  // copy-on-write sources still held (hold_copy_sources)
    // Prefix caching (token mode: allocated with token ids).
    bool token_mode = false;
    bool publishing = false;  // token mode and not streamed
    std::string salt;
    std::vector<TokenId> ids;     // token ids of the kept tokens (while publishing)
    std::uint64_t committed = 0;  // tokens whose KV the caller has written
    std::uint64_t published = 0;  // leading blocks already offered for publishing

    std::uint64_t num_tokens() const { return slots.size(); }
    std::uint64_t next_slot() const { return slots.empty() ? 0 : slots.back() + 1; }
  };

  /// A model of a cache built with a valid configuration (see config_error).
  ReferenceModel(std::uint64_t num_blocks, std::uint64_t block_size, std::uint64_t num_heads,
                 std::uint64_t head_dim, bool hold_copy_sources = false)
      : hold_copy_sources_(hold_copy_sources),
        num_blocks_(num_blocks),
        block_size_(block_size),
        block_bytes_(4 * block_size * num_heads * head_dim),
        refs_(num_blocks, 0),
        key_(num_blocks) {
    for (std::uint64_t b = 0; b < num_blocks; ++b) free_.push_back(static_cast<std::uint32_t>(b));
  }

  // ---- configuration -------------------------------------------------------------------------
  Result<void> set_eviction_strategy(const EvictionStrategy& s) {
    if (s.kind() == EvictionStrategy::Kind::priority && s.levels() == 0)
      return text::invalid_argument("priority levels");
    if (s.kind() == EvictionStrategy::Kind::streaming_llm) {
      const std::uint64_t sink = s.sink_tokens(), window = s.window_tokens();
      if (sink > std::numeric_limits<std::size_t>::max() - window || sink + window == 0)
        return text::invalid_argument("streaming sizes");
    }
    strategy_ = s;
    return {};
  }
  EvictionStrategy eviction_strategy() const { return strategy_; }
  Result<void> set_eviction_threshold(double t) {
    if (std::isnan(t)) return text::invalid_argument("NaN threshold");
    threshold_ = std::clamp(t, 0.0, 1.0);
    return {};
  }
  double eviction_threshold() const { return threshold_; }
  Result<void> set_priority(SeqId s, std::uint32_t p) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    it->second.priority = p;
    return {};
  }

  // ---- pinning and copy completion ------------------------------------------------------------
  Result<void> pin(SeqId s) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    if (it->second.pins == std::numeric_limits<std::uint32_t>::max())
      return text::invalid_operation("Sequence " + text::seq(s) + " is pinned too often");
    it->second.pins += 1;
    return {};
  }
  Result<void> unpin(SeqId s) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    if (it->second.pins == 0)
      return text::invalid_operation("Sequence " + text::seq(s) + " is not pinned");
    it->second.pins -= 1;
    return {};
  }
  Result<std::size_t> copy_done(SeqId s) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    const std::size_t n = it->second.pending.size();
    drop_all(it->second.pending, it->second.token_mode);  // newest first, as free()
    it->second.pending.clear();
    return n;
  }

  // ---- figures ---------------------------------------------------------------------------------
  std::uint64_t block_size() const { return block_size_; }
  std::uint64_t total_blocks() const { return num_blocks_; }
  std::uint64_t free_block_count() const { return free_.size() + reclaimable_.size(); }
  std::uint64_t used_block_count() const { return num_blocks_ - free_block_count(); }
  std::uint64_t cached_block_count() const {
    std::uint64_t n = 0;
    for (const auto& k : key_) n += k ? 1 : 0;
    return n;
  }
  std::uint64_t reclaimable_block_count() const { return reclaimable_.size(); }
  PrefixCacheStats prefix_stats() const { return pstats_; }
  bool findable(std::uint32_t b) const { return key_.at(b).has_value(); }
  double utilization() const {
    return static_cast<double>(used_block_count()) / static_cast<double>(num_blocks_);
  }
  std::uint64_t block_memory_bytes() const { return block_bytes_; }
  std::uint64_t total_memory_bytes() const { return block_bytes_ * num_blocks_; }
  std::uint64_t used_memory_bytes() const { return block_bytes_ * used_block_count(); }
  bool needs_eviction() const { return utilization() >= threshold_; }
  std::uint64_t num_sequences() const { return seqs_.size(); }
  CacheStats stats() const { return stats_; }
  std::uint32_t ref_count(std::uint32_t block) const { return refs_.at(block); }
  std::uint64_t clock() const { return clock_; }

  // ---- sequences -------------------------------------------------------------------------------
  Result<void> allocate(SeqId s, std::uint64_t num_tokens) {
    if (seqs_.contains(s.value))
      return text::invalid_operation("Sequence " + text::seq(s) + " already exists");
    const std::uint64_t nb = num_tokens / block_size_ + (num_tokens % block_size_ != 0 ? 1 : 0);
    if (nb > free_block_count()) return text::out_of_memory(nb, free_block_count());
    Seq q;
    q.blocks = take(nb);
    q.slots.resize(num_tokens);
    for (std::uint64_t i = 0; i < num_tokens; ++i) q.slots[i] = i;
    q.last_access = ++clock_;
    q.access_count = 1;
    seqs_.emplace(s.value, std::move(q));
    if (nb > 0) note_peak();
    return {};
  }

  Result<std::optional<CopyOp>> append(SeqId s, std::uint64_t n, bool with_ids = false) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    Seq& q = it->second;
    if (q.token_mode && !with_ids)
      return text::invalid_operation("Sequence " + text::seq(s) +
                                     " was allocated with token ids: append token ids");
    if (n > std::numeric_limits<std::size_t>::max() - q.num_tokens())
      return text::invalid_argument("token count overflow");
    std::optional<CopyOp> copy;
    if (n > 0) {
      const std::uint64_t next = q.next_slot();
      const std::uint64_t room = q.blocks.size() * block_size_ - next;
      // A findable last block is shared with every future hit (after a truncate into it).
      const bool cow =
          room > 0 && (refs_[q.blocks.back()] > 1 || (q.token_mode && key_[q.blocks.back()]));
      const std::uint64_t beyond = n > room ? n - room : 0;
      const std::uint64_t need =
          beyond / block_size_ + (beyond % block_size_ != 0 ? 1 : 0) + (cow ? 1 : 0);
      if (need > free_block_count()) return text::out_of_memory(need, free_block_count());
      std::vector<std::uint32_t> got = take(need);
      std::size_t i = 0;
      if (cow) {
        const std::uint32_t old = q.blocks.back();
        copy = CopyOp{BlockId{old}, BlockId{got[0]}};
        q.blocks.back() = got[i++];
        if (hold_copy_sources_) {
          q.pending.push_back(old);  // our reference moves to the pending list
        } else {
          drop(old);  // refs > 1: it stays referenced by its other holders
        }
      }
      q.blocks.insert(q.blocks.end(), got.begin() + static_cast<std::ptrdiff_t>(i), got.end());
      // Large n only happens here when it fits the free blocks, so the loop is bounded by
      // num_blocks * block_size.
      for (std::uint64_t k = 0; k < n; ++k) q.slots.push_back(next + k);
      if (need > 0) note_peak();
    }
    q.last_access = ++clock_;
    q.access_count += 1;
    return copy;
  }

  Result<void> free(SeqId s) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    // As Shard::take_locked: the held copy sources (last first), then the table tail first. A
    // copy source is a replaced last block, content the sequence no longer refers to, so it is
    // reclaimed before the blocks of its table.
    const std::vector<std::uint32_t>& pending = it->second.pending;
    for (std::size_t i = pending.size(); i-- > 0;) drop(pending[i]);
    drop_all(it->second.blocks, it->second.token_mode);
    seqs_.erase(it);
    return {};
  }

  Result<void> fork(SeqId src, SeqId dst) {
    if (src == dst)
      return text::invalid_operation("Cannot fork sequence " + text::seq(src) + " onto itself");
    if (seqs_.contains(dst.value))
      return text::invalid_operation("Destination sequence " + text::seq(dst) + " already exists");
    auto it = seqs_.find(src.value);
    if (it == seqs_.end()) return text::not_found(src);
    Seq d;
    d.blocks = it->second.blocks;
    d.slots = it->second.slots;
    d.priority = it->second.priority;
    d.streamed = it->second.streamed;
    d.token_mode = it->second.token_mode;  // the child continues the same chain
    d.publishing = it->second.publishing;
    d.salt = it->second.salt;
    d.ids = it->second.ids;
    d.committed = it->second.committed;
    d.published = it->second.published;
    for (std::uint32_t b : d.blocks) ++refs_[b];
    d.last_access = ++clock_;
    d.access_count = 1;
    seqs_.emplace(dst.value, std::move(d));
    stats_.total_forks += 1;
    return {};
  }

  // ---- prefix caching ----------------------------------------------------------------------
  /// Picks which of several findable blocks with one key a hit takes (pkv may keep duplicates;
  /// which one it finds is not specified): given the block's table index and the candidates
  /// (publish order), returns one of them. The default takes the first.
  using Chooser = std::function<std::uint32_t(std::size_t, const std::vector<std::uint32_t>&)>;

  /// allocate(seq, prompt, salt): the longest findable prefix (at most (size - 1) / bs blocks)
  /// is shared (a reclaimable hit is revived), the rest taken, all or nothing: on out_of_memory
  /// (requested: the blocks to take; available: free_block_count() after the revivals) nothing
  /// changes. Commits nothing beyond the hit blocks. Returns the cached tokens.
  /// `hit_limit` caps the hit blocks (for checkers that accept a lookup that missed, see
  /// test_linearizability.cpp); the cache itself has no such parameter.
  Result<std::size_t> allocate(
      SeqId s, const std::vector<TokenId>& prompt, const std::string& salt,
      const Chooser& choose = {},
      std::uint64_t hit_limit = std::numeric_limits<std::uint64_t>::max()) {
    if (prompt.empty()) return text::invalid_argument("empty prompt");
    if (seqs_.contains(s.value))
      return text::invalid_operation("Sequence " + text::seq(s) + " already exists");
    const std::uint64_t max_hit = std::min((prompt.size() - 1) / block_size_, hit_limit);
    const std::uint64_t nb = prompt.size() / block_size_ + (prompt.size() % block_size_ != 0);
    std::vector<std::uint32_t> hits;
    const std::deque<std::uint32_t> saved = reclaimable_;
    for (std::uint64_t i = 0; i < max_hit; ++i) {
      auto it = index_.find(key_of(salt, prompt, i));
      if (it == index_.end()) break;
      const std::uint32_t b = choose ? choose(i, it->second) : it->second.front();
      if (refs_[b]++ == 0) std::erase(reclaimable_, b);
      hits.push_back(b);
    }
    const std::uint64_t need = nb - hits.size();
    if (need > free_block_count()) {
      const std::uint64_t avail = free_block_count();
      for (std::uint32_t b : hits) --refs_[b];
      reclaimable_ = saved;  // a failed allocation changes nothing
      return text::out_of_memory(need, avail);
    }
    Seq q;
    q.blocks = hits;
    const std::vector<std::uint32_t> got = take(need);
    q.blocks.insert(q.blocks.end(), got.begin(), got.end());
    q.slots.resize(prompt.size());
    for (std::uint64_t i = 0; i < prompt.size(); ++i) q.slots[i] = i;
    q.token_mode = q.publishing = true;
    q.salt = salt;
    q.ids = prompt;
    q.committed = hits.size() * block_size_;
    q.published = hits.size();
    q.last_access = ++clock_;
    q.access_count = 1;
    seqs_.emplace(s.value, std::move(q));
    note_peak();
    pstats_.requests += 1;
    pstats_.queries += prompt.size();
    pstats_.hits += hits.size() * block_size_;
    return static_cast<std::size_t>(hits.size() * block_size_);
  }

  /// append(seq, token ids): the count form that records the ids; first commits every token the
  /// sequence held before. A count-mode sequence: the count form.
  Result<std::optional<CopyOp>> append(SeqId s, const std::vector<TokenId>& tokens) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    if (!it->second.token_mode) return append(s, tokens.size(), true);
    const std::uint64_t held = it->second.num_tokens();
    Result<std::optional<CopyOp>> r = append(s, tokens.size(), true);
    if (!r) return r;
    Seq& q = seqs_.at(s.value);
    if (q.publishing) q.ids.insert(q.ids.end(), tokens.begin(), tokens.end());
    publish_committed(q, held);
    return r;
  }

  Result<std::size_t> commit(SeqId s, std::uint64_t n) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    if (n > it->second.num_tokens()) return text::invalid_argument("commit beyond the sequence");
    if (!it->second.token_mode) return std::size_t{0};
    return publish_committed(it->second, n);
  }

  std::size_t match_prefix(const std::vector<TokenId>& tokens, const std::string& salt) const {
    if (tokens.empty()) return 0;
    const std::uint64_t max_hit = (tokens.size() - 1) / block_size_;
    std::uint64_t i = 0;
    while (i < max_hit && index_.contains(key_of(salt, tokens, i))) ++i;
    return static_cast<std::size_t>(i * block_size_);
  }

  /// Forgets every hash: held blocks stay (offered blocks are not published again), reclaimable
  /// ones become plain free.
  Result<void> reset_prefix_cache() {
    for (auto& k : key_) k.reset();
    index_.clear();
    for (std::uint32_t b : reclaimable_) {
      free_.push_back(b);
      stats_.total_frees += 1;
    }
    reclaimable_.clear();
    return {};
  }

  /// fork(src, dsts[i]) for each i in order, all or nothing; errors checked first, in order.
  Result<void> fork_many(SeqId src, const std::vector<SeqId>& dsts) {
    for (SeqId d : dsts)
      if (d == src)
        return text::invalid_operation("Cannot fork sequence " + text::seq(src) + " onto itself");
    for (std::size_t i = 0; i < dsts.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (dsts[i] == dsts[j]) return text::invalid_argument("repeated destination");
    for (SeqId d : dsts)
      if (seqs_.contains(d.value))
        return text::invalid_operation("Destination sequence " + text::seq(d) + " already exists");
    if (!seqs_.contains(src.value)) return text::not_found(src);
    for (SeqId d : dsts) (void)fork(src, d);
    return {};
  }

  /// free(seqs[i]) for each i in order; the failed items (ascending) with their errors.
  std::vector<std::pair<std::size_t, Error>> free_many(const std::vector<SeqId>& seqs) {
    std::vector<std::pair<std::size_t, Error>> errors;
    for (std::size_t i = 0; i < seqs.size(); ++i)
      if (Result<void> r = free(seqs[i]); !r) errors.emplace_back(i, r.error());
    return errors;
  }

  /// Drops the last n kept tokens; keeps blocks [0, ceil(end_slot / bs)) where end_slot is one
  /// past the last kept token's slot, drops one reference from each other block. Not an access.
  Result<std::size_t> truncate(SeqId s, std::uint64_t n) {
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    Seq& q = it->second;
    if (n > q.num_tokens()) return text::invalid_argument("truncate beyond the sequence");
    if (n == 0) return std::size_t{0};
    q.slots.resize(q.slots.size() - n);
    const std::uint64_t end = q.next_slot();
    const std::uint64_t keep = end / block_size_ + (end % block_size_ != 0 ? 1 : 0);
    const std::size_t gone = q.blocks.size() - keep;
    drop_all(std::vector<std::uint32_t>(q.blocks.begin() + static_cast<std::ptrdiff_t>(keep),
                                        q.blocks.end()),
             q.token_mode);
    q.blocks.resize(keep);
    if (q.token_mode) {  // the chain follows the kept tokens
      const std::uint64_t full = q.num_tokens() / block_size_;
      if (q.publishing) q.ids.resize(q.num_tokens());
      q.published = std::min(q.published, full);
      q.committed = std::min(q.committed, q.num_tokens());
    }
    return gone;
  }

  const Seq* find(SeqId s) const {
    auto it = seqs_.find(s.value);
    return it == seqs_.end() ? nullptr : &it->second;
  }
  const std::map<std::uint64_t, Seq>& sequences() const { return seqs_; }

  /// The model's view as a SequenceInfo (block ids are the model's; runs are maximal).
  std::optional<SequenceInfo> get_sequence(SeqId s) const {
    const Seq* q = find(s);
    if (q == nullptr) return std::nullopt;
    SequenceInfo info;
    info.seq_id = s;
    info.num_tokens = q->num_tokens();
    for (std::uint32_t b : q->blocks) info.block_ids.push_back(BlockId{b});
    info.last_access = q->last_access;
    info.access_count = q->access_count;
    info.priority = q->priority;
    for (std::uint64_t i = 0; i < q->slots.size(); ++i) {
      if (!info.token_runs.empty() &&
          info.token_runs.back().slot + info.token_runs.back().length == q->slots[i]) {
        info.token_runs.back().length += 1;
      } else {
        info.token_runs.push_back(TokenRun{i, q->slots[i], 1});
      }
    }
    return info;
  }

  /// Live ids, ascending.
  std::vector<SeqId> sequence_ids() const {
    std::vector<SeqId> ids;
    for (const auto& kv : seqs_) ids.push_back(SeqId{kv.first});
    return ids;
  }

  // ---- eviction --------------------------------------------------------------------------------
  std::optional<SeqId> select_eviction_target() const {
    std::optional<SeqId> best;
    std::pair<std::uint64_t, std::uint64_t> best_key{};
    for (const auto& [id, q] : seqs_) {
      if (q.pins > 0) continue;
      std::pair<std::uint64_t, std::uint64_t> k{primary(q), q.last_access};
      if (!best || k < best_key) {
        best = SeqId{id};
        best_key = k;
      }
    }
    return best;
  }

  Result<SeqId> evict() {
    std::optional<SeqId> v = select_eviction_target();
    if (!v) return text::invalid_operation("No sequences to evict");
    (void)free(*v);
    stats_.total_evictions += 1;
    return *v;
  }

  /// Not part of the cache's API: evicts `s` whether or not the strategy would pick it (for
  /// checkers that tolerate a stale victim choice; see test_linearizability.cpp).
  Result<SeqId> evict_sequence(SeqId s) {
    if (Result<void> r = free(s); !r) return r.error();
    stats_.total_evictions += 1;
    return s;
  }

  /// Not part of the cache's API: the `n` least recently released reclaimable blocks lose their
  /// hash and become plain free, as when a failed allocation reclaimed them and gave them back
  /// (for checkers that tolerate it; see test_linearizability.cpp).
  void forget_reclaimable(std::size_t n) {
    for (; n > 0 && !reclaimable_.empty(); --n) {
      const std::uint32_t b = reclaimable_.front();
      reclaimable_.pop_front();
      unindex(b);
      pstats_.reclaimed += 1;
      free_.push_back(b);
      stats_.total_frees += 1;
    }
  }

  Result<std::vector<SeqId>> evict_to_threshold(double target) {
    if (!(target >= 0.0 && target <= 1.0)) return text::invalid_argument("target");
    std::vector<SeqId> out;
    while (utilization() > target) {
      Result<SeqId> r = evict();
      if (!r) break;  // nothing evictable left
      out.push_back(r.value());
    }
    return out;
  }

  Result<std::size_t> apply_streaming_llm(SeqId s, std::uint64_t sink, std::uint64_t window) {
    if (sink > std::numeric_limits<std::size_t>::max() - window)
      return text::invalid_argument("overflow");
    if (sink + window == 0) return text::invalid_argument("keeps nothing");
    auto it = seqs_.find(s.value);
    if (it == seqs_.end()) return text::not_found(s);
    Seq& q = it->second;
    const std::uint64_t n = q.num_tokens();
    const std::uint64_t keep = sink + window;
    if (n <= keep) return std::size_t{0};
    std::vector<std::uint64_t> kept_slots;
    for (std::uint64_t i = 0; i < sink; ++i) kept_slots.push_back(q.slots[i]);
    for (std::uint64_t i = n - window; i < n; ++i) kept_slots.push_back(q.slots[i]);
    std::vector<bool> holds(q.blocks.size(), false);
    for (std::uint64_t s2 : kept_slots) holds[s2 / block_size_] = true;
    std::vector<std::uint64_t> new_index(q.blocks.size(), 0);
    std::vector<std::uint32_t> blocks, dropped;
    for (std::size_t b = 0; b < q.blocks.size(); ++b) {
      if (holds[b]) {
        new_index[b] = blocks.size();
        blocks.push_back(q.blocks[b]);
      } else {
        dropped.push_back(q.blocks[b]);
      }
    }
    drop_all(dropped, q.token_mode);
    q.publishing = false;  // its blocks are no longer a prefix of anything
    for (std::uint64_t& s2 : kept_slots)
      s2 = new_index[s2 / block_size_] * block_size_ + s2 % block_size_;
    q.blocks = std::move(blocks);
    q.slots = std::move(kept_slots);
    q.streamed = true;
    return static_cast<std::size_t>(n - keep);
  }

  /// The seed's Display form (see operator<< in paged_kv_cache.hpp).
  std::string display() const {
    const std::uint64_t used = used_block_count();
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "PagedKvCache\n  Strategy: %s (block_size=%llu)\n  Blocks: %llu/%llu (%.1f%% "
                  "used)\n  Memory: %.2f MB / %.2f MB\n  Sequences: %llu active\n  Stats: "
                  "allocs=%llu, frees=%llu, evictions=%llu, forks=%llu\n",
                  strategy_name(strategy_).c_str(), ull(block_size_), ull(used), ull(num_blocks_),
                  static_cast<double>(used) / static_cast<double>(num_blocks_) * 100.0,
                  static_cast<double>(used * block_bytes_) / 1e6,
                  static_cast<double>(num_blocks_ * block_bytes_) / 1e6, ull(seqs_.size()),
                  ull(stats_.total_allocations), ull(stats_.total_frees),
                  ull(stats_.total_evictions), ull(stats_.total_forks));
    return buf;
  }

  /// 64-bit fingerprint of the whole state (for memoisation in searches).
  std::uint64_t fingerprint() const {
    std::uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](std::uint64_t v) {
      h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
      h *= 1099511628211ULL;
    };
    mix(clock_);
    mix(static_cast<std::uint64_t>(strategy_.kind()));
    for (std::uint32_t b : free_) mix(b);
    for (const auto& [id, q] : seqs_) {
      mix(id);
      mix(q.last_access);
      mix(q.access_count);
      mix(q.priority);
      mix(q.blocks.size());
      for (std::uint32_t b : q.blocks) mix(b);
      mix(q.slots.size());
      for (std::uint64_t s : q.slots) mix(s);
      mix(q.pins);
      mix(q.pending.size());
      for (std::uint32_t b : q.pending) mix(b);
      mix(q.token_mode);
      mix(q.publishing);
      mix(q.committed);
      mix(q.published);
      mix(std::hash<std::string>{}(q.salt));
      mix(q.ids.size());
      for (TokenId t : q.ids) mix(t);
    }
    // Prefix caching: what is findable under which key (in index order: the default hit), the
    // reclaim order, and the counters compared at quiescence.
    for (const auto& [k, blocks] : index_) {
      mix(std::hash<std::string>{}(k.first));
      mix(k.second.size());
      for (TokenId t : k.second) mix(t);
      for (std::uint32_t b : blocks) mix(b);
    }
    mix(reclaimable_.size());
    for (std::uint32_t b : reclaimable_) mix(b);
    mix(pstats_.requests);
    mix(pstats_.queries);
    mix(pstats_.hits);
    mix(pstats_.published);
    mix(pstats_.reclaimed);
    mix(stats_.total_allocations);
    mix(stats_.total_frees);
    mix(stats_.total_evictions);
    mix(stats_.total_forks);
    mix(stats_.peak_blocks_used);
    return h;
  }

 private:
  static unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

  std::uint64_t primary(const Seq& q) const {
    switch (strategy_.kind()) {
      case EvictionStrategy::Kind::lru:
      case EvictionStrategy::Kind::streaming_llm:
        return 0;
      case EvictionStrategy::Kind::lfu:
        return q.access_count;
      case EvictionStrategy::Kind::longest_first:
        return std::numeric_limits<std::uint64_t>::max() - q.num_tokens();
      case EvictionStrategy::Kind::priority:
        return q.priority;
    }
    return 0;
  }

  // Plain free blocks first, then reclaimable ones, least recently released first (each loses
  // its hash).
  std::vector<std::uint32_t> take(std::uint64_t n) {
    std::vector<std::uint32_t> got;
    for (std::uint64_t i = 0; i < n; ++i) {
      if (!free_.empty()) {
        got.push_back(free_.front());
        free_.pop_front();
        stats_.total_allocations += 1;
      } else {
        got.push_back(reclaimable_.front());
        reclaimable_.pop_front();
        unindex(got.back());
        pstats_.reclaimed += 1;
      }
      refs_[got.back()] = 1;
    }
    return got;
  }

  // A findable block whose last holder leaves becomes reclaimable (newest at the back).
  void drop(std::uint32_t b) {
    if (--refs_[b] == 0) {
      if (key_[b]) {
        reclaimable_.push_back(b);
      } else {
        free_.push_back(b);
        stats_.total_frees += 1;
      }
    }
  }
  // Drops a token-mode sequence's blocks tail first (the deepest block of a chain goes first).
  void drop_all(const std::vector<std::uint32_t>& blocks, bool token_mode) {
    if (token_mode) {
      for (std::size_t i = blocks.size(); i-- > 0;) drop(blocks[i]);
    } else {
      for (std::uint32_t b : blocks) drop(b);
    }
  }
  void unindex(std::uint32_t b) {
    auto it = index_.find(*key_[b]);
    std::erase(it->second, b);
    if (it->second.empty()) index_.erase(it);
    key_[b].reset();
  }
  Key key_of(const std::string& salt, const std::vector<TokenId>& ids, std::size_t block) const {
    return Key{salt, std::vector<TokenId>(
                         ids.begin(),
                         ids.begin() + static_cast<std::ptrdiff_t>((block + 1) * block_size_))};
  }
  // Publishes the full committed blocks not offered yet; returns how many became findable.
  std::size_t publish_committed(Seq& q, std::uint64_t committed) {
    q.committed = std::max(q.committed, committed);
    if (!q.publishing) return 0;
    const std::uint64_t full = std::min<std::uint64_t>(q.committed / block_size_, q.blocks.size());
    std::size_t count = 0;
    for (; q.published < full; ++q.published) {
      const std::uint32_t b = q.blocks[q.published];
      if (key_[b]) continue;  // a sharer published it
      key_[b] = key_of(q.salt, q.ids, q.published);
      index_[*key_[b]].push_back(b);
      ++count;
    }
    pstats_.published += count;
    return count;
  }

  void note_peak() {
    stats_.peak_blocks_used = std::max<std::uint64_t>(stats_.peak_blocks_used, used_block_count());
  }

  bool hold_copy_sources_;
  std::uint64_t num_blocks_;
  std::uint64_t block_size_;
  std::uint64_t block_bytes_;
  std::vector<std::uint32_t> refs_;
  std::deque<std::uint32_t> free_;  // plain free
  // Prefix caching: the findable blocks by (salt, token ids up to and including the block);
  // several blocks per key are allowed (two sequences computed the same prompt).
  std::vector<std::optional<Key>> key_;
  std::map<Key, std::vector<std::uint32_t>> index_;
  std::deque<std::uint32_t> reclaimable_;  // findable, no holder; least recently released first
  PrefixCacheStats pstats_{};
  std::map<std::uint64_t, Seq> seqs_;
  EvictionStrategy strategy_{};
  double threshold_ = 0.9;
  std::uint64_t clock_ = 0;
  CacheStats stats_{};
};

}  // namespace pkv::model
