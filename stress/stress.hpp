// stress/stress.hpp — pkv-stress's shared state: the options, what each worker owns and logs, and
// the Stress class whose operations (ops_sequences.cpp, ops_shared.cpp), quiescent checks
// (checks.cpp) and threads (main.cpp) live in the files beside it.
//
// What is checked
//   * Per call, what the calling thread can know: the outcome is one the contract allows in that
//     situation (error codes and texts), a successful allocate/append/free is visible to the
//     caller's own get_sequence, a CopyOp names the old last block and the fresh block that
//     replaced it, and appears exactly when the last block had free slots and another holder.
//   * At quiescent points (every --check-ms, all threads parked at a std::barrier) and at the end:
//       - cache.validate_unsafe() == "" (every block free xor referenced, reference counts equal
//         the tables holding each block, free + referenced == total, shared blocks frozen);
//       - sequence accounting: for every id, creations (allocate, fork) - frees - evictions (as
//         returned by evict / evict_to_threshold, from any thread) is 0 or 1 and equals "the cache
//         has it"; the counters total_evictions and total_forks equal the logged calls;
//         total_allocations - total_frees == used blocks;
//       - KV data: a host arena holds one 16-byte slot per token position (K and V cookies that
//         encode the writing sequence and the token's position); every appended token's cookie
//         is written where the cache says it lives, every CopyOp is performed, and every kept
//         token of every tracked live sequence must read back its cookie (one wrong byte is a
//         violation).
//   * At the end, after freeing everything: free == total, no sequence, validate_unsafe() == "".
//
// The caller protocol (what a serving system must do too, and what the program does)
//   * Each thread owns a disjoint id range and is the only one to allocate, append, free, stream
//     or set the priority of its sequences; its bookkeeping mutex is held during those calls.
//     Another thread may fork from a sequence it does not own, holding the owner's mutex.
//   * evict / evict_to_threshold may free any thread's sequence at any time. Writing KV data into
//     a sequence's blocks is only safe while it cannot be evicted, and a CopyOp's source must keep
//     its data until copied. Two modes (--hold-copy-sources, by default chosen by the seed):
//       0  (vLLM's immediate release) writers (allocate + write, append + copy + write) hold a gate
//          shared and evictors hold it exclusive; a writer whose shared last block has holders in
//          other threads first pins the block with a private fork, freed after the copy. Other
//          holders then cannot vanish, so CopyOp presence is checked exactly.
//       1  Options::hold_copy_sources: writers pin() their sequence and call copy_done() after
//          copying; there is no gate, so eviction runs concurrently with every write. A pinned
//          sequence vanishing is a violation; CopyOp presence is checked only where exact (a
//          private last block must not be copied).
//     All other calls, blind appends among them (--blind percent of appends, no data written; the
//     sequence's data is then no longer checked), run concurrently with eviction in both modes.
//   A thread that finds its sequence gone (sequence_not_found) forgets it; accounting proves it
//   was evicted.
#pragma once

#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "pkv/detail/cache_line.hpp"
#include "pkv/pkv.hpp"
#include "support/gate.hpp"
#include "support/kv_arena.hpp"
#include "support/sanitizers.hpp"

namespace pkv::stress {

using test_support::kUnderTsan;

// ---- options -----------------------------------------------------------------------------------

struct Options {
  unsigned threads = kUnderTsan ? 4 : 8;
  double seconds = kUnderTsan ? 3.0 : 10.0;
  std::uint64_t seed = 0;
  bool seed_given = false;
  std::size_t blocks = kUnderTsan ? 128 : 512;
  std::size_t block_size = 4;
  std::uint32_t magazine = 32;
  unsigned check_ms = kUnderTsan ? 500 : 250;
  unsigned live = 24;   // sequences a thread keeps at most
  unsigned blind = 3;   // percent of appends that write no data and race with eviction
  unsigned cross = 33;  // percent of forks whose source another thread owns
  int hold = -1;        // Options::hold_copy_sources: 0, 1, or -1 = chosen by the seed
  int affinity = -1;    // 1: Options::affinity_shift = 32 (worker t's ids are (t+1) << 32 | n);
                        // 0: hashed placement; -1: chosen by the seed
};

/// Prints why and the usage line to stderr, exits 2.
[[noreturn]] void usage(const char* why);
/// Parses the command line (bad arguments: usage()).
Options parse(int argc, char** argv);
/// Thread-affine placement on (--affinity 1), off (0), or chosen by the seed's second bit.
bool affinity_of(const Options& o);

// ---- shared state ------------------------------------------------------------------------------

// One token slot of the host KV arena: K and V cookies.
struct Slot {
  std::uint64_t k = 0;
  std::uint64_t v = 0;
};

// The slot whose K cookie is `k` (V is derived from K).
inline Slot slot_of_key(std::uint64_t k) {
  Slot s;
  s.k = k;
  s.v = ~s.k * 0x9e3779b97f4a7c15ULL ^ 0x5a5a;  // V differs from K in every byte position
  return s;
}

inline Slot cookie(std::uint64_t seq, std::uint64_t pos) {
  return slot_of_key((seq << 24) ^ pos);  // ids are < 2^40, positions < 2^24
}

// The KV cookie of token i of a prompt allocated with token ids: derived from (salt, ids[0..i]),
// not from the writer, so every sequence that computes that prefix writes the same cookie and a
// prefix hit must read back exactly it.
inline Slot prefix_cookie(const std::string& salt, const std::vector<TokenId>& ids,
                          std::uint64_t i) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char ch : salt) h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ULL;
  for (std::uint64_t k = 0; k <= i; ++k) h = (h ^ ids[k]) * 0x100000001b3ULL;
  return slot_of_key(h | std::uint64_t{1} << 63);  // bit 63: never a (seq << 24 ^ pos) cookie
}
// A prompt of the prefix-caching ops: one of 4 system prompts (8 or 12 tokens, the first 4
// shared by all), then one of 3 questions of 1..6 tokens; salt "" (most), "tenant-a" or
// "tenant-b".
inline std::vector<TokenId> prompt_for(std::mt19937_64& rng, std::string* salt) {
  static const char* const kSalts[] = {"", "", "", "tenant-a", "tenant-b"};
  *salt = kSalts[rng() % 5];
  const std::uint64_t sys = rng() % 4, q = rng() % 3;
  std::vector<TokenId> v;
  const std::uint64_t sys_len = 8 + 4 * (sys % 2);
  for (std::uint64_t i = 0; i < sys_len; ++i)
    v.push_back(static_cast<TokenId>(i < 4 ? 10 + i : 100 * (sys + 1) + i));
  const std::uint64_t q_len = 1 + q * 2 + rng() % 2;
  for (std::uint64_t i = 0; i < q_len; ++i) v.push_back(static_cast<TokenId>(5000 + 10 * q + i));
  return v;
}
// Token j of the answer decoded after `prompt` (op_prefix appends these with token ids): fixed
// by the prompt, so a second turn (conversation_prompt) repeats exactly what a first turn
// appended and its prefix hits reach into the blocks that decode filled.
inline constexpr std::uint64_t kAnswerTokens = 6;
inline constexpr TokenId kFirstAnswerToken = 20000;  // answer tokens: 20000..29999
inline TokenId answer_token(const std::vector<TokenId>& prompt, std::uint64_t j) {
  std::uint64_t h = 0x9e3779b97f4a7c15ULL;
  for (TokenId t : prompt) h = (h ^ t) * 0x100000001b3ULL;
  return static_cast<TokenId>(kFirstAnswerToken + (h + 7 * j) % 10000);
}
// A first turn (prompt_for), or a third of the time a second one: a first turn, its whole
// answer, and a follow-up question of 1..3 tokens.
inline std::vector<TokenId> conversation_prompt(std::mt19937_64& rng, std::string* salt) {
  std::vector<TokenId> v = prompt_for(rng, salt);
  if (rng() % 3 != 0) return v;
  const std::vector<TokenId> first = v;
  for (std::uint64_t j = 0; j < kAnswerTokens; ++j) v.push_back(answer_token(first, j));
  for (std::uint64_t i = 1 + rng() % 3; i > 0; --i) v.push_back(static_cast<TokenId>(7000 + i));
  return v;
}
// A salt no operation allocates under: match_prefix must never find anything with it.
inline constexpr const char* kUnusedSalt = "tenant-never-allocated";

// A sequence a thread owns and believes alive.
struct Tracked {
  std::uint64_t id = 0;
  std::uint64_t lineage = 0;  // id of the allocated ancestor: blocks are shared only within
  bool exported = false;      // ... a lineage; exported: another thread holds a member
  std::uint64_t tokens = 0;
  std::uint64_t pending = 0;        // copy-on-write sources held until copy_done (hold mode)
  bool tainted = false;             // a blind append happened: data no longer checked
  std::vector<std::uint64_t> keys;  // K cookie of each kept token (V is derived)
  std::uint32_t priority = 0;
};

// Per-id accounting deltas, merged at quiescent points.
struct Ledger {
  std::vector<std::uint64_t> created, freed, evicted, vanished;
  std::uint64_t forks = 0;
};

struct Stats {
  std::uint64_t ops = 0, allocs = 0, appends = 0, blind = 0, copies = 0, pin_forks = 0, forks = 0,
                cross_forks = 0, frees = 0, evict_calls = 0, evicted = 0, streamed = 0, oom = 0,
                vanished = 0, strategy_changes = 0, fork_manys = 0, free_manys = 0, truncates = 0,
                prefix_allocs = 0, prefix_hit_tokens = 0, prefix_appends = 0, prefix_matches = 0,
                prefix_matched_tokens = 0, prefix_hit_decoded = 0;
  void add(const Stats& o) {
    ops += o.ops;
    allocs += o.allocs;
    appends += o.appends;
    blind += o.blind;
    copies += o.copies;
    pin_forks += o.pin_forks;
    forks += o.forks;
    cross_forks += o.cross_forks;
    frees += o.frees;
    evict_calls += o.evict_calls;
    evicted += o.evicted;
    streamed += o.streamed;
    oom += o.oom;
    vanished += o.vanished;
    strategy_changes += o.strategy_changes;
    fork_manys += o.fork_manys;
    free_manys += o.free_manys;
    truncates += o.truncates;
    prefix_allocs += o.prefix_allocs;
    prefix_hit_tokens += o.prefix_hit_tokens;
    prefix_appends += o.prefix_appends;
    prefix_matches += o.prefix_matches;
    prefix_matched_tokens += o.prefix_matched_tokens;
    prefix_hit_decoded += o.prefix_hit_decoded;
  }
};

struct alignas(pkv::detail::kCacheLine) Worker {  // one owner thread each: no false sharing
  std::mutex mu;  // guards `live`; held by the owner during calls on its own sequences
  std::vector<Tracked> live;
  Ledger ledger;  // written by the owner only; read at quiescent points
  Stats stats;
  std::uint64_t next_id = 0;
  bool pressure = false;  // the last call ran out of blocks
  std::mt19937_64 rng;
};

class Stress {
 public:
  explicit Stress(const Options& o)
      : opt_(o), hold_(o.hold < 0 ? (o.seed & 1) == 1 : o.hold == 1), workers_(o.threads) {
    PagedKvCache::Options co;
    co.pool.magazine_size = o.magazine;
    co.hold_copy_sources = hold_;
    co.affinity_shift = affinity_of(o) ? 32 : 0;  // the owner bits of next_id below
    auto r = PagedKvCache::create(o.blocks, o.block_size, 8, 64, co);
    if (!r) usage(r.error().message().c_str());
    cache_ = std::move(r).value();
    arena_ = test_support::KvArena<Slot>(o.blocks, o.block_size);
    std::mt19937_64 seeder(o.seed);
    for (unsigned t = 0; t < o.threads; ++t) {
      workers_[t].rng.seed(seeder());
      workers_[t].next_id = (static_cast<std::uint64_t>(t) + 1) << 32;
    }
  }

  int run();

 private:
  // ---- helpers -----------------------------------------------------------------------------
  void violation(const std::string& what) {
    const std::uint64_t n = violations_.fetch_add(1, std::memory_order_relaxed);
    if (n < 20) {
      std::lock_guard<std::mutex> g(print_mu_);
      std::fprintf(stderr, "VIOLATION: %s\n", what.c_str());
    }
  }
  static std::string s(std::uint64_t id) { return "S" + std::to_string(id); }

  std::uint64_t bs() const { return opt_.block_size; }
  std::uint64_t blocks_for(std::uint64_t n) const { return (n + bs() - 1) / bs(); }

  // The token-run structure is well formed and inside the block table.
  bool runs_ok(const SequenceInfo& info) const {
    std::uint64_t t = 0;
    for (const pkv::TokenRun& r : info.token_runs) {
      if (r.first_token != t || r.length == 0) return false;
      if (r.slot + r.length > info.block_ids.size() * bs()) return false;
      t += r.length;
    }
    return t == info.num_tokens;
  }

  void expect_oom(const pkv::Error& e, std::uint64_t requested, const char* what) {
    const std::string want = "Out of memory: requested " + std::to_string(requested) + " blocks, ";
    if (e.code() != Errc::out_of_memory || e.message().rfind(want, 0) != 0)
      violation(std::string(what) + ": unexpected error \"" + e.message() + "\" (wanted " + want +
                "...)");
  }

  void expect_not_found(const pkv::Error& e, std::uint64_t id, const char* what) {
    if (e.code() != Errc::sequence_not_found || e.message() != "Sequence not found: " + s(id))
      violation(std::string(what) + ": wanted sequence_not_found for " + s(id) + ", got \"" +
                e.message() + "\"");
  }

  // Writes cookies for kept tokens [first, first + n) of `tr` at their slots in `info`.
  void write_tokens(const SequenceInfo& info, Tracked& tr, std::uint64_t first, std::uint64_t n) {
    for (std::uint64_t i = first; i < first + n; ++i) {
      const Slot c = cookie(tr.id, i);
      Slot* cell = arena_.token(info, i);
      if (cell == nullptr)
        return violation(s(tr.id) + ": token " + std::to_string(i) +
                         " has no slot in its block table");
      *cell = c;
      tr.keys.push_back(c.k);
    }
  }

  // Pins `id`; false (and the loss recorded) if it was evicted first.
  bool pin(Worker& w, std::uint64_t id) {
    auto r = cache_->pin(SeqId{id});
    if (r) return true;
    expect_not_found(r.error(), id, "pin");
    w.ledger.vanished.push_back(id);
    ++w.stats.vanished;
    return false;
  }
  // Unpins on scope exit; a pinned sequence must never be evicted.
  struct Pinned {
    Stress& st;
    std::uint64_t id;
    Pinned(Stress& s, std::uint64_t i) : st(s), id(i) {}
    ~Pinned() {
      if (id == 0) return;
      if (auto r = st.cache_->unpin(SeqId{id}); !r)
        st.violation("unpin(" + s(id) + "): " + r.error().message() +
                     " (a pinned sequence vanished)");
    }
    Pinned(const Pinned&) = delete;
    Pinned& operator=(const Pinned&) = delete;
  };

  void forget(Worker& w, std::size_t idx, bool vanished) {
    if (vanished) {
      w.ledger.vanished.push_back(w.live[idx].id);
      ++w.stats.vanished;
    }
    w.live[idx] = std::move(w.live.back());
    w.live.pop_back();
  }

  // The outcome of a blind append (no data written; one append() or one append_batch item) on
  // w's sequence `tr`, `what` naming the call: counts it, or checks and counts its error.
  // Returns false when the sequence is gone (evicted meanwhile): the caller forgets it.
  bool blind_appended(Worker& w, Tracked& tr, std::uint64_t n,
                      const pkv::Result<std::optional<CopyOp>>& r, const char* what);

  // ---- operations (each runs in worker `t`; ops_sequences.cpp, ops_shared.cpp) -------------
  void op_allocate(unsigned t);
  void op_append(unsigned t, bool blind);
  void op_append_batch(unsigned t);
  void op_fork(unsigned t, bool cross);
  void op_free(unsigned t);
  void op_fork_many(unsigned t);
  void op_free_many(unsigned t);
  void op_truncate(unsigned t);
  void op_prefix(unsigned t);
  void op_streaming(unsigned t);
  void op_get(unsigned t);
  void op_evict(unsigned t, bool to_threshold);
  void op_misc(unsigned t);
  void op_bad_calls(unsigned t);
  void worker(unsigned t);  // the loop that picks the operations (main.cpp)

  // ---- checks (checks.cpp) ----------------------------------------------------------------
  void quiescent_check(bool final);

  struct OnQuiescent {
    Stress* self;
    void operator()() noexcept {
      self->quiescent_check(false);
      self->checked_.store(self->epoch_.load(std::memory_order_acquire), std::memory_order_release);
    }
  };

  Options opt_;
  // false: writers hold the gate shared, evictors exclusive, copy sources pinned by a private
  //        fork (exact CopyOp checks). true: Options::hold_copy_sources, writers pin their
  //        sequence instead, no gate: eviction runs concurrently with every write.
  bool hold_;
  std::unique_ptr<PagedKvCache> cache_;
  test_support::KvArena<Slot> arena_;  // the host KV data: one Slot per token slot
  std::vector<Worker> workers_;
  test_support::Gate gate_;  // gate mode: KV writers shared, evictors exclusive
  std::atomic<std::uint64_t> violations_{0};
  std::mutex print_mu_;
  // Quiescent points: the coordinator bumps `epoch_`; workers park at the barrier.
  std::atomic<std::uint64_t> epoch_{0};
  std::atomic<std::uint64_t> checked_{0};
  std::atomic<bool> stop_{false};
  std::unique_ptr<std::barrier<OnQuiescent>> barrier_;
  // Accounting (touched only at quiescent points).
  struct Account {
    std::int64_t created = 0, gone = 0;  // gone = freed + evicted
  };
  std::unordered_map<std::uint64_t, Account> accounts_;
  std::uint64_t logged_evictions_ = 0, logged_forks_ = 0, checks_ = 0, tokens_checked_ = 0;
  std::uint64_t reclaimed_ = 0;  // prefix_stats().reclaimed at the end
};

}  // namespace pkv::stress
