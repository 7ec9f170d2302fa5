// sim/verifier.hpp — --verify: a host KV arena of token cookies (tests/support/kv_arena.hpp),
// written through the block tables the cache reports and read back at every full sample.
//
// Protocol (what keeps another worker from freeing a block while its owner writes it)
//   On a cache with pin / copy_done (pkv::PagedKvCache, created with
//   Options::hold_copy_sources = true under --verify): after each call that adds tokens the
//   owner pins the sequence, performs the CopyOp on the arena and calls copy_done, writes the new
//   tokens' cookies, and unpins. evict() never picks a pinned sequence, and the copy source stays
//   held by the sequence until copy_done, so eviction runs concurrently with every write. A
//   sequence evicted between the call and the pin is reported gone (its group is preempted).
//   On a cache without pins (the seed baseline) writers hold a gate shared around the call and
//   the writes, and evict() takes it exclusive.
//
// Threads
//   Workers write disjoint blocks (the protocol above); check() runs in the step barrier's
//   completion with every worker parked. Counters are written there only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "options.hpp"
#include "pkv/types.hpp"
#include "state.hpp"
#include "support/gate.hpp"
#include "support/kv_arena.hpp"

namespace pkv::sim::detail {

/// A cache that can pin sequences and hold copy-on-write sources (pkv; the seed baseline cannot).
template <class Cache>
concept PinningCache = requires(Cache& c, SeqId s) {
  {c.pin(s)};
  {c.unpin(s)};
  {c.copy_done(s)};
};

template <class Cache>
class Verifier {
 public:
  static constexpr bool kPins = PinningCache<Cache>;

  Verifier(const Options& o, Cache& cache)
      : on_(o.verify), bs_(o.block_size), cache_(cache), arena_(on_ ? o.blocks : 0, bs_) {}

  bool on() const noexcept { return on_; }

  /// Held by a writer around a call that adds tokens and its writes (caches without pins).
  std::shared_lock<test_support::Gate> writing() {
    return test_support::share_if(gate_, on_ && !kPins);
  }
  /// Held around evict() (caches without pins).
  std::unique_lock<test_support::Gate> evicting() {
    return test_support::exclude_if(gate_, on_ && !kPins);
  }

  enum class Written : std::uint8_t { ok, gone, fatal };

  /// After a successful call that gave `s` kept tokens [from, to) (their cookies already in
  /// s.cookies) and maybe a CopyOp: performs the copy and writes the cookies (see Protocol).
  /// gone: the sequence was evicted before the pin; fatal: c.error says why.
  Written written(Ctx& c, const SeqState& s, std::uint32_t from, std::uint32_t to,
                  const std::optional<CopyOp>& copy) {
    if (!on_) return Written::ok;
    if constexpr (kPins) {
      if (auto p = cache_.pin(s.id); !p) {
        if (p.error().code() == Errc::sequence_not_found) return Written::gone;
        c.error = "--verify: pin(" + to_string(s.id) + "): " + p.error().message();
        return Written::fatal;
      }
    }
    Written w = Written::ok;
    if (copy) {
      arena_.copy(*copy);  // the source is held (hold_copy_sources) or the gate is: all of it
      if constexpr (kPins) {
        if (auto d = cache_.copy_done(s.id); !d) {
          c.error = "--verify: copy_done(" + to_string(s.id) + "): " + d.error().message();
          w = Written::fatal;
        }
      }
    }
    if (w == Written::ok && !write(c, s, from, to)) w = Written::fatal;
    if constexpr (kPins) {
      if (auto u = cache_.unpin(s.id); !u && w == Written::ok) {
        c.error = "--verify: " + to_string(s.id) + " vanished while pinned: " + u.error().message();
        w = Written::fatal;
      }
    }
    return w;
  }

  /// Reads `s` back through `info`; false (and `error` set) on the first wrong token.
  bool check(const SeqState& s, const SequenceInfo& info, std::string& error) {
    ++sequences_checked_;
    if (info.num_tokens != s.kept) {
      error = to_string(s.id) + " holds " + std::to_string(info.num_tokens) +
              " tokens, the simulator expects " + std::to_string(s.kept);
      return false;
    }
    for (std::uint32_t i = 0; i < s.kept; ++i) {
      const std::uint64_t* cell = arena_.token(info, i);
      if (cell == nullptr) {
        error = "token " + std::to_string(i) + " of " + to_string(s.id) +
                " maps beyond its block table";
        return false;
      }
      ++tokens_checked_;
      if (*cell != s.cookies[i]) {
        const std::uint64_t slot = info.slot_of(i);
        error = "token " + std::to_string(i) + " of " + to_string(s.id) + " (slot " +
                std::to_string(slot) + " in " + to_string(info.block_ids[slot / bs_]) +
                ") holds another token's data: copy-on-write or block accounting is broken";
        return false;
      }
    }
    return true;
  }

  std::uint64_t sequences_checked() const noexcept { return sequences_checked_; }
  std::uint64_t tokens_checked() const noexcept { return tokens_checked_; }

 private:
  /// Writes the cookies of kept tokens [from, to) of `s` through its current block table.
  bool write(Ctx& c, const SeqState& s, std::uint32_t from, std::uint32_t to) {
    if (from >= to) return true;
    auto info = cache_.get_sequence(s.id);
    if (!info) {
      c.error = "--verify: " + to_string(s.id) + " vanished while its owner was writing it";
      return false;
    }
    for (std::uint32_t i = from; i < to; ++i) {
      std::uint64_t* cell = arena_.token(*info, i);
      if (cell == nullptr) {
        c.error = "--verify: token " + std::to_string(i) + " of " + to_string(s.id) +
                  " maps to slot " + std::to_string(info->slot_of(i)) + " beyond its " +
                  std::to_string(info->block_ids.size()) + " blocks";
        return false;
      }
      *cell = s.cookies[i];
    }
    return true;
  }

  const bool on_;
  const std::size_t bs_;
  Cache& cache_;
  test_support::Gate gate_;
  test_support::KvArena<std::uint64_t> arena_;  // one cookie per token slot
  std::uint64_t sequences_checked_ = 0;
  std::uint64_t tokens_checked_ = 0;
};

}  // namespace pkv::sim::detail
