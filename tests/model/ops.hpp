// tests/model/ops.hpp — the calls the model tests make: a cache configuration, one public call
// with its arguments (Op), the sequence ids they use (pairs that share a shard under every
// placement tested) and how each prints. The RapidCheck generators (gen_ops.hpp), the fuzzer's
// byte decoder and the linearizability checker build Ops; harness.hpp runs them.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "pkv/paged_kv_cache.hpp"
#include "reference_model.hpp"  // strategy_name

namespace pkv::model {

struct CacheConfig {
  std::uint64_t num_blocks = 8;
  std::uint64_t block_size = 2;
  std::uint64_t num_heads = 1;
  std::uint64_t head_dim = 1;
  std::uint32_t magazine_size = 32;
  bool hold_copy_sources = false;  // PagedKvCache::Options::hold_copy_sources
  unsigned affinity_shift = 0;     // PagedKvCache::Options::affinity_shift
};

inline std::ostream& operator<<(std::ostream& os, const CacheConfig& c) {
  return os << "CacheConfig{blocks=" << c.num_blocks << ", block_size=" << c.block_size
            << ", heads=" << c.num_heads << ", head_dim=" << c.head_dim
            << ", magazine=" << c.magazine_size << ", hold_copy_sources=" << c.hold_copy_sources
            << ", affinity_shift=" << c.affinity_shift << "}";
}

enum class OpKind : std::uint8_t {
  allocate,
  append,
  fork,
  free,
  get_sequence,
  sequence_ids,
  select_target,
  evict,
  evict_to_threshold,
  streaming,
  set_priority,
  set_strategy,
  set_threshold,
  display,
  pin,
  unpin,
  copy_done,
  append_batch,  // append_batch({seq, seq2, seq}, n): a duplicate and maybe a missing id
  // Added after the fuzzer's corpus was written: kOpKinds stays the count of the kinds above
  // (the fuzzer's `b % kOpKinds` decoding of old inputs must not change); see fuzz_cache.cpp.
  fork_many,  // fork_many(seq, ids)
  free_many,  // free_many(ids)
  truncate,   // truncate(seq, n)
  // Prefix caching: prompts from a few families that share prefixes (prompt_of), two salts.
  allocate_tokens,  // allocate(seq, prompt_of(m, n), salt_of(strategy))
  append_tokens,    // append(seq, n token ids continuing family m)
  commit,           // commit(seq, n)
  match_prefix,     // match_prefix(prompt_of(m, n), salt_of(strategy))
  reset_prefix,     // reset_prefix_cache()
  // append_batch({seq, seq2, seq}, one id per item continuing family m at each item's position);
  // n % 7 == 6: a token span of the wrong length (invalid_argument)
  append_batch_tokens,
};
inline constexpr int kOpKinds = 18;
inline constexpr int kAllOpKinds = 27;

/// Prompt families: 0 and 1 are one prompt (full sharing), 2 and 3 share its first 4 tokens; a
/// shorter prompt of a family is a prefix of a longer one. Token i of family f.
inline TokenId family_token(std::uint64_t f, std::uint64_t i) {
  if (i < 4 || f % 4 < 2) return static_cast<TokenId>(100 + i);
  return static_cast<TokenId>(1000 * (f % 4) + i);
}
inline std::vector<TokenId> prompt_of(std::uint64_t family, std::uint64_t n) {
  std::vector<TokenId> v;
  for (std::uint64_t i = 0; i < n; ++i) v.push_back(family_token(family, i));
  return v;
}
inline std::string salt_of(std::uint8_t s) {
  return s % 2 == 0 ? std::string() : std::string("tenant-b");
}

struct Op {
  OpKind kind = OpKind::get_sequence;
  std::uint64_t seq = 0;   // the sequence (src for fork)
  std::uint64_t seq2 = 0;  // fork dst
  std::uint64_t n = 0;     // tokens; sink; strategy levels / sink
  std::uint64_t m = 0;     // window; strategy window
  std::uint32_t priority = 0;
  std::uint8_t strategy = 0;         // EvictionStrategy::Kind as a number (taken mod 5)
  double x = 0.0;                    // thresholds
  std::vector<std::uint64_t> ids{};  // fork_many destinations; free_many's ids
};

/// Affinity shifts the model configs use (CacheConfig::affinity_shift): 0 = hashed placement.
inline constexpr unsigned kTestAffinityShifts[] = {0, 1, 2};

/// Sequence ids for tests: pairs that land in the same shard of PagedKvCache (so per-shard
/// structures hold several sequences) and pairs in different shards, under every placement in
/// kTestAffinityShifts. Entry 2k and 2k+1 share a shard; different k are different shards.
inline const std::vector<std::uint64_t>& test_ids() {
  static const std::vector<std::uint64_t> ids = [] {
    // The library's own placement, one tiny cache per shift.
    std::vector<std::unique_ptr<PagedKvCache>> caches;
    for (unsigned s : kTestAffinityShifts) {
      PagedKvCache::Options o;
      o.affinity_shift = s;
      caches.push_back(std::make_unique<PagedKvCache>(1, 1, 1, 1, o));
    }
    auto shards = [&](std::uint64_t id) {
      std::vector<std::size_t> v;
      for (const auto& c : caches) v.push_back(c->shard_index(SeqId{id}));
      return v;
    };
    std::vector<std::uint64_t> out;
    std::vector<std::vector<std::size_t>> used;  // the shards of each pair, per placement
    auto clashes = [&](const std::vector<std::size_t>& sh) {
      for (const auto& u : used)
        for (std::size_t p = 0; p < sh.size(); ++p)
          if (u[p] == sh[p]) return true;
      return false;
    };
    for (std::uint64_t a = 1; out.size() < 8; ++a) {
      const std::vector<std::size_t> sa = shards(a);
      if (clashes(sa)) continue;
      std::uint64_t b = a + 1;
      while (shards(b) != sa) ++b;
      used.push_back(sa);
      out.push_back(a);
      out.push_back(b);
    }
    return out;
  }();
  return ids;
}

inline EvictionStrategy make_strategy(std::uint8_t kind, std::uint64_t a, std::uint64_t b) {
  switch (kind % 5) {
    case 0:
      return EvictionStrategy::lru();
    case 1:
      return EvictionStrategy::lfu();
    case 2:
      return EvictionStrategy::longest_first();
    case 3:
      return EvictionStrategy::priority(static_cast<std::uint32_t>(a));
    default:
      return EvictionStrategy::streaming_llm(a, b);
  }
}

inline std::ostream& operator<<(std::ostream& os, const Op& op) {
  switch (op.kind) {
    case OpKind::allocate:
      return os << "allocate(S" << op.seq << ", " << op.n << ")";
    case OpKind::append:
      return os << "append(S" << op.seq << ", " << op.n << ")";
    case OpKind::fork:
      return os << "fork(S" << op.seq << ", S" << op.seq2 << ")";
    case OpKind::free:
      return os << "free(S" << op.seq << ")";
    case OpKind::get_sequence:
      return os << "get_sequence(S" << op.seq << ")";
    case OpKind::sequence_ids:
      return os << "sequence_ids()";
    case OpKind::select_target:
      return os << "select_eviction_target()";
    case OpKind::evict:
      return os << "evict()";
    case OpKind::evict_to_threshold:
      return os << "evict_to_threshold(" << op.x << ")";
    case OpKind::streaming:
      return os << "apply_streaming_llm(S" << op.seq << ", " << op.n << ", " << op.m << ")";
    case OpKind::set_priority:
      return os << "set_priority(S" << op.seq << ", " << op.priority << ")";
    case OpKind::set_strategy:
      return os << "set_eviction_strategy(" << strategy_name(make_strategy(op.strategy, op.n, op.m))
                << ")";
    case OpKind::set_threshold:
      return os << "set_eviction_threshold(" << op.x << ")";
    case OpKind::display:
      return os << "operator<<";
    case OpKind::pin:
      return os << "pin(S" << op.seq << ")";
    case OpKind::unpin:
      return os << "unpin(S" << op.seq << ")";
    case OpKind::copy_done:
      return os << "copy_done(S" << op.seq << ")";
    case OpKind::append_batch:
      return os << "append_batch({S" << op.seq << ", S" << op.seq2 << ", S" << op.seq << "}, "
                << op.n << ")";
    case OpKind::fork_many:
    case OpKind::free_many: {
      os << (op.kind == OpKind::fork_many ? "fork_many(S" + std::to_string(op.seq) + ", {"
                                          : std::string("free_many({"));
      for (std::size_t i = 0; i < op.ids.size(); ++i) os << (i ? ", S" : "S") << op.ids[i];
      return os << "})";
    }
    case OpKind::truncate:
      return os << "truncate(S" << op.seq << ", " << op.n << ")";
    case OpKind::allocate_tokens:
      return os << "allocate(S" << op.seq << ", prompt_of(" << op.m << ", " << op.n << "), \""
                << salt_of(op.strategy) << "\")";
    case OpKind::append_tokens:
      return os << "append(S" << op.seq << ", " << op.n << " ids of family " << op.m << ")";
    case OpKind::commit:
      return os << "commit(S" << op.seq << ", " << op.n << ")";
    case OpKind::match_prefix:
      return os << "match_prefix(prompt_of(" << op.m << ", " << op.n << "), \""
                << salt_of(op.strategy) << "\")";
    case OpKind::reset_prefix:
      return os << "reset_prefix_cache()";
    case OpKind::append_batch_tokens:
      return os << "append_batch({S" << op.seq << ", S" << op.seq2 << ", S" << op.seq
                << "}, ids of family " << op.m << (op.n % 7 == 6 ? ", 2 ids" : "") << ")";
  }
  return os << "?";
}

inline std::string to_string(const Op& op) {
  std::ostringstream os;
  os << op;
  return os.str();
}

}  // namespace pkv::model
