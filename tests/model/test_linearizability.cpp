// Linearizability checking of PagedKvCache against the sequential ReferenceModel.
//
// Each history: a tiny cache (3..6 blocks of 1..3 tokens, magazines on or off, shards by hash or
// by owner bits: affinity_shift 0, 1 or 2, under which ids 1 and 2 still share a shard), a short
// sequential setup applied to both cache and model, then 3 threads x 4 calls (allocate / append /
// fork / free / evict / get_sequence / pin / unpin on 3 sequence ids; in a quarter of the threads
// two consecutive appends are one append_batch, checked as two appends in order inside the batch
// call's interval; the *_fork_many_free_many_truncate tests add fork_many and truncate calls, one
// step each, and free_many of two ids, checked as two frees in order inside its interval;
// the *_prefix_caching test: allocate and append with token ids, commit and match_prefix on
// prompts that share blocks, among count-form allocates and appends that reclaim cached blocks,
// after a setup that usually leaves a committed prompt cached; see lookup_miss below)
// started together. Every call's invocation
// and response are stamped from one global atomic counter (seq_cst RMWs: their order is a total
// order that agrees with real time). A Wing-Gong search then looks for a sequential order of the 12
// calls that
//   * respects real time (a call that returned before another was invoked comes first), and
//   * makes the model return, for every call, what the cache returned,
// comparing results abstractly: outcome, error code and text (out_of_memory: requested count
// only, as "available" is a snapshot), CopyOp presence, the evicted id, and for get_sequence the
// token count, block count, LFU count and priority, the cached-token counts of allocate(tokens)
// and match_prefix and commit's published count. Block ids and clock values are not compared.
// Prefix-caching histories also compare, at the end of the linearization, the quiescent cache's
// free / cached / reclaimable block counts and prefix_stats() with the model's, and then
// reset_prefix_cache on both. Searches are memoised on (calls done, model fingerprint).
//
// Multi-threaded (mt_). Each test runs PKV_LIN_HISTORIES histories (default 3000) or stops after
// PKV_LIN_SECONDS (default 3); histories per second and how many had overlapping calls are printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <latch>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "harness.hpp"
#include "pkv/paged_kv_cache.hpp"
#include "reference_model.hpp"
#include "support/sanitizers.hpp"

namespace {

using pkv::Errc;
using pkv::EvictionStrategy;
using pkv::PagedKvCache;
using pkv::SeqId;
using pkv::model::ReferenceModel;

constexpr int kThreads = 3;
constexpr int kOpsPerThread = 4;
constexpr int kOps = kThreads * kOpsPerThread;
// Spins before yielding: at the start rendezvous (long: the threads must be on CPUs together for
// their calls to overlap) and between histories (short: the checking thread needs a CPU).
constexpr unsigned kStartSpins = 20'000;
constexpr unsigned kIdleSpins = 2'000;
constexpr std::uint32_t kMaxJitter = 24;  // pauses before each call, fixed per thread and history

enum class Kind : std::uint8_t {
  allocate,
  append,
  fork,
  free,
  evict,
  get,
  pin,
  unpin,
  fork_many,  // fork_many(seq, ids): one atomic step
  truncate,   // truncate(seq, n): one atomic step
  // Prefix caching (the *_prefix_caching tests): prompts prompt_of(family, n) under
  // salt_of(salt) (tests/model/ops.hpp), so that families 0 and 1 share whole prompts and 2 and 3
  // their first 4 tokens.
  alloc_tokens,   // allocate(seq, prompt, salt) -> cached tokens
  commit,         // commit(seq, n) -> blocks published
  append_tokens,  // append(seq, n ids: family_token(family, start + i))
  match,          // match_prefix(prompt, salt) -> cached tokens
};

struct Call {
  Kind kind = Kind::get;
  std::uint64_t seq = 0;
  std::uint64_t seq2 = 0;
  std::uint64_t n = 0;
  // An append that is an item of append_batch: 1 = the first of a two-item batch, 2 = the
  // second (the next and the previous event of the same thread; the same n). The checker
  // treats each item as an append of its own whose linearization point lies inside the batch
  // call's interval, the items in order: what the contract says append_batch is.
  // A free that is an item of free_many (the same: 1 = first of two items, 2 = second), checked
  // as its items in order inside the call's interval.
  std::uint8_t batch = 0;
  std::vector<std::uint64_t> ids{};  // fork_many's destinations
  std::uint64_t family = 0;          // prefix calls: the prompt family (ops.hpp prompt_of)
  std::uint64_t start = 0;           // append_tokens: position of its first id in the family
  std::uint8_t salt = 0;             // prefix calls: salt_of(salt)
};

// The token ids a prefix call passes.
std::vector<pkv::TokenId> tokens_of(const Call& c) {
  if (c.kind != Kind::append_tokens) return pkv::model::prompt_of(c.family, c.n);
  std::vector<pkv::TokenId> v;
  for (std::uint64_t i = 0; i < c.n; ++i)
    v.push_back(pkv::model::family_token(c.family, c.start + i));
  return v;
}

std::string to_string(const Call& c) {
  switch (c.kind) {
    case Kind::allocate:
      return "allocate(S" + std::to_string(c.seq) + ", " + std::to_string(c.n) + ")";
    case Kind::append:
      return (c.batch == 0   ? "append(S"
              : c.batch == 1 ? "append_batch[0](S"
                             : "append_batch[1](S") +
             std::to_string(c.seq) + ", " + std::to_string(c.n) + ")";
    case Kind::fork:
      return "fork(S" + std::to_string(c.seq) + ", S" + std::to_string(c.seq2) + ")";
    case Kind::free:
      return (c.batch == 0   ? "free(S"
              : c.batch == 1 ? "free_many[0](S"
                             : "free_many[1](S") +
             std::to_string(c.seq) + ")";
    case Kind::fork_many: {
      std::string out = "fork_many(S" + std::to_string(c.seq) + ", {";
      for (std::size_t i = 0; i < c.ids.size(); ++i)
        out += (i ? ", S" : "S") + std::to_string(c.ids[i]);
      return out + "})";
    }
    case Kind::truncate:
      return "truncate(S" + std::to_string(c.seq) + ", " + std::to_string(c.n) + ")";
    case Kind::evict:
      return "evict()";
    case Kind::get:
      return "get_sequence(S" + std::to_string(c.seq) + ")";
    case Kind::pin:
      return "pin(S" + std::to_string(c.seq) + ")";
    case Kind::unpin:
      return "unpin(S" + std::to_string(c.seq) + ")";
    case Kind::alloc_tokens:
    case Kind::match:
      return (c.kind == Kind::match ? "match_prefix("
                                    : "allocate(S" + std::to_string(c.seq) + ", ") +
             "prompt_of(" + std::to_string(c.family) + ", " + std::to_string(c.n) + "), \"" +
             pkv::model::salt_of(c.salt) + "\")";
    case Kind::commit:
      return "commit(S" + std::to_string(c.seq) + ", " + std::to_string(c.n) + ")";
    case Kind::append_tokens:
      return "append(S" + std::to_string(c.seq) + ", ids of family " + std::to_string(c.family) +
             " at " + std::to_string(c.start) + ".." + std::to_string(c.start + c.n) + ")";
  }
  return "?";
}

// An abstract result: what must agree between the cache and the model.
struct Outcome {
  bool ok = false;
  Errc code = Errc::invalid_argument;
  std::string message;  // out_of_memory: cut before ", N available"
  bool copy = false;
  std::uint64_t victim = 0;
  bool found = false;
  std::uint64_t tokens = 0, blocks = 0, access_count = 0;
  std::uint32_t priority = 0;
  std::uint64_t released = 0;  // truncate: blocks that left the table
  std::uint64_t count = 0;     // allocate(tokens) / match_prefix: cached tokens; commit: published
};

// (Spelled out: clang 14 crashes on a defaulted comparison here.)
bool operator==(const Outcome& a, const Outcome& b) {
  return a.ok == b.ok && a.code == b.code && a.message == b.message && a.copy == b.copy &&
         a.victim == b.victim && a.found == b.found && a.tokens == b.tokens &&
         a.blocks == b.blocks && a.access_count == b.access_count && a.priority == b.priority &&
         a.released == b.released && a.count == b.count;
}

std::string to_string(const Outcome& o, Kind k) {
  if (k == Kind::get) {
    if (!o.found) return "none";
    return "{tokens=" + std::to_string(o.tokens) + ", blocks=" + std::to_string(o.blocks) +
           ", access_count=" + std::to_string(o.access_count) + "}";
  }
  if (k == Kind::match) return std::to_string(o.count);
  if (!o.ok) return "\"" + o.message + "\"";
  if (k == Kind::append || k == Kind::append_tokens) return o.copy ? "ok+CopyOp" : "ok";
  if (k == Kind::alloc_tokens) return "ok, " + std::to_string(o.count) + " cached";
  if (k == Kind::commit) return "ok, " + std::to_string(o.count) + " published";
  if (k == Kind::evict) return "S" + std::to_string(o.victim);
  if (k == Kind::truncate) return "ok, " + std::to_string(o.released) + " blocks released";
  return "ok";
}

Outcome from_error(const pkv::Error& e) {
  Outcome o;
  o.code = e.code();
  o.message = e.message();
  if (e.code() == Errc::out_of_memory) o.message = o.message.substr(0, o.message.find(" blocks,"));
  // invalid_argument texts are fixed only up to their prefix (same_error in reference_model.hpp).
  if (e.code() == Errc::invalid_argument && o.message.rfind("Invalid argument: ", 0) == 0)
    o.message = "Invalid argument: ";
  return o;
}

Outcome from_append(const pkv::Result<std::optional<pkv::CopyOp>>& r) {
  if (!r) return from_error(r.error());
  Outcome o;
  o.ok = true;
  o.copy = r.value().has_value();
  return o;
}

// allocate(tokens) / commit: the count in Outcome::count.
Outcome from_count(const pkv::Result<std::size_t>& r) {
  if (!r) return from_error(r.error());
  Outcome o;
  o.ok = true;
  o.count = r.value();
  return o;
}

template <class Cache>
Outcome perform(Cache& c, const Call& call) {
  Outcome o;
  switch (call.kind) {
    case Kind::allocate: {
      auto r = c.allocate(SeqId{call.seq}, call.n);
      if (!r) return from_error(r.error());
      o.ok = true;
      return o;
    }
    case Kind::append:
      return from_append(c.append(SeqId{call.seq}, call.n));
    case Kind::fork: {
      auto r = c.fork(SeqId{call.seq}, SeqId{call.seq2});
      if (!r) return from_error(r.error());
      o.ok = true;
      return o;
    }
    case Kind::free: {
      auto r = c.free(SeqId{call.seq});
      if (!r) return from_error(r.error());
      o.ok = true;
      return o;
    }
    case Kind::evict: {
      auto r = c.evict();
      if (!r) return from_error(r.error());
      o.ok = true;
      o.victim = r.value().value;
      return o;
    }
    case Kind::fork_many: {
      std::vector<SeqId> dsts;
      for (std::uint64_t d : call.ids) dsts.push_back(SeqId{d});
      auto r = c.fork_many(SeqId{call.seq}, dsts);
      if (!r) return from_error(r.error());
      o.ok = true;
      return o;
    }
    case Kind::truncate: {
      auto r = c.truncate(SeqId{call.seq}, call.n);
      if (!r) return from_error(r.error());
      o.ok = true;
      o.released = r.value();
      return o;
    }
    case Kind::pin: {
      auto r = c.pin(SeqId{call.seq});
      if (!r) return from_error(r.error());
      o.ok = true;
      return o;
    }
    case Kind::unpin: {
      auto r = c.unpin(SeqId{call.seq});
      if (!r) return from_error(r.error());
      o.ok = true;
      return o;
    }
    case Kind::alloc_tokens:
      return from_count(
          c.allocate(SeqId{call.seq}, tokens_of(call), pkv::model::salt_of(call.salt)));
    case Kind::commit:
      return from_count(c.commit(SeqId{call.seq}, call.n));
    case Kind::append_tokens:
      return from_append(c.append(SeqId{call.seq}, tokens_of(call)));
    case Kind::match:
      o.ok = true;
      o.count = c.match_prefix(tokens_of(call), pkv::model::salt_of(call.salt));
      return o;
    case Kind::get: {
      o.ok = true;
      auto info = c.get_sequence(SeqId{call.seq});
      if (!info) return o;
      o.found = true;
      o.tokens = info->num_tokens;
      o.blocks = info->block_ids.size();
      o.access_count = info->access_count;
      o.priority = info->priority;
      return o;
    }
  }
  return o;
}

struct Event {
  Call call;
  Outcome outcome;
  std::uint64_t invoke = 0, response = 0;
};

// What a quiescent cache reports about its prefix cache (compared exactly: no call in flight).
struct Quiescent {
  std::uint64_t free = 0, cached = 0, reclaimable = 0;
  pkv::PrefixCacheStats stats{};
};

template <class Cache>
Quiescent quiescent_figures(const Cache& c) {
  Quiescent q;
  q.free = c.free_block_count();
  q.cached = c.cached_block_count();
  q.reclaimable = c.reclaimable_block_count();
  q.stats = c.prefix_stats();
  q.stats.verify_failures = 0;  // not modelled (no digest collisions here)
  return q;
}

bool operator==(const Quiescent& a, const Quiescent& b) {
  return a.free == b.free && a.cached == b.cached && a.reclaimable == b.reclaimable &&
         a.stats.requests == b.stats.requests && a.stats.queries == b.stats.queries &&
         a.stats.hits == b.stats.hits && a.stats.published == b.stats.published &&
         a.stats.reclaimed == b.stats.reclaimed;
}

std::string to_string(const Quiescent& q) {
  return "{free=" + std::to_string(q.free) + ", cached=" + std::to_string(q.cached) +
         ", reclaimable=" + std::to_string(q.reclaimable) +
         ", requests=" + std::to_string(q.stats.requests) +
         ", queries=" + std::to_string(q.stats.queries) + ", hits=" + std::to_string(q.stats.hits) +
         ", published=" + std::to_string(q.stats.published) +
         ", reclaimed=" + std::to_string(q.stats.reclaimed) + "}";
}

struct History {
  std::uint64_t seed = 0;
  std::uint64_t blocks = 0, block_size = 0;
  std::uint32_t magazine = 0;
  unsigned affinity_shift = 0;  // PagedKvCache::Options::affinity_shift (kTestAffinityShifts)
  EvictionStrategy strategy;
  std::vector<Call> setup;
  std::vector<std::uint32_t> setup_priority;  // priority per id 1..3 set after setup
  std::array<std::array<Event, kOpsPerThread>, kThreads> events;
  std::array<std::uint32_t, kThreads> jitter = {0, 0, 0};
  // Prefix-caching histories: the cache's figures once every thread is done (quiescent, so
  // exact), which the model must reach at the end of the linearization.
  bool prefix = false;
  Quiescent final{};
};

// ---- Wing-Gong search ----------------------------------------------------------------------

// Deviations from strict linearizability that src/paged_kv_cache.cpp shows (the
// DISABLED_mt_strict_* tests below reproduce them in a few hundred histories). A tolerant search
// accepts exactly these and nothing else, so that every other kind of disagreement still fails the
// test:
//   spurious_oom   free()/evict() (and append's copy-on-write without hold_copy_sources) remove
//                  the sequence (or the table entry) under the shard lock but return the blocks
//                  to the pool after unlocking; a call that sees the sequence gone can still get
//                  out_of_memory for want of those blocks. Accepted for an allocate/append that
//                  overlaps a free/evict/append of another thread (the cache then changed
//                  nothing, so neither does the model). Not covered by the header's notes. With
//                  prefix caching also an overlapping allocate (either form): its slow path
//                  takes the plain blocks first and reclaims cached ones after, so a racing
//                  allocation can see the plain blocks gone while the blocks that call will
//                  reclaim are still findable, and fail where every sequential order succeeds or
//                  asks for more (history seed 8001941); the header's prefix paragraph says
//                  no-stranding is exact only when no other call is in flight.
//   double_cow     append() drops its reference to the copy-on-write source after unlocking, so
//                  two sharers appending at once can both see the block shared and both copy; in
//                  any sequential order the second would find it private and write in place.
//                  Accepted (the model appends in place: the same tokens and block count, the
//                  extra copy is the only difference) when another thread's append, free or
//                  evict overlaps it. (The implementation's comment says so; the header does not.)
//   empty_evict    evict() reads the shards' published heads one by one, so it can answer "No
//                  sequences to evict" although some evictable sequence existed at every instant
//                  of the call. Accepted when another thread's allocate/fork/free/evict/pin/unpin
//                  overlaps it.
//   stale_victim   under concurrency evict() takes "the best head of a shard that looked best
//                  during the scan" (the header's note), not necessarily the global best at any
//                  one instant. Accepted (the model evicts that sequence) when another thread's
//                  call that changes sequences, keys or pins overlaps it.
//   stamp_order    allocate / append / fork take the sequence's recency stamp at one point and its
//                  blocks at another (the header says so), so two such calls that overlap each
//                  other may be ordered one way by their effect on free blocks and the other way
//                  by recency. Accepted for an evict whose victim exists and was stamped by a
//                  successful call that overlapped the model's victim's stamping call. (Found
//                  under ASan timing in CI: allocate(S2) took its blocks before, and its stamp
//                  after, an overlapping allocate(S1); evict then chose S1.) append_batch stamps
//                  all its items when it starts, so each item counts here as a stamping call over
//                  the whole batch's interval (the header says so too).
//   The calls of issue 13 join these as the calls they consist of: fork_many stamps each of its
//   destinations (a fork each), free_many's items are frees, and truncate releases blocks as
//   free does (so it may leave a spurious out_of_memory or a double copy-on-write behind it, and
//   it changes LongestFirst's key).
//   Prefix caching's calls join them as the calls they contain: allocate(tokens) takes blocks as
//   allocate does (spurious_oom, stamps) and append(tokens) is an append (spurious_oom,
//   double_cow, stamps). One tolerance of their own, which the header's "Prefix caching /
//   Concurrency" paragraph allows in so many words:
//   lookup_miss    "A lookup racing with a publish or reclaim on the same index shard may miss":
//                  allocate(tokens) and match_prefix may report fewer cached tokens than the
//                  model finds, when another thread's call that publishes (commit,
//                  append(tokens)) or may reclaim (every call that takes blocks: allocate and
//                  append in both forms) overlaps it. (Which index shard a key falls in is not
//                  checked: that is a little weaker than the header.) The model then allocates
//                  with the hit blocks cut to what the cache reported. Never more cached tokens
//                  than the model finds: a hit on a block that is not findable in any
//                  linearization (reclaimed, unpublished, another salt) is a wrong hit.
//   early_reclaim  a call that takes blocks (allocate and append, both forms) may reclaim some of
//                  the least recently released reclaimable blocks (their hashes forgotten) that
//                  no sequential order would reclaim: src/cache/blocks.cpp checks "plain free +
//                  reclaimable >= k", then takes plain blocks and reclaims, one block at a time,
//                  while other calls take and release blocks one at a time too. So (a) a failed
//                  call (out_of_memory) may have reclaimed blocks and given them back as plain
//                  free ones (another thread took the blocks it counted on; seed 8001661), and
//                  (b) a successful one may reclaim where plain blocks that an overlapping free
//                  was returning one by one would have done (seed 8002109). The model forgets
//                  the j oldest reclaimable blocks (j >= 1; they become plain free) and then
//                  performs the call, which must then return exactly what the cache returned.
//                  Accepted when another thread's call that takes or releases blocks overlaps
//                  it. The header's prefix-caching paragraph states this (found by this test):
//                  a cached prefix can be lost early, no hit returns wrong content.
//   Which of several findable blocks with one key a hit takes is not a tolerance: the header
//   allows duplicates per hash and does not say which one is found, so the model tries every
//   choice (they differ in which block is revived, hence in free blocks and reclaim order).
//   Every other prefix result is exact: commit's published count, the hit count with no
//   publish or reclaim in flight, and, at the end of the history (quiescent), the cache's
//   free / cached / reclaimable block counts and prefix_stats() against the model's state at the
//   end of the linearization.
enum Tolerance {
  kSpuriousOom,
  kEmptyEvict,
  kStaleVictim,
  kDoubleCow,
  kStampOrder,
  kLookupMiss,
  kEarlyReclaim,
  kTolerances
};

struct Checker {
  const History& h;
  bool tolerate = false;
  std::unordered_set<std::uint64_t> dead;  // hash of (done mask, model fingerprint) known to fail
  std::uint64_t nodes = 0;
  std::array<int, kTolerances> used{};  // tolerances on the linearization found

  Checker(const History& history, bool tolerant) : h(history), tolerate(tolerant) {}

  static std::uint64_t key(std::uint32_t mask, std::uint64_t fp) {
    return fp * 0x9e3779b97f4a7c15ULL ^ (static_cast<std::uint64_t>(mask) << 1 | 1);
  }

  // Does another thread's call of one of `kinds` overlap e in real time?
  bool overlapped_by(int t, const Event& e, std::initializer_list<Kind> kinds) const {
    for (int u = 0; u < kThreads; ++u) {
      if (u == t) continue;
      for (const Event& f : h.events[u]) {
        if (!(f.invoke < e.response && e.invoke < f.response)) continue;
        for (Kind k : kinds)
          if (f.call.kind == k) return true;
      }
    }
    return false;
  }

  // Did successful stamping calls of sequences a and b (allocate, append, fork onto) overlap?
  bool stamps_overlap(std::uint64_t a, std::uint64_t b) const {
    auto stamps = [](const Event& f, std::uint64_t x) {
      if (!f.outcome.ok) return false;
      switch (f.call.kind) {
        case Kind::allocate:
        case Kind::append:
        case Kind::alloc_tokens:
        case Kind::append_tokens:
          return f.call.seq == x;
        case Kind::fork:
          return f.call.seq2 == x;
        case Kind::fork_many:
          return std::find(f.call.ids.begin(), f.call.ids.end(), x) != f.call.ids.end();
        default:
          return false;
      }
    };
    for (int t = 0; t < kThreads; ++t)
      for (const Event& f : h.events[t]) {
        if (!stamps(f, a)) continue;
        for (int u = 0; u < kThreads; ++u) {
          if (u == t) continue;
          for (const Event& g : h.events[u])
            if (stamps(g, b) && f.invoke < g.response && g.invoke < f.response) return true;
        }
      }
    return false;
  }

  // The tolerance that explains real outcome `e` where the model said `mo`, or -1; sets *next.
  int tolerated(int t, const ReferenceModel& m, const Event& e, const Outcome& mo,
                ReferenceModel* next) const {
    const Outcome& ro = e.outcome;
    if (!ro.ok && ro.code == Errc::out_of_memory &&
        (e.call.kind == Kind::allocate || e.call.kind == Kind::append ||
         e.call.kind == Kind::alloc_tokens || e.call.kind == Kind::append_tokens) &&
        (mo.ok || mo.code == Errc::out_of_memory) &&
        overlapped_by(t, e,
                      {Kind::free, Kind::evict, Kind::append, Kind::truncate, Kind::append_tokens,
                       Kind::alloc_tokens, Kind::allocate})) {
      *next = m;
      return kSpuriousOom;
    }
    if (e.call.kind == Kind::evict && !ro.ok && ro.code == Errc::invalid_operation &&
        m.num_sequences() > 0 &&
        overlapped_by(t, e,
                      {Kind::allocate, Kind::alloc_tokens, Kind::fork, Kind::fork_many, Kind::free,
                       Kind::evict, Kind::pin, Kind::unpin})) {
      *next = m;
      return kEmptyEvict;
    }
    if ((e.call.kind == Kind::append || e.call.kind == Kind::append_tokens) && ro.ok && ro.copy &&
        mo.ok && !mo.copy &&
        overlapped_by(
            t, e, {Kind::append, Kind::append_tokens, Kind::free, Kind::evict, Kind::truncate})) {
      return kDoubleCow;  // *next already holds the model's in-place append
    }
    if (e.call.kind == Kind::evict && ro.ok && m.find(SeqId{ro.victim}) != nullptr &&
        overlapped_by(t, e,
                      {Kind::allocate, Kind::append, Kind::alloc_tokens, Kind::append_tokens,
                       Kind::fork, Kind::fork_many, Kind::free, Kind::evict, Kind::truncate})) {
      *next = m;
      (void)next->evict_sequence(SeqId{ro.victim});
      return kStaleVictim;
    }
    if (e.call.kind == Kind::evict && ro.ok && mo.ok && m.find(SeqId{ro.victim}) != nullptr &&
        stamps_overlap(ro.victim, mo.victim)) {
      *next = m;
      (void)next->evict_sequence(SeqId{ro.victim});
      return kStampOrder;
    }
    return -1;
  }

  // A result the model may give for a call, the state it leaves, and the tolerance it needs
  // (-1: none).
  struct Option {
    Outcome outcome;
    ReferenceModel next;
    int tolerance = -1;
  };

  // Every result the model may give for `call` from state m (see lookup_miss above): for
  // allocate(tokens), one per choice among duplicate findable blocks and, when `miss_ok`, one per
  // shorter hit; for match_prefix with `miss_ok`, every shorter count; otherwise the one result.
  static std::vector<Option> options(const ReferenceModel& m, const Call& call, bool miss_ok) {
    std::vector<Option> out;
    if (call.kind == Kind::match) {
      Option o{Outcome{}, m, -1};
      o.outcome.ok = true;
      o.outcome.count = m.match_prefix(tokens_of(call), pkv::model::salt_of(call.salt));
      const std::uint64_t found = o.outcome.count;
      out.push_back(o);
      if (miss_ok)
        for (std::uint64_t k = 0; k < found; k += m.block_size()) {
          o.outcome.count = k;
          o.tolerance = kLookupMiss;
          out.push_back(o);
        }
      return out;
    }
    if (call.kind != Kind::alloc_tokens) {
      ReferenceModel next = m;
      const Outcome mo = perform(next, call);
      out.push_back(Option{mo, std::move(next), -1});
      return out;
    }
    const std::vector<pkv::TokenId> prompt = tokens_of(call);
    const std::string salt = pkv::model::salt_of(call.salt);
    // How many findable blocks each hit index has to choose from (choosing changes no key, so
    // these do not depend on earlier choices); their number is the hit length.
    std::vector<std::size_t> radix;
    {
      ReferenceModel probe = m;
      (void)probe.allocate(SeqId{call.seq}, prompt, salt,
                           [&](std::size_t i, const std::vector<std::uint32_t>& cand) {
                             if (radix.size() <= i) radix.resize(i + 1, 1);
                             radix[i] = cand.size();
                             return cand.front();
                           });
    }
    std::vector<std::uint64_t> seen;  // fingerprints of the states with each outcome so far
    for (std::size_t limit = radix.size() + 1; limit-- > 0;) {
      if (limit < radix.size() && !miss_ok) break;
      std::vector<std::size_t> pick(limit, 0);
      for (;;) {
        Option o{Outcome{}, m, limit < radix.size() ? kLookupMiss : -1};
        o.outcome = from_count(o.next.allocate(
            SeqId{call.seq}, prompt, salt,
            [&](std::size_t i, const std::vector<std::uint32_t>& cand) {
              return cand[i < pick.size() ? pick[i] : 0];
            },
            limit));
        const std::uint64_t fp = o.next.fingerprint() ^ (o.outcome.count << 1 | o.outcome.ok) ^
                                 std::hash<std::string>{}(o.outcome.message) * 31;
        if (std::find(seen.begin(), seen.end(), fp) == seen.end()) {
          seen.push_back(fp);
          out.push_back(std::move(o));
        }
        // Next choice vector (mixed radix), or done.
        std::size_t d = 0;
        while (d < limit && ++pick[d] == radix[d]) pick[d++] = 0;
        if (d == limit) break;
      }
    }
    return out;
  }

  // May e's lookup miss (lookup_miss)? Another thread's publishing or block-taking call overlaps.
  bool miss_allowed(int t, const Event& e) const {
    return tolerate && (e.call.kind == Kind::alloc_tokens || e.call.kind == Kind::match) &&
           overlapped_by(t, e,
                         {Kind::commit, Kind::append_tokens, Kind::alloc_tokens, Kind::allocate,
                          Kind::append});
  }

  // May e have reclaimed cached blocks early (early_reclaim)?
  bool early_reclaim_allowed(int t, const Event& e) const {
    const std::initializer_list<Kind> takers = {Kind::allocate, Kind::alloc_tokens, Kind::append,
                                                Kind::append_tokens};
    return tolerate && std::find(takers.begin(), takers.end(), e.call.kind) != takers.end() &&
           (e.outcome.ok || e.outcome.code == Errc::out_of_memory) &&
           overlapped_by(t, e,
                         {Kind::allocate, Kind::alloc_tokens, Kind::append, Kind::append_tokens,
                          Kind::free, Kind::evict, Kind::truncate});
  }

  // The model's state at the end of the linearization found (prefix histories).
  std::optional<ReferenceModel> final_model;

  // pos[t]: how many calls of thread t are linearized already.
  bool search(const ReferenceModel& m, std::array<int, kThreads> pos, std::uint32_t mask) {
    ++nodes;
    if (mask == (1u << kOps) - 1) {
      if (!h.prefix) return true;
      if (!(quiescent_figures(m) == h.final)) return false;
      final_model = m;
      return true;
    }
    const std::uint64_t k = key(mask, m.fingerprint());
    if (dead.contains(k)) return false;
    for (int t = 0; t < kThreads; ++t) {
      if (pos[t] == kOpsPerThread) continue;
      const Event& e = h.events[t][pos[t]];
      // Minimal: no other pending call responded before this one was invoked.
      bool minimal = true;
      for (int u = 0; u < kThreads && minimal; ++u) {
        if (u == t || pos[u] == kOpsPerThread) continue;
        if (h.events[u][pos[u]].response < e.invoke) minimal = false;
      }
      if (!minimal) continue;
      std::vector<Option> opts = options(m, e.call, miss_allowed(t, e));
      for (Option& o : opts) {
        int tol = o.tolerance;
        if (!(o.outcome == e.outcome)) {
          if (!tolerate || tol >= 0) continue;
          tol = tolerated(t, m, e, o.outcome, &o.next);
          if (tol < 0) continue;
        }
        std::array<int, kThreads> p2 = pos;
        ++p2[t];
        if (search(o.next, p2, mask | 1u << (t * kOpsPerThread + pos[t]))) {
          if (tol >= 0) ++used[tol];
          return true;
        }
      }
      if (early_reclaim_allowed(t, e)) {
        for (std::size_t j = 1; j <= m.reclaimable_block_count(); ++j) {
          ReferenceModel pre = m;
          pre.forget_reclaimable(j);
          for (Option& o : options(pre, e.call, miss_allowed(t, e))) {
            // Both deviations at once are one event too: a call that reclaimed cached blocks and
            // then failed for want of blocks a racing call held (early_reclaim + spurious_oom;
            // history seed 8002205). The model's state is then `pre`: the j blocks forgotten.
            int tol = o.tolerance;
            if (!(o.outcome == e.outcome)) {
              if (tol >= 0) continue;
              tol = tolerated(t, pre, e, o.outcome, &o.next);
              if (tol < 0) continue;
            }
            std::array<int, kThreads> p2 = pos;
            ++p2[t];
            if (search(o.next, p2, mask | 1u << (t * kOpsPerThread + pos[t]))) {
              ++used[kEarlyReclaim];
              if (tol >= 0) ++used[tol];
              return true;
            }
          }
        }
      }
    }
    dead.insert(k);
    return false;
  }
};

std::string describe(const History& h) {
  std::ostringstream os;
  os << "history seed " << h.seed << ": " << h.blocks << " blocks x " << h.block_size
     << " tokens, magazine " << h.magazine << ", affinity_shift " << h.affinity_shift
     << ", strategy " << pkv::model::strategy_name(h.strategy) << "\n  setup:";
  for (const Call& c : h.setup) os << " " << to_string(c) << ";";
  os << " priorities of ids 1..3 = " << h.setup_priority[0] << "," << h.setup_priority[1] << ","
     << h.setup_priority[2] << "\n";
  for (int t = 0; t < kThreads; ++t) {
    os << "  thread " << t << ":";
    for (const Event& e : h.events[t])
      os << " [" << e.invoke << "," << e.response << "] " << to_string(e.call) << " -> "
         << to_string(e.outcome, e.call.kind) << ";";
    os << "\n";
  }
  if (h.prefix) os << "  quiescent at the end: " << to_string(h.final) << "\n";
  return os.str();
}

// ---- history generation ----------------------------------------------------------------------

// Ids "1..3" of a history: the first two share a shard, the third is in another.
std::uint64_t id_of(std::uint64_t k) {
  return pkv::model::test_ids()[k == 3 ? 2 : k - 1];
}

// new_calls: a quarter of the calls become fork_many / truncate (the histories of the tests
// without it are the ones they always were).
Call random_call(std::mt19937_64& rng, std::uint64_t block_size, bool new_calls = false) {
  auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  Call c;
  if (new_calls && pick(0, 3) == 0) {
    c.seq = id_of(pick(1, 3));
    if (pick(0, 1) == 0) {
      c.kind = Kind::fork_many;
      const std::uint64_t k = pick(0, 2);  // 0..2 destinations, maybe src or a repeat
      for (std::uint64_t i = 0; i < k; ++i) c.ids.push_back(id_of(pick(1, 3)));
    } else {
      c.kind = Kind::truncate;
      c.n = pick(0, 2 * block_size);
    }
    return c;
  }
  const std::uint64_t w = pick(0, 20);
  c.seq = id_of(pick(1, 3));
  if (w < 4) {
    c.kind = Kind::allocate;
    c.n = pick(0, 2 * block_size + 1);
  } else if (w < 9) {
    c.kind = Kind::append;
    c.n = pick(0, block_size + 1);
  } else if (w < 12) {
    c.kind = Kind::fork;
    c.seq2 = id_of(pick(1, 3));
  } else if (w < 14) {
    c.kind = Kind::free;
  } else if (w < 17) {
    c.kind = Kind::evict;
  } else if (w < 19) {
    c.kind = Kind::get;
  } else if (w < 20) {
    c.kind = Kind::pin;
  } else {
    c.kind = Kind::unpin;
  }
  return c;
}

EvictionStrategy strategy_for(int which, std::mt19937_64& rng) {
  switch (which < 0 ? static_cast<int>(rng() % 5) : which) {
    case 0:
      return EvictionStrategy::lru();
    case 1:
      return EvictionStrategy::lfu();
    case 2:
      return EvictionStrategy::longest_first();
    case 3:
      return EvictionStrategy::priority(3);
    default:
      return EvictionStrategy::streaming_llm(1, 2);
  }
}

// A history's cache: 3..6 blocks of 1..3 tokens, magazines, placement and strategy.
History history_cache(std::uint64_t seed, int strategy, std::mt19937_64& rng) {
  History h;
  h.seed = seed;
  h.blocks = 3 + rng() % 4;
  h.block_size = 1 + rng() % 3;
  static constexpr std::uint32_t kMag[] = {0, 1, 2, 32};
  h.magazine = kMag[rng() % 4];
  h.affinity_shift = pkv::model::kTestAffinityShifts[rng() % 3];
  h.strategy = strategy_for(strategy, rng);
  return h;
}

History make_history(std::uint64_t seed, int strategy, bool new_calls = false) {
  std::mt19937_64 rng(seed);
  History h = history_cache(seed, strategy, rng);
  const int setup = static_cast<int>(rng() % 4);
  for (int i = 0; i < setup; ++i) {
    Call c = random_call(rng, h.block_size);
    if (c.kind == Kind::evict || c.kind == Kind::free || c.kind == Kind::get) {
      c.kind = Kind::allocate;
      c.n = 1 + rng() % (h.block_size + 1);
    }
    h.setup.push_back(c);
  }
  for (int i = 0; i < 3; ++i) h.setup_priority.push_back(static_cast<std::uint32_t>(rng() % 3));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kOpsPerThread; ++i)
      h.events[t][i].call = random_call(rng, h.block_size, new_calls);
    // A decode step now and then: two consecutive calls become one append_batch of two items
    // (the ids may repeat; one token count for both).
    if (rng() % 4 == 0) {
      const int i = static_cast<int>(rng() % (kOpsPerThread - 1));
      Call& a = h.events[t][i].call;
      Call& b = h.events[t][i + 1].call;
      a.kind = b.kind = Kind::append;
      a.n = b.n = rng() % (h.block_size + 2);
      a.batch = 1;
      b.batch = 2;
    } else if (new_calls && rng() % 3 == 0) {
      // Beam losers: two consecutive calls become one free_many of two ids (may repeat).
      const int i = static_cast<int>(rng() % (kOpsPerThread - 1));
      Call& a = h.events[t][i].call;
      Call& b = h.events[t][i + 1].call;
      a = Call{Kind::free, id_of(1 + rng() % 3), 0, 0, 1, {}};
      b = Call{Kind::free, id_of(1 + rng() % 3), 0, 0, 2, {}};
    }
    h.jitter[t] = static_cast<std::uint32_t>(rng() % kMaxJitter);
  }
  return h;
}

// Prefix-caching histories: 60% token-id calls on prompts that share blocks, the rest the calls
// of the other tests (random_call with fork_many and truncate): count-form allocations and
// appends that take blocks (and so reclaim cached ones: the caches hold 3..6 blocks and a prompt
// needs up to 3), frees and evictions that make blocks reclaimable, forks that share cached
// blocks, truncates that cut into them.
Call random_prefix_call(std::mt19937_64& rng, std::uint64_t block_size) {
  auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  const std::uint64_t w = pick(0, 19);
  if (w >= 12) return random_call(rng, block_size, true);        // the other calls, truncate too
  static constexpr std::uint64_t kFamilies[] = {0, 0, 1, 2, 3};  // 0 and 1: the same prompt
  Call c;
  c.seq = id_of(pick(1, 3));
  c.family = kFamilies[pick(0, 4)];
  c.salt = pick(0, 4) == 0 ? 1 : 0;
  if (w < 5) {
    c.kind = Kind::alloc_tokens;
    c.n = pick(1, 2 * block_size + 1);
  } else if (w < 8) {
    c.kind = Kind::commit;
    c.n = pick(0, 2 * block_size + 1);
  } else if (w < 10) {
    c.kind = Kind::append_tokens;
    c.start = pick(1, 2 * block_size + 1);  // right when it is the sequence's length
    c.n = pick(0, block_size);
  } else {
    c.kind = Kind::match;
    c.n = pick(1, 2 * block_size + 1);
  }
  return c;
}

History make_prefix_history(std::uint64_t seed, int strategy) {
  std::mt19937_64 rng(seed);
  History h = history_cache(seed, strategy, rng);
  h.prefix = true;
  // Setup: usually a committed prompt or two (then freed half the time: reclaimable blocks that
  // the concurrent calls hit, revive or reclaim).
  for (std::uint64_t k = 1; k <= 2; ++k) {
    if (rng() % 3 == 0) continue;
    Call a;
    a.kind = Kind::alloc_tokens;
    a.seq = id_of(k);
    a.family = k == 1 ? 0 : 2 * (rng() % 2);
    a.n = h.block_size + 1 + rng() % h.block_size;
    h.setup.push_back(a);
    Call c = a;
    c.kind = Kind::commit;
    h.setup.push_back(c);
    if (rng() % 2 == 0) {
      Call f = a;
      f.kind = Kind::free;
      h.setup.push_back(f);
    }
  }
  for (int i = 0; i < 3; ++i) h.setup_priority.push_back(static_cast<std::uint32_t>(rng() % 3));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kOpsPerThread; ++i)
      h.events[t][i].call = random_prefix_call(rng, h.block_size);
    h.jitter[t] = static_cast<std::uint32_t>(rng() % kMaxJitter);
  }
  return h;
}

// ---- running histories on persistent threads ----------------------------------------------------

class Runner {
 public:
  Runner() {
    for (int t = 0; t < kThreads; ++t) threads_[t] = std::thread([this, t] { worker(t); });
  }
  ~Runner() {
    quit_ = true;
    generation_.fetch_add(1);
    for (std::thread& th : threads_) th.join();
  }

  // Runs h's per-thread calls on `cache` concurrently; fills outcomes and stamps.
  void run(PagedKvCache& cache, History& h) {
    cache_ = &cache;
    history_ = &h;
    ready_.store(0);
    done_.store(0);
    generation_.fetch_add(1);  // publishes cache_/history_ (seq_cst RMW, acquire in workers)
    while (done_.load() < kThreads) std::this_thread::yield();
  }

 private:
  void worker(int t) {
    std::uint64_t seen = 0;
    for (;;) {
      // Stay runnable between histories (spin, then yield; never sleep in the kernel): a thread
      // woken from a futex starts tens of microseconds late and would rarely overlap the others.
      for (unsigned spins = 0; generation_.load() == seen; ++spins) {
        if (spins < kIdleSpins) {
          pause();
        } else {
          std::this_thread::yield();
        }
      }
      seen = generation_.load();
      if (quit_) return;
      History& h = *history_;
      // Start together: spin, then yield (there may be more threads than cores).
      ready_.fetch_add(1);
      for (unsigned spins = 0; ready_.load() < kThreads; ++spins) {
        if (spins < kStartSpins) {
          pause();
        } else {
          std::this_thread::yield();
        }
      }
      for (int i = 0; i < kOpsPerThread; ++i) {
        Event& e = h.events[t][i];
        for (std::uint32_t j = 0; j < h.jitter[t]; ++j) pause();
        if (e.call.batch == 1 && e.call.kind == Kind::free) {  // one free_many call, 2 items
          Event& f = h.events[t][i + 1];
          const SeqId ids[] = {SeqId{e.call.seq}, SeqId{f.call.seq}};
          e.invoke = f.invoke = clock_.fetch_add(1);
          cache_->free_many(ids, freed_);
          e.response = f.response = clock_.fetch_add(1);
          if (freed_.items != 2) {
            e.outcome = f.outcome = Outcome{};
            e.outcome.message = "free_many: items != 2";
          } else {
            for (Event* x : {&e, &f}) {
              const pkv::Result<void> r = freed_.item(x == &e ? 0 : 1);
              x->outcome = r ? Outcome{} : from_error(r.error());
              x->outcome.ok = r.has_value();
            }
          }
          ++i;
          continue;
        }
        if (e.call.batch == 1) {  // items i and i + 1: one append_batch call, one interval
          Event& f = h.events[t][i + 1];
          const SeqId ids[] = {SeqId{e.call.seq}, SeqId{f.call.seq}};
          e.invoke = f.invoke = clock_.fetch_add(1);
          cache_->append_batch(ids, e.call.n, batch_);
          e.response = f.response = clock_.fetch_add(1);
          if (batch_.items != 2) {  // (checked again by the search: an impossible outcome)
            e.outcome = f.outcome = Outcome{};
            e.outcome.message = "append_batch: items != 2";
          } else {
            e.outcome = from_append(batch_.item(0));
            f.outcome = from_append(batch_.item(1));
          }
          ++i;
          continue;
        }
        e.invoke = clock_.fetch_add(1);
        e.outcome = perform(*cache_, e.call);
        e.response = clock_.fetch_add(1);
      }
      done_.fetch_add(1);
    }
  }

  std::array<std::thread, kThreads> threads_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> ready_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> quit_{false};
  std::atomic<std::uint64_t> clock_{0};
  PagedKvCache* cache_ = nullptr;  // written before generation_ bump, read after
  History* history_ = nullptr;
  static thread_local pkv::AppendBatchOutcome batch_;  // each worker's, reused
  static thread_local pkv::FreeManyOutcome freed_;

  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
  }
};

thread_local pkv::AppendBatchOutcome Runner::batch_;
thread_local pkv::FreeManyOutcome Runner::freed_;

struct Totals {
  std::uint64_t histories = 0, overlapping = 0, nodes = 0;
  std::array<std::uint64_t, kTolerances> tolerated{};  // histories that needed each tolerance
  double seconds = 0;
};

// Runs `count` histories (or until `budget` seconds pass); returns "" or the first failure.
std::string check_histories(int strategy, bool tolerant, std::uint64_t first_seed,
                            std::uint64_t count, double budget, Totals* totals,
                            bool new_calls = false, bool prefix = false) {
  Runner runner;
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < count; ++i) {
    History h = prefix ? make_prefix_history(first_seed + i, strategy)
                       : make_history(first_seed + i, strategy, new_calls);
    ReferenceModel model(h.blocks, h.block_size, 1, 1);
    PagedKvCache::Options o;
    o.pool.magazine_size = h.magazine;
    o.affinity_shift = h.affinity_shift;
    PagedKvCache cache(h.blocks, h.block_size, 1, 1, o);
    if (!cache.set_eviction_strategy(h.strategy) || !model.set_eviction_strategy(h.strategy))
      return "set_eviction_strategy failed";
    for (const Call& c : h.setup) {
      if (!(perform(cache, c) == perform(model, c)))
        return "sequential setup disagrees with the model at " + to_string(c) + "\n" + describe(h);
    }
    for (std::uint64_t k = 1; k <= 3; ++k) {
      (void)cache.set_priority(SeqId{id_of(k)}, h.setup_priority[k - 1]);
      (void)model.set_priority(SeqId{id_of(k)}, h.setup_priority[k - 1]);
    }
    runner.run(cache, h);
    if (h.prefix) h.final = quiescent_figures(cache);
    // The search first: a wrong result is reported as such even where validate_unsafe would
    // also see the damage.
    Checker checker(h, tolerant);
    if (!checker.search(model, {0, 0, 0}, 0))
      return "no linearization reproduces the observed results\n" + describe(h);
    if (std::string v = cache.validate_unsafe(); !v.empty())
      return "validate_unsafe after the history: " + v + "\n" + describe(h);
    if (h.prefix) {
      // reset_prefix_cache at quiescence: every hash forgotten, reclaimable blocks plain free.
      ReferenceModel end = *checker.final_model;
      if (!cache.reset_prefix_cache() || !end.reset_prefix_cache())
        return "reset_prefix_cache failed\n" + describe(h);
      if (!(quiescent_figures(cache) == quiescent_figures(end)) || cache.cached_block_count() != 0)
        return "after reset_prefix_cache: real " + to_string(quiescent_figures(cache)) +
               ", model " + to_string(quiescent_figures(end)) + "\n" + describe(h);
    }
    totals->nodes += checker.nodes;
    for (int k = 0; k < kTolerances; ++k) totals->tolerated[k] += checker.used[k] > 0 ? 1 : 0;
    ++totals->histories;
    // Did any two calls of different threads overlap in time?
    bool overlap = false;
    for (int t = 0; t < kThreads && !overlap; ++t)
      for (int u = t + 1; u < kThreads && !overlap; ++u)
        for (const Event& a : h.events[t])
          for (const Event& b : h.events[u])
            if (a.invoke < b.response && b.invoke < a.response) overlap = true;
    totals->overlapping += overlap ? 1 : 0;
    // Drain: free everything so the pool's accounting is checked at the end of each history too.
    for (SeqId s : cache.sequence_ids()) (void)cache.free(s);
    if (cache.free_block_count() != cache.total_blocks() || !cache.validate_unsafe().empty())
      return "blocks lost after freeing every sequence\n" + describe(h);
    totals->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (totals->seconds > budget) break;
  }
  return {};
}

std::uint64_t histories_wanted() {
  if (const char* e = std::getenv("PKV_LIN_HISTORIES")) return std::strtoull(e, nullptr, 10);
  return pkv::test_support::kUnderTsan ? 1000 : 3000;
}

double seconds_allowed() {
  if (const char* e = std::getenv("PKV_LIN_SECONDS")) return std::strtod(e, nullptr);
  return pkv::test_support::kUnderTsan ? 6.0 : 3.0;
}

void run_and_report(const char* name, int strategy, std::uint64_t seed, bool tolerant = true,
                    bool new_calls = false, bool prefix = false) {
  Totals t;
  const std::string e = check_histories(strategy, tolerant, seed, histories_wanted(),
                                        seconds_allowed(), &t, new_calls, prefix);
  std::printf(
      "%s%s: %llu histories in %.2f s (%.0f/s), %llu with overlapping calls, %llu search "
      "nodes; needed tolerance: spurious_oom %llu, empty_evict %llu, stale_victim %llu, "
      "double_cow %llu, stamp_order %llu, lookup_miss %llu, early_reclaim %llu\n",
      tolerant ? "" : "strict ", name, static_cast<unsigned long long>(t.histories), t.seconds,
      t.seconds > 0 ? static_cast<double>(t.histories) / t.seconds : 0.0,
      static_cast<unsigned long long>(t.overlapping), static_cast<unsigned long long>(t.nodes),
      static_cast<unsigned long long>(t.tolerated[kSpuriousOom]),
      static_cast<unsigned long long>(t.tolerated[kEmptyEvict]),
      static_cast<unsigned long long>(t.tolerated[kStaleVictim]),
      static_cast<unsigned long long>(t.tolerated[kDoubleCow]),
      static_cast<unsigned long long>(t.tolerated[kStampOrder]),
      static_cast<unsigned long long>(t.tolerated[kLookupMiss]),
      static_cast<unsigned long long>(t.tolerated[kEarlyReclaim]));
  ASSERT_EQ(e, "");
  // How often calls overlap depends on how many CPUs the machine has free: on a loaded 2-core
  // machine it can drop to nearly nothing, so this is reported, not asserted.
  if (t.histories >= 500 && t.overlapping == 0)
    std::printf("WARNING: no two calls overlapped; the machine is too loaded for this test\n");
}

}  // namespace

// ---- the checker itself ------------------------------------------------------------------------

// A history that is not linearizable must be rejected, and an overlapping one that is, accepted.
TEST(Linearizability, st_checker_rejects_and_accepts) {
  History h;
  h.blocks = 4;
  h.block_size = 2;
  h.setup_priority = {0, 0, 0};
  ReferenceModel m(4, 2, 1, 1);
  ASSERT_TRUE(m.allocate(SeqId{1}, 1));
  // Thread 0 appends 1 token to S1 and returns before thread 1 reads S1 with its old length.
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kOpsPerThread; ++i) {
      Event& e = h.events[t][i];
      e.call.kind = Kind::get;
      e.call.seq = 3;
      e.outcome.ok = true;
      e.invoke = 100 + static_cast<std::uint64_t>(t * 10 + i) * 2;
      e.response = e.invoke + 1;
    }
  Event& w = h.events[0][0];
  w.call = Call{Kind::append, 1, 0, 1};
  w.outcome = Outcome{};
  w.outcome.ok = true;
  w.invoke = 0;
  w.response = 1;
  Event& r = h.events[1][0];
  r.call = Call{Kind::get, 1, 0, 0};
  r.outcome = Outcome{};
  r.outcome.ok = true;
  r.outcome.found = true;
  r.outcome.tokens = 1;
  r.outcome.blocks = 1;
  r.outcome.access_count = 1;
  r.invoke = 2;
  r.response = 3;
  {
    Checker c(h, false);
    EXPECT_FALSE(c.search(m, {0, 0, 0}, 0)) << describe(h);
  }
  {
    Checker c(h, true);  // no tolerance applies to a stale read
    EXPECT_FALSE(c.search(m, {0, 0, 0}, 0)) << describe(h);
  }
  // Overlapping: the read may be ordered before the append.
  r.invoke = 0;
  r.response = 3;
  {
    Checker c(h, false);
    EXPECT_TRUE(c.search(m, {0, 0, 0}, 0)) << describe(h);
  }
}

// ---- random concurrent histories ---------------------------------------------------------------

TEST(Linearizability, mt_histories_lru) {
  run_and_report("LRU", 0, 1'000'000);
}
TEST(Linearizability, mt_histories_lfu) {
  run_and_report("LFU", 1, 2'000'000);
}
TEST(Linearizability, mt_histories_longest_first) {
  run_and_report("LongestFirst", 2, 3'000'000);
}
TEST(Linearizability, mt_histories_priority) {
  run_and_report("Priority", 3, 4'000'000);
}
TEST(Linearizability, mt_histories_mixed_strategies) {
  run_and_report("mixed", -1, 5'000'000);
}
// fork_many / truncate as one step each, free_many as its items in order within the call.
TEST(Linearizability, mt_histories_fork_many_free_many_truncate_lru) {
  run_and_report("fork_many/free_many/truncate LRU", 0, 6'000'000, true, true);
}
TEST(Linearizability, mt_histories_fork_many_free_many_truncate_mixed) {
  run_and_report("fork_many/free_many/truncate mixed", -1, 7'000'000, true, true);
}

// allocate / append with token ids, commit and match_prefix (prefix caching) among block-taking,
// freeing, forking and evicting calls; the quiescent figures and reset_prefix_cache at the end.
TEST(Linearizability, mt_histories_prefix_caching_mixed) {
  run_and_report("prefix caching mixed", -1, 8'000'000, true, false, true);
}

// The contract says every method is linearizable. These strict runs (no tolerance) fail within a
// few hundred histories on the current src/ (see the Tolerance comment above) and print the
// offending history; enable with --gtest_also_run_disabled_tests once src/ is fixed.
TEST(Linearizability, DISABLED_mt_strict_histories_lru) {
  run_and_report("LRU", 0, 1'000'000, false);
}
TEST(Linearizability, DISABLED_mt_strict_histories_mixed_strategies) {
  run_and_report("mixed", -1, 5'000'000, false);
}
TEST(Linearizability, DISABLED_mt_strict_histories_prefix_caching_mixed) {
  run_and_report("prefix caching mixed", -1, 8'000'000, false, false, true);
}
