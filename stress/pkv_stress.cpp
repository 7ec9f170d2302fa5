// pkv-stress: many threads call every public method of one PagedKvCache at once, and the program
// checks that nothing is lost: no sequence, no block, no reference, no byte of KV data.
//
//   pkv-stress [--threads T] [--seconds S] [--seed N] [--blocks B] [--block-size K]
//              [--magazine M] [--check-ms MS] [--live L] [--blind P] [--cross-fork P]
//              [--hold-copy-sources 0|1] [--affinity 0|1]
//
// Prints its seed first and a one-line summary last ("ops=... violations=0 ..."); exits 1 on any
// violation (the first ones are printed to stderr), 2 on bad arguments.
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
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pkv/pkv.hpp"

#if defined(__SANITIZE_THREAD__)
#define PKV_STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PKV_STRESS_TSAN 1
#endif
#endif
#ifndef PKV_STRESS_TSAN
#define PKV_STRESS_TSAN 0
#endif

namespace {

using pkv::BlockId;
using pkv::CopyOp;
using pkv::Errc;
using pkv::EvictionStrategy;
using pkv::PagedKvCache;
using pkv::SeqId;
using pkv::SequenceInfo;

// ---- options -----------------------------------------------------------------------------------

struct Options {
  unsigned threads = PKV_STRESS_TSAN ? 4 : 8;
  double seconds = PKV_STRESS_TSAN ? 3.0 : 10.0;
  std::uint64_t seed = 0;
  bool seed_given = false;
  std::size_t blocks = PKV_STRESS_TSAN ? 128 : 512;
  std::size_t block_size = 4;
  std::uint32_t magazine = 32;
  unsigned check_ms = PKV_STRESS_TSAN ? 500 : 250;
  unsigned live = 24;   // sequences a thread keeps at most
  unsigned blind = 3;   // percent of appends that write no data and race with eviction
  unsigned cross = 33;  // percent of forks whose source another thread owns
  int hold = -1;        // Options::hold_copy_sources: 0, 1, or -1 = chosen by the seed
  int affinity = -1;    // 1: Options::affinity_shift = 32 (worker t's ids are (t+1) << 32 | n);
                        // 0: hashed placement; -1: chosen by the seed
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "pkv-stress: %s\nusage: pkv-stress [--threads T] [--seconds S] [--seed N] "
               "[--blocks B] [--block-size K] [--magazine M] [--check-ms MS] [--live L] "
               "[--blind PERCENT] [--cross-fork PERCENT] [--hold-copy-sources 0|1] "
               "[--affinity 0|1]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") usage("help");
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const double d = std::strtod(v, &end);
    if (end == v || *end != '\0' || d < 0) usage(("bad value for " + a).c_str());
    const auto u = static_cast<std::uint64_t>(std::strtoull(v, nullptr, 10));
    if (a == "--threads") {
      o.threads = static_cast<unsigned>(u);
    } else if (a == "--seconds") {
      o.seconds = d;
    } else if (a == "--seed") {
      o.seed = u;
      o.seed_given = true;
    } else if (a == "--blocks") {
      o.blocks = u;
    } else if (a == "--block-size") {
      o.block_size = u;
    } else if (a == "--magazine") {
      o.magazine = static_cast<std::uint32_t>(u);
    } else if (a == "--check-ms") {
      o.check_ms = static_cast<unsigned>(u);
    } else if (a == "--live") {
      o.live = static_cast<unsigned>(u);
    } else if (a == "--blind") {
      o.blind = static_cast<unsigned>(u);
    } else if (a == "--cross-fork") {
      o.cross = static_cast<unsigned>(u);
    } else if (a == "--hold-copy-sources") {
      if (u > 1) usage("--hold-copy-sources is 0 or 1");
      o.hold = static_cast<int>(u);
    } else if (a == "--affinity") {
      if (u > 1) usage("--affinity is 0 or 1");
      o.affinity = static_cast<int>(u);
    } else {
      usage(("unknown option " + a).c_str());
    }
  }
  if (o.threads == 0 || o.threads > 200) usage("--threads must be in 1..200");
  if (o.blocks == 0 || o.block_size == 0 || o.block_size > 4096) usage("bad cache size");
  if (o.blocks * o.block_size > (std::size_t{1} << 26)) usage("cache too large for the arena");
  if (o.live == 0 || o.blind > 100 || o.cross > 100 || o.check_ms == 0)
    usage("bad --live / --blind / --cross-fork / --check-ms");
  return o;
}

// Thread-affine placement on (--affinity 1), off (0), or chosen by the seed's second bit.
bool affinity_of(const Options& o) {
  return o.affinity < 0 ? ((o.seed >> 1) & 1) == 1 : o.affinity == 1;
}

// ---- shared state ------------------------------------------------------------------------------

// One token slot of the host KV arena: K and V cookies.
struct Slot {
  std::uint64_t k = 0;
  std::uint64_t v = 0;
};

Slot cookie(std::uint64_t seq, std::uint64_t pos) {
  Slot s;
  s.k = (seq << 24) ^ pos;                      // ids are < 2^40, positions < 2^24
  s.v = ~s.k * 0x9e3779b97f4a7c15ULL ^ 0x5a5a;  // V differs from K in every byte position
  return s;
}

// Writers of KV data hold it shared, evictors exclusive; writer-preferring so evictors are not
// starved by a steady stream of readers.
class Gate {
 public:
  void lock_shared() {
    while (waiting_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    mu_.lock_shared();
  }
  void unlock_shared() { mu_.unlock_shared(); }
  void lock() {
    waiting_.fetch_add(1, std::memory_order_acq_rel);
    mu_.lock();
    waiting_.fetch_sub(1, std::memory_order_acq_rel);
  }
  void unlock() { mu_.unlock(); }

 private:
  std::shared_mutex mu_;
  std::atomic<int> waiting_{0};
};

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
                vanished = 0, strategy_changes = 0;
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
  }
};

struct alignas(128) Worker {
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
    arena_ = std::make_unique<Slot[]>(o.blocks * o.block_size);
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

  Slot& slot_at(const SequenceInfo& info, std::uint64_t token) {
    const std::uint64_t slot = info.slot_of(token);
    return arena_[info.block_ids[slot / bs()].value * bs() + slot % bs()];
  }

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
      slot_at(info, i) = c;
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
                      const pkv::Result<std::optional<CopyOp>>& r, const char* what) {
    if (!r) {
      if (r.error().code() == Errc::sequence_not_found) {
        expect_not_found(r.error(), tr.id, what);
        return false;
      }
      if (r.error().code() != Errc::out_of_memory)
        violation(std::string(what) + ": unexpected \"" + r.error().message() + "\"");
      ++w.stats.oom;
      w.pressure = true;
      return true;
    }
    ++w.stats.blind;
    if (r.value()) ++w.stats.copies;
    if (hold_ && r.value()) {
      ++tr.pending;
      if (w.rng() % 2 == 0) {  // or leave them to a later copy_done, free or evict
        auto d = cache_->copy_done(SeqId{tr.id});
        if (d && d.value() != tr.pending) violation("copy_done released a wrong count");
        tr.pending = 0;
      }
    }
    tr.tokens += n;
    tr.tainted = true;
    tr.keys.clear();
    return true;
  }

  // ---- operations (each runs in worker `t`) -------------------------------------------------
  void op_allocate(unsigned t);
  void op_append(unsigned t, bool blind);
  void op_append_batch(unsigned t);
  void op_fork(unsigned t, bool cross);
  void op_free(unsigned t);
  void op_streaming(unsigned t);
  void op_get(unsigned t);
  void op_evict(unsigned t, bool to_threshold);
  void op_misc(unsigned t);
  void op_bad_calls(unsigned t);
  void worker(unsigned t);

  // ---- checks ------------------------------------------------------------------------------
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
  std::unique_ptr<Slot[]> arena_;
  std::vector<Worker> workers_;
  Gate gate_;
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
};

// ---- operations
// ----------------------------------------------------------------------------------

void Stress::op_allocate(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.size() >= opt_.live) return;
  ++w.stats.ops;
  const std::uint64_t n = std::uniform_int_distribution<std::uint64_t>(0, 4 * bs())(w.rng);
  const std::uint64_t id = w.next_id++;
  std::shared_lock<Gate> g(gate_, std::defer_lock);
  if (!hold_) g.lock();
  auto r = cache_->allocate(SeqId{id}, n);
  if (!r) {
    ++w.stats.oom;
    w.pressure = true;
    expect_oom(r.error(), blocks_for(n), "allocate");
    return;
  }
  ++w.stats.allocs;
  w.ledger.created.push_back(id);
  // Pin mode: keep it from being evicted while its KV data is written.
  if (hold_ && !pin(w, id)) return;  // evicted at once
  Pinned pinned(*this, hold_ ? id : 0);
  auto info = cache_->get_sequence(SeqId{id});
  if (!info) return violation("allocate(" + s(id) + ") succeeded but get_sequence finds nothing");
  if (info->num_tokens != n || info->block_ids.size() != blocks_for(n) || info->access_count != 1 ||
      !runs_ok(*info) || (n > 0 && (info->token_runs.size() != 1 || info->token_runs[0].slot != 0)))
    return violation("allocate(" + s(id) + ", " + std::to_string(n) + "): wrong SequenceInfo");
  Tracked tr;
  tr.id = id;
  tr.lineage = id;
  tr.tokens = n;
  write_tokens(*info, tr, 0, n);
  w.live.push_back(std::move(tr));
}

// A decode step over some of this worker's sequences (a duplicate now and then) through
// append_batch, blind like a blind append (no data written, eviction may race with it): every
// item must be what append() would have returned at its turn, and a sequence reported missing by
// one item must stay missing for the later items of the same batch.
void Stress::op_append_batch(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  std::vector<std::size_t> idx;
  std::vector<SeqId> ids;
  for (std::size_t k = 1 + w.rng() % 4; k > 0; --k) {
    idx.push_back(w.rng() % w.live.size());
    ids.push_back(SeqId{w.live[idx.back()].id});
  }
  const std::uint64_t n = w.rng() % 3;
  pkv::AppendBatchOutcome outcome;
  cache_->append_batch(ids, n, outcome);
  if (outcome.items != ids.size()) return violation("append_batch: items is not seqs.size()");
  const std::vector<pkv::Result<std::optional<CopyOp>>> out = outcome.per_item();
  std::vector<bool> gone(w.live.size(), false);
  for (std::size_t j = 0; j < ids.size(); ++j) {
    Tracked& tr = w.live[idx[j]];
    if (gone[idx[j]] && out[j])
      violation("append_batch: " + s(tr.id) + " reported missing, then appended to");
    if (!blind_appended(w, tr, n, out[j], "append_batch item")) gone[idx[j]] = true;
  }
  for (std::size_t i = gone.size(); i-- > 0;)  // from the back: forget() moves the last entry
    if (gone[i]) forget(w, i, true);
}

void Stress::op_append(unsigned t, bool blind) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  Tracked& tr = w.live[idx];
  const std::uint64_t n =
      w.rng() % 4 == 0 ? std::uniform_int_distribution<std::uint64_t>(0, 3 * bs())(w.rng) : 1;
  if (blind) {
    if (!blind_appended(w, tr, n, cache_->append(SeqId{tr.id}, n), "blind append"))
      forget(w, idx, true);
    return;
  }

  const SeqId seq{tr.id};
  // No eviction of this sequence from here on: the gate (exclusive for evictors) or a pin.
  std::shared_lock<Gate> g(gate_, std::defer_lock);
  if (!hold_) g.lock();
  if (hold_ && !pin(w, tr.id)) return forget(w, idx, false);
  Pinned pinned(*this, hold_ ? tr.id : 0);
  if (hold_ && w.rng() % 8 == 0) {  // pins nest
    if (!cache_->pin(seq) || !cache_->unpin(seq)) violation("nested pin of " + s(tr.id));
  }
  std::optional<SequenceInfo> pre = cache_->get_sequence(seq);
  if (!pre) {
    if (hold_) return violation("pinned " + s(tr.id) + " vanished");
    return forget(w, idx, true);  // evicted before we took the gate
  }
  if (pre->num_tokens != tr.tokens)
    return violation(s(tr.id) + ": num_tokens " + std::to_string(pre->num_tokens) +
                     ", its owner expects " + std::to_string(tr.tokens));
  const std::uint64_t old_nb = pre->block_ids.size();
  const std::uint64_t next =
      pre->token_runs.empty() ? 0 : pre->token_runs.back().slot + pre->token_runs.back().length;
  const std::uint64_t room = old_nb * bs() - next;
  // Only forks add references, and forks of this sequence need our mutex: if the last block has
  // one holder now, it keeps one. Gate mode: if it has several and all are ours (the lineage was
  // never exported), none can go away either (we hold our mutex, eviction is shut out): the count
  // is exact and the copy source stays alive. If another thread holds a member of the lineage, it
  // may free it at any time: pin the block with a private fork so the copy source stays alive.
  // Pin mode: the other holders may be evicted meanwhile, so a shared block may or may not be
  // copied; the sequence itself holds the copy source until copy_done.
  const bool shared = room > 0 && n > 0 && cache_->pool().ref_count(pre->block_ids.back()) > 1;
  std::uint64_t pin_fork = 0;
  if (!hold_ && shared && tr.exported) {
    pin_fork = w.next_id++;
    if (auto f = cache_->fork(seq, SeqId{pin_fork}); !f)
      return violation("pin fork(" + s(tr.id) + ", " + s(pin_fork) +
                       ") failed: " + f.error().message());
    w.ledger.created.push_back(pin_fork);
    ++w.ledger.forks;
    ++w.stats.pin_forks;
  }
  auto free_pin_fork = [&] {
    if (pin_fork == 0) return;
    if (auto f = cache_->free(SeqId{pin_fork}); !f)
      violation("freeing pin " + s(pin_fork) + " failed: " + f.error().message());
    w.ledger.freed.push_back(pin_fork);
  };
  const std::uint64_t beyond = n > room ? n - room : 0;
  const std::uint64_t need = blocks_for(beyond) + (shared ? 1 : 0);
  auto r = cache_->append(seq, n);
  if (!r) {
    ++w.stats.oom;
    w.pressure = true;
    // Pin mode: the block may have stopped being shared, then one block fewer was asked for.
    if (!(hold_ && shared && r.error().code() == Errc::out_of_memory &&
          r.error().message().rfind("Out of memory: requested " + std::to_string(need - 1) + " ",
                                    0) == 0))
      expect_oom(r.error(), need, "append");
    free_pin_fork();
    return;
  }
  ++w.stats.appends;
  const std::uint64_t old_tokens = tr.tokens;
  tr.tokens += n;
  // After a violation the sequence's data is no longer tracked (one report, not a cascade).
  auto fail = [&](const std::string& what) {
    free_pin_fork();
    tr.tainted = true;
    tr.keys.clear();
    violation("append(" + s(tr.id) + ", " + std::to_string(n) + "): " + what);
  };
  const std::optional<CopyOp>& copy = r.value();
  std::optional<SequenceInfo> post = cache_->get_sequence(seq);
  if (!post) return fail("succeeded but the sequence is gone");
  if (copy.has_value() != shared && !(hold_ && shared))
    return fail(std::string("CopyOp ") + (copy ? "returned" : "missing") + " (room " +
                std::to_string(room) + ", last block " + (shared ? "shared" : "private") + ")");
  if (post->num_tokens != tr.tokens || post->block_ids.size() != old_nb + blocks_for(beyond) ||
      !runs_ok(*post))
    return fail("wrong SequenceInfo afterwards");
  for (std::uint64_t b = 0; b + 1 < old_nb; ++b)
    if (post->block_ids[b] != pre->block_ids[b]) return fail("changed a full block");
  if (copy) {
    ++w.stats.copies;
    if (copy->src != pre->block_ids.back() || copy->dst != post->block_ids[old_nb - 1] ||
        copy->dst == copy->src)
      return fail("CopyOp does not name the old and the new last block");
    // Copy the slots this sequence had filled (its tokens), not the whole block: once this
    // sequence let go of the source, another holder left alone with it may append into its free
    // slots (append's contract), and those are not ours to read.
    const std::uint64_t fill = next - (old_nb - 1) * bs();
    std::memcpy(&arena_[copy->dst.value * bs()], &arena_[copy->src.value * bs()],
                fill * sizeof(Slot));
    if (hold_) {
      auto d = cache_->copy_done(seq);
      if (!d || d.value() != tr.pending + 1)
        return fail("copy_done did not release exactly the pending copy sources");
      tr.pending = 0;
    }
  } else if (old_nb > 0 && post->block_ids[old_nb - 1] != pre->block_ids.back()) {
    return fail("moved its last block without a CopyOp");
  }
  free_pin_fork();
  if (!tr.tainted) write_tokens(*post, tr, old_tokens, n);
}

void Stress::op_fork(unsigned t, bool cross) {
  Worker& w = workers_[t];
  Tracked copy;
  const std::uint64_t dst = [&] {
    std::lock_guard<std::mutex> own(w.mu);
    return w.live.size() >= opt_.live ? 0 : w.next_id++;
  }();
  if (dst == 0) return;
  unsigned owner = t;
  if (cross && opt_.threads > 1) owner = (t + 1 + w.rng() % (opt_.threads - 1)) % opt_.threads;
  {
    Worker& o = workers_[owner];
    std::lock_guard<std::mutex> lk(o.mu);  // the source's owner cannot change it meanwhile
    if (o.live.empty()) return;
    ++w.stats.ops;
    const std::size_t idx = w.rng() % o.live.size();
    Tracked& src = o.live[idx];
    auto r = cache_->fork(SeqId{src.id}, SeqId{dst});
    if (!r) {
      expect_not_found(r.error(), src.id, "fork");
      if (owner == t) forget(o, idx, true);
      return;
    }
    w.ledger.created.push_back(dst);
    ++w.ledger.forks;
    ++w.stats.forks;
    if (owner != t) ++w.stats.cross_forks;
    if (owner != t) {
      // Blocks of this lineage are now held by two threads.
      for (Tracked& m : o.live)
        if (m.lineage == src.lineage) m.exported = true;
    }
    copy = src;
    copy.id = dst;
    copy.pending = 0;
    if (owner == t) {
      // A local fork joins the live list before the mutex is released: otherwise another
      // thread's cross fork of the lineage could mark the members exported in between and miss
      // this one (it would then append without the pin fork that keeps its copy source intact).
      w.live.push_back(std::move(copy));
      return;
    }
  }
  std::lock_guard<std::mutex> own(w.mu);
  w.live.push_back(std::move(copy));
}

void Stress::op_free(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  const std::uint64_t id = w.live[idx].id;
  auto r = cache_->free(SeqId{id});
  if (!r) {
    expect_not_found(r.error(), id, "free");
    return forget(w, idx, true);
  }
  ++w.stats.frees;
  w.ledger.freed.push_back(id);
  if (cache_->get_sequence(SeqId{id})) violation("free(" + s(id) + ") left the sequence visible");
  forget(w, idx, false);
}

void Stress::op_streaming(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  Tracked& tr = w.live[idx];
  const std::uint64_t sink = w.rng() % (bs() + 2);
  const std::uint64_t window = w.rng() % (2 * bs() + 1) + (sink == 0 ? 1 : 0);
  auto r = cache_->apply_streaming_llm(SeqId{tr.id}, sink, window);
  if (!r) {
    expect_not_found(r.error(), tr.id, "apply_streaming_llm");
    return forget(w, idx, true);
  }
  const std::uint64_t keep = sink + window;
  const std::uint64_t want = tr.tokens > keep ? tr.tokens - keep : 0;
  if (r.value() != want)
    return violation("apply_streaming_llm(" + s(tr.id) + ") dropped " + std::to_string(r.value()) +
                     ", expected " + std::to_string(want));
  if (want == 0) return;
  ++w.stats.streamed;
  if (!tr.tainted) {
    std::vector<std::uint64_t> kept(tr.keys.begin(),
                                    tr.keys.begin() + static_cast<std::ptrdiff_t>(sink));
    kept.insert(kept.end(), tr.keys.end() - static_cast<std::ptrdiff_t>(window), tr.keys.end());
    tr.keys = std::move(kept);
  }
  tr.tokens = keep;
}

void Stress::op_get(unsigned t) {
  Worker& w = workers_[t];
  std::lock_guard<std::mutex> own(w.mu);
  if (w.live.empty()) return;
  ++w.stats.ops;
  const std::size_t idx = w.rng() % w.live.size();
  Tracked& tr = w.live[idx];
  auto info = cache_->get_sequence(SeqId{tr.id});
  if (!info) return forget(w, idx, true);
  if (info->seq_id != SeqId{tr.id} || info->num_tokens != tr.tokens || !runs_ok(*info) ||
      info->priority != tr.priority || info->access_count == 0)
    violation("get_sequence(" + s(tr.id) + ") disagrees with its owner (tokens " +
              std::to_string(info->num_tokens) + " vs " + std::to_string(tr.tokens) + ")");
  if (w.rng() % 2 == 0) {
    const std::uint32_t p = static_cast<std::uint32_t>(w.rng() % 4);
    if (auto r = cache_->set_priority(SeqId{tr.id}, p); !r) {
      expect_not_found(r.error(), tr.id, "set_priority");
      return forget(w, idx, true);
    }
    tr.priority = p;
  }
}

void Stress::op_evict(unsigned t, bool to_threshold) {
  Worker& w = workers_[t];
  std::unique_lock<Gate> g(gate_, std::defer_lock);
  if (!hold_) g.lock();  // gate mode: nobody is writing KV data now
  ++w.stats.ops;
  ++w.stats.evict_calls;
  std::vector<SeqId> victims;
  if (to_threshold) {
    const double u = 0.5 + static_cast<double>(w.rng() % 45) / 100.0;
    auto r = cache_->evict_to_threshold(u);
    if (!r)
      return violation("evict_to_threshold(" + std::to_string(u) + "): " + r.error().message());
    victims = std::move(r).value();
  } else {
    auto r = cache_->evict();
    if (!r) {
      if (r.error().code() != Errc::invalid_operation ||
          r.error().message() != "Invalid operation: No sequences to evict")
        violation("evict: unexpected \"" + r.error().message() + "\"");
      return;
    }
    victims.push_back(r.value());
  }
  for (SeqId v : victims) {
    ++w.stats.evicted;
    w.ledger.evicted.push_back(v.value);
    if ((v.value >> 32) == 0 || (v.value >> 32) > opt_.threads)
      violation("evict returned " + pkv::to_string(v) + ", an id nobody created");
    // Gate mode: its owner can only re-create it holding the gate shared: it must be gone now.
    if (!hold_ && cache_->get_sequence(v))
      violation("evicted " + pkv::to_string(v) + " is still visible");
  }
  // Gate mode: no id is re-created meanwhile, so no id can be evicted twice. (Pin mode: an owner
  // may re-create an evicted id at once; the accounting still counts every incarnation.)
  std::sort(victims.begin(), victims.end());
  if (!hold_ && std::adjacent_find(victims.begin(), victims.end()) != victims.end())
    violation("evict_to_threshold returned a sequence twice");
}

void Stress::op_misc(unsigned t) {
  Worker& w = workers_[t];
  ++w.stats.ops;
  const std::size_t total = cache_->total_blocks();
  switch (w.rng() % 8) {
    case 0: {
      const std::size_t f = cache_->free_block_count();
      const double u = cache_->utilization();
      if (f > total || !(u >= 0.0 && u <= 1.0) || cache_->used_block_count() > total)
        violation("figures out of range");
      (void)cache_->needs_eviction();
      (void)cache_->used_memory_bytes();
      break;
    }
    case 1: {
      const pkv::CacheStats st = cache_->stats();
      if (st.peak_blocks_used > total) violation("peak_blocks_used > total blocks");
      (void)cache_->num_sequences();
      break;
    }
    case 2: {
      auto v = cache_->select_eviction_target();
      if (v && ((v->value >> 32) == 0 || (v->value >> 32) > opt_.threads))
        violation("select_eviction_target returned an id nobody created");
      break;
    }
    case 3: {
      if (w.rng() % 16 != 0) break;
      std::vector<SeqId> ids = cache_->sequence_ids();
      std::sort(ids.begin(), ids.end());
      if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
        violation("sequence_ids lists an id twice");
      break;
    }
    case 4: {
      if (w.rng() % 16 != 0) break;
      std::ostringstream os;
      os << *cache_;
      if (os.str().rfind("PagedKvCache\n  Strategy: ", 0) != 0) violation("operator<< form");
      break;
    }
    case 5: {
      if (w.rng() % 8 != 0) break;
      static const EvictionStrategy kValid[] = {
          EvictionStrategy::lru(), EvictionStrategy::lfu(), EvictionStrategy::longest_first(),
          EvictionStrategy::priority(4), EvictionStrategy::streaming_llm(2, 8)};
      if (auto r = cache_->set_eviction_strategy(kValid[w.rng() % 5]); !r)
        violation("set_eviction_strategy(valid): " + r.error().message());
      ++w.stats.strategy_changes;
      const EvictionStrategy bad =
          w.rng() % 2 ? EvictionStrategy::priority(0) : EvictionStrategy::streaming_llm(0, 0);
      if (auto r = cache_->set_eviction_strategy(bad);
          r || r.error().code() != Errc::invalid_argument)
        violation("set_eviction_strategy(invalid) was not rejected");
      (void)cache_->eviction_strategy();
      break;
    }
    case 6: {
      const double x = static_cast<double>(w.rng() % 140) / 100.0 - 0.2;
      if (auto r = cache_->set_eviction_threshold(x); !r) violation("set_eviction_threshold");
      const double e = cache_->eviction_threshold();
      if (!(e >= 0.0 && e <= 1.0)) violation("eviction_threshold out of 0..1");
      if (auto r = cache_->set_eviction_threshold(std::nan("")); r)
        violation("set_eviction_threshold(NaN) accepted");
      break;
    }
    default:
      op_bad_calls(t);
      break;
  }
}

// Calls that must fail the same way whatever the other threads do.
void Stress::op_bad_calls(unsigned t) {
  Worker& w = workers_[t];
  const std::uint64_t ghost = (std::uint64_t{0xFFFFFF} << 32) | (w.rng() % 1000);  // never created
  switch (w.rng() % 6) {
    case 0:
      if (auto r = cache_->append(SeqId{ghost}, 1); r)
        violation("append to a ghost succeeded");
      else
        expect_not_found(r.error(), ghost, "append(ghost)");
      break;
    case 1:
      if (auto r = cache_->free(SeqId{ghost}); r)
        violation("free of a ghost succeeded");
      else
        expect_not_found(r.error(), ghost, "free(ghost)");
      break;
    case 2:
      if (cache_->get_sequence(SeqId{ghost})) violation("get_sequence found a ghost");
      break;
    case 3:
      if (auto r = cache_->fork(SeqId{ghost}, SeqId{ghost}); r) {
        violation("fork onto itself succeeded");
      } else if (r.error().message() !=
                 "Invalid operation: Cannot fork sequence " + s(ghost) + " onto itself") {
        violation("fork onto itself: \"" + r.error().message() + "\"");
      }
      break;
    case 4:
      if (auto r = cache_->apply_streaming_llm(SeqId{ghost}, 0, 0);
          r || r.error().code() != Errc::invalid_argument)
        violation("apply_streaming_llm(0, 0) not rejected");
      break;
    default: {
      // allocate an id its owner believes alive: "already exists", or success if it was evicted.
      std::lock_guard<std::mutex> own(w.mu);
      if (w.live.empty()) break;
      const std::size_t idx = w.rng() % w.live.size();
      Tracked& tr = w.live[idx];
      std::shared_lock<Gate> g(gate_, std::defer_lock);
      if (!hold_) g.lock();
      auto r = cache_->allocate(SeqId{tr.id}, 1);
      if (r) {
        // It had been evicted; this is a new incarnation with one token.
        w.ledger.vanished.push_back(tr.id);
        w.ledger.created.push_back(tr.id);
        ++w.stats.vanished;
        if (hold_ && !pin(w, tr.id)) return forget(w, idx, false);
        Pinned pinned(*this, hold_ ? tr.id : 0);
        auto info = cache_->get_sequence(SeqId{tr.id});
        if (!info) return violation("re-allocated " + s(tr.id) + " is not visible");
        tr = Tracked{};
        tr.id = info->seq_id.value;
        tr.lineage = tr.id;
        tr.tokens = 1;
        write_tokens(*info, tr, 0, 1);
      } else if (r.error().code() == Errc::out_of_memory) {
        // Evicted meanwhile and no block free: forget it.
        forget(w, idx, true);
      } else if (r.error().message() !=
                 "Invalid operation: Sequence " + s(tr.id) + " already exists") {
        violation("allocate(existing " + s(tr.id) + "): \"" + r.error().message() + "\"");
      }
      break;
    }
  }
}

void Stress::worker(unsigned t) {
  Worker& w = workers_[t];
  std::uint64_t seen_epoch = 0;
  for (;;) {
    const std::uint64_t e = epoch_.load(std::memory_order_acquire);
    if (e != seen_epoch) {
      seen_epoch = e;
      barrier_->arrive_and_wait();  // the completion step checks everything
      continue;
    }
    if (stop_.load(std::memory_order_acquire)) break;
    const unsigned pick = static_cast<unsigned>(w.rng() % 1000);
    if (pick < 180) {
      op_allocate(t);
    } else if (pick < 572) {
      op_append(t, w.rng() % 100 < opt_.blind);
    } else if (pick < 580) {
      op_append_batch(t);
    } else if (pick < 670) {
      op_fork(t, w.rng() % 100 < opt_.cross);
    } else if (pick < 720) {
      op_free(t);
    } else if (pick < 750) {
      op_streaming(t);
    } else if (pick < 870) {
      op_get(t);
    } else if (pick < 880) {
      op_evict(t, false);
    } else if (pick < 882) {
      op_evict(t, true);
    } else {
      op_misc(t);
    }
    // A scheduler that runs out of blocks evicts (never while holding the gate shared).
    if (w.pressure) {
      w.pressure = false;
      if (w.rng() % 2 == 0) op_evict(t, false);
    }
  }
}

// ---- checks
// --------------------------------------------------------------------------------------

void Stress::quiescent_check(bool final) {
  ++checks_;
  if (std::string v = cache_->validate_unsafe(); !v.empty()) violation("validate_unsafe: " + v);

  // Sequence accounting.
  std::vector<std::uint64_t> vanished;
  for (Worker& w : workers_) {
    for (std::uint64_t id : w.ledger.created) accounts_[id].created += 1;
    for (std::uint64_t id : w.ledger.freed) accounts_[id].gone += 1;
    for (std::uint64_t id : w.ledger.evicted) accounts_[id].gone += 1;
    logged_evictions_ += w.ledger.evicted.size();
    logged_forks_ += w.ledger.forks;
    vanished.insert(vanished.end(), w.ledger.vanished.begin(), w.ledger.vanished.end());
    w.ledger = Ledger{};
  }
  std::vector<SeqId> ids = cache_->sequence_ids();
  std::unordered_map<std::uint64_t, bool> alive;
  for (SeqId id : ids) alive[id.value] = true;
  if (alive.size() != ids.size()) violation("sequence_ids lists an id twice");
  if (ids.size() != cache_->num_sequences())
    violation("num_sequences " + std::to_string(cache_->num_sequences()) +
              " != " + std::to_string(ids.size()) + " listed");
  for (SeqId id : ids) {
    auto it = accounts_.find(id.value);
    if (it == accounts_.end() || it->second.created - it->second.gone != 1)
      violation(pkv::to_string(id) + " is alive but was never created (or already freed)");
  }
  std::unordered_map<std::uint64_t, bool> tracked;
  for (Worker& w : workers_)
    for (const Tracked& tr : w.live) tracked[tr.id] = true;
  for (std::uint64_t id : vanished) {
    if (alive.contains(id) && !tracked.contains(id))
      violation(s(id) + " vanished for its owner but is alive");
    auto it = accounts_.find(id);
    if (it != accounts_.end() && it->second.gone == 0)
      violation(s(id) + " vanished for its owner but nobody freed or evicted it");
  }
  for (auto it = accounts_.begin(); it != accounts_.end();) {
    const std::int64_t d = it->second.created - it->second.gone;
    if (d < 0 || d > 1) {
      violation(s(it->first) + ": created " + std::to_string(it->second.created) +
                " times, freed or evicted " + std::to_string(it->second.gone) + " times");
    } else if (d == 1 && !alive.contains(it->first)) {
      violation(s(it->first) + " was lost: created, never freed nor evicted, not in the cache");
    }
    if (d == 0) {
      it = accounts_.erase(it);
    } else {
      ++it;
    }
  }

  // Counters (exact when quiescent).
  const pkv::CacheStats st = cache_->stats();
  const std::uint64_t used = cache_->used_block_count();
  if (st.total_evictions != logged_evictions_)
    violation("total_evictions " + std::to_string(st.total_evictions) +
              " != " + std::to_string(logged_evictions_) + " evictions returned to callers");
  if (st.total_forks != logged_forks_)
    violation("total_forks " + std::to_string(st.total_forks) +
              " != " + std::to_string(logged_forks_) + " successful forks");
  if (st.total_allocations - st.total_frees != used)
    violation("total_allocations - total_frees != used blocks");
  if (st.peak_blocks_used < used || st.peak_blocks_used > cache_->total_blocks())
    violation("peak_blocks_used out of range");
  if (cache_->free_block_count() + used != cache_->total_blocks())
    violation("free + used != total");

  // KV data of every tracked live sequence.
  for (Worker& w : workers_) {
    for (std::size_t i = 0; i < w.live.size();) {
      Tracked& tr = w.live[i];
      std::optional<SequenceInfo> info = cache_->get_sequence(SeqId{tr.id});
      if (!info) {  // evicted; accounting above proved it
        forget(w, i, false);
        continue;
      }
      ++i;
      if (info->num_tokens != tr.tokens) {
        violation(s(tr.id) + ": " + std::to_string(info->num_tokens) + " tokens, owner expects " +
                  std::to_string(tr.tokens));
        continue;
      }
      if (!runs_ok(*info)) violation(s(tr.id) + ": malformed token runs");
      if (tr.tainted) continue;
      for (std::uint64_t k = 0; k < tr.tokens; ++k) {
        const Slot want = [&] {
          Slot c;
          c.k = tr.keys[k];
          c.v = ~c.k * 0x9e3779b97f4a7c15ULL ^ 0x5a5a;
          return c;
        }();
        const Slot& got = slot_at(*info, k);
        ++tokens_checked_;
        if (std::memcmp(&got, &want, sizeof(Slot)) != 0) {
          violation(s(tr.id) + ": KV data of kept token " + std::to_string(k) + " is wrong (K " +
                    std::to_string(got.k) + ", expected " + std::to_string(want.k) + ")");
          break;
        }
      }
    }
  }

  if (!final) return;
  // Free everything: every block must come back.
  for (SeqId id : cache_->sequence_ids()) {
    if (auto r = cache_->free(id); !r) violation("final free(" + pkv::to_string(id) + ") failed");
  }
  for (Worker& w : workers_) w.live.clear();
  if (cache_->free_block_count() != cache_->total_blocks())
    violation("after freeing everything " + std::to_string(cache_->free_block_count()) + " of " +
              std::to_string(cache_->total_blocks()) + " blocks are free");
  if (cache_->num_sequences() != 0) violation("sequences left after freeing everything");
  if (std::string v = cache_->validate_unsafe(); !v.empty()) violation("final validate: " + v);
  const pkv::CacheStats end = cache_->stats();
  if (end.total_allocations != end.total_frees) violation("total_allocations != total_frees");
}

int Stress::run() {
  barrier_ = std::make_unique<std::barrier<OnQuiescent>>(static_cast<std::ptrdiff_t>(opt_.threads),
                                                         OnQuiescent{this});
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < opt_.threads; ++t) threads.emplace_back([this, t] { worker(t); });
  const auto deadline = start + std::chrono::duration<double>(opt_.seconds);
  for (;;) {
    const auto next = std::chrono::steady_clock::now() + std::chrono::milliseconds(opt_.check_ms);
    if (next >= deadline) {
      std::this_thread::sleep_until(deadline);
      break;
    }
    std::this_thread::sleep_until(next);
    const std::uint64_t e = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
    while (checked_.load(std::memory_order_acquire) != e)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop_.store(true, std::memory_order_release);
  for (std::thread& th : threads) th.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  quiescent_check(true);

  Stats total;
  for (const Worker& w : workers_) total.add(w.stats);
  const std::uint64_t v = violations_.load();
  std::printf("ops=%" PRIu64 " ops/s=%.0f allocs=%" PRIu64 " appends=%" PRIu64
              " blind_appends=%" PRIu64 " copies=%" PRIu64 " pin_forks=%" PRIu64 " forks=%" PRIu64
              " cross_forks=%" PRIu64 " frees=%" PRIu64 " evict_calls=%" PRIu64 " evicted=%" PRIu64
              " streamed=%" PRIu64 " oom=%" PRIu64 " vanished=%" PRIu64 " strategy_changes=%" PRIu64
              " checks=%" PRIu64 " tokens_checked=%" PRIu64 " violations=%" PRIu64 " seed=%" PRIu64
              "\n",
              total.ops, static_cast<double>(total.ops) / secs, total.allocs, total.appends,
              total.blind, total.copies, total.pin_forks, total.forks, total.cross_forks,
              total.frees, total.evict_calls, total.evicted, total.streamed, total.oom,
              total.vanished, total.strategy_changes, checks_, tokens_checked_, v, opt_.seed);
  return v == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (!o.seed_given) o.seed = std::random_device{}() * 0x100000001ULL ^ std::random_device{}();
  std::printf("pkv-stress: seed=%" PRIu64
              " threads=%u seconds=%.1f blocks=%zu block_size=%zu "
              "magazine=%u check_ms=%u live=%u blind=%u cross_fork=%u hold_copy_sources=%d "
              "affinity=%d%s\n",
              o.seed, o.threads, o.seconds, o.blocks, o.block_size, o.magazine, o.check_ms, o.live,
              o.blind, o.cross, o.hold < 0 ? static_cast<int>(o.seed & 1) : o.hold,
              affinity_of(o) ? 1 : 0, PKV_STRESS_TSAN ? " (tsan defaults)" : "");
  std::fflush(stdout);
  Stress stress(o);
  return stress.run();
}
