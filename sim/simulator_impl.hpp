// sim/simulator_impl.hpp — the scheduler simulator, a template over the cache type (internal).
//
// Model
//   Time is counted in scheduler steps. --workers threads run the steps in lockstep: in each step
//   every worker admits waiting requests (allocate, plus fork for --n / restored beams) and
//   decodes one token for each of its running sequences (append; beam search forks children from
//   surviving parents and frees the losers), all of them calling the one shared cache at the same
//   time. A StepBarrier separates steps; its completion runs with every worker parked, so the
//   bookkeeping there (arrivals, reconciling evictions, sampling, --verify checks, progress) sees
//   a quiescent cache and needs no locks of its own.
//
// Preemption (recompute)
//   When an append runs out of blocks the worker calls cache.evict(); the victim may be any live
//   sequence, including another worker's. The victim's whole request group is preempted: its other
//   sequences are freed and it goes back to the waiting queue with its tokens so far as its new
//   prompt (a group of several sequences is rebuilt as root + fork + append of each suffix). The
//   owner notices by sequence_not_found on its next call, or the step barrier reconciles the
//   victim list first. A group that holds every block of the cache and still needs one is aborted
//   (it can never fit), and so is a request whose final size exceeds the cache.
//
// --verify
//   One cookie per token slot in a host arena. Each kept token's expected cookie is (writer seq,
//   position); appends write it, every CopyOp is performed before, and at each full sample every
//   live sequence is read back through get_sequence (block_ids + slot_of). Writers hold a shared
//   gate while they call the cache and write the arena; evict() takes it exclusively, so a block
//   is never freed by another worker while its owner is still writing it.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pkv/types.hpp"
#include "report.hpp"
#include "simulator.hpp"
#include "workload.hpp"

namespace pkv::sim::detail {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// A reusable barrier whose completion runs in the last thread to arrive, while the others wait.
class StepBarrier {
 public:
  StepBarrier(std::size_t n, std::function<void()> completion)
      : n_(n), completion_(std::move(completion)) {}

  void arrive_and_wait() {
    std::unique_lock lock(mu_);
    const std::uint64_t gen = generation_;
    if (++arrived_ == n_) {
      completion_();
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const std::size_t n_;
  std::size_t arrived_ = 0;
  std::uint64_t generation_ = 0;
  std::function<void()> completion_;
};

/// --verify's gate: writers shared, evict() exclusive. A no-op when verification is off.
class Gate {
 public:
  explicit Gate(bool on) : on_(on) {}
  void lock_shared() {
    if (on_) mu_.lock_shared();
  }
  void unlock_shared() {
    if (on_) mu_.unlock_shared();
  }
  void lock() {
    if (on_) mu_.lock();
  }
  void unlock() {
    if (on_) mu_.unlock();
  }

 private:
  bool on_;
  std::shared_mutex mu_;
};

inline std::uint64_t cookie(std::uint64_t writer, std::uint64_t position) {
  return splitmix64(writer ^ 0x5bd1e9955bd1e995ULL) + position * 0x9e3779b97f4a7c15ULL + 1;
}
constexpr std::uint64_t kPromptWriter = std::uint64_t{1} << 63;
constexpr unsigned kLocalBits = 24;  // SeqId = request id << 24 | per-request counter

struct SeqState {
  SeqId id{};
  std::uint32_t kept = 0;              ///< tokens the cache holds for it
  std::uint32_t prompt_prefix = 0;     ///< leading kept tokens that are the request's prompt
  std::uint32_t generated = 0;         ///< sampling: tokens decoded by this sample
  std::uint32_t target = 0;            ///< sampling: this sample's output length
  std::uint64_t position = 0;          ///< logical position of the next token (cookies)
  std::vector<std::uint64_t> cookies;  ///< --verify: expected cookie of each kept token
};

struct Group {
  Request req;
  std::vector<SeqState> seqs;
  std::uint32_t beam_generated = 0;
  std::uint32_t preemptions = 0;
  std::uint32_t next_local = 0;
  bool admitted_once = false;
  Rng rng{0};
};

enum class Outcome : std::uint8_t { running, finished, preempted, aborted, fatal };

struct Stats {
  LatencyHistogram hist[kNumOps];
  std::uint64_t failed_calls = 0;
  std::uint64_t cow_copies = 0;
  std::uint64_t forks = 0;
  std::uint64_t preemptions = 0;
  std::uint64_t evictions = 0;
  std::uint64_t trims = 0;
  std::uint64_t dropped = 0;
  std::uint64_t output_tokens = 0;
  std::uint64_t prompt_tokens = 0;
  std::uint64_t recomputed_tokens = 0;
  std::uint64_t finished = 0;
  std::uint64_t aborted = 0;

  void merge(const Stats& o) {
    for (std::size_t i = 0; i < kNumOps; ++i) hist[i].merge(o.hist[i]);
    failed_calls += o.failed_calls;
    cow_copies += o.cow_copies;
    forks += o.forks;
    preemptions += o.preemptions;
    evictions += o.evictions;
    trims += o.trims;
    dropped += o.dropped;
    output_tokens += o.output_tokens;
    prompt_tokens += o.prompt_tokens;
    recomputed_tokens += o.recomputed_tokens;
    finished += o.finished;
    aborted += o.aborted;
  }
};

/// Who makes cache calls: a worker, or the step barrier's completion.
struct Ctx {
  Stats st;
  std::string error;
};

struct Worker {
  std::uint32_t index = 0;
  Ctx ctx;
  std::vector<std::unique_ptr<Group>> running;
};

template <class Cache>
class Simulator {
 public:
  Simulator(const Options& options, Cache& cache, std::string name, const ProgressFn& progress)
      : o_(options),
        cache_(cache),
        name_(std::move(name)),
        progress_(progress),
        bs_(options.block_size),
        stream_(options),
        gate_(options.verify) {
    const auto& s = o_.evict.strategy;
    streaming_ = s.kind() == EvictionStrategy::Kind::streaming_llm;
    priority_ = s.kind() == EvictionStrategy::Kind::priority;
    watermark_blocks_ = static_cast<std::size_t>(o_.watermark * static_cast<double>(o_.blocks));
    per_worker_seqs_ = (o_.max_seqs + o_.workers - 1) / o_.workers;
    if (o_.verify) arena_.assign(o_.blocks * bs_, 0);
    block_fill_.assign(o_.blocks, 0);
    block_stamp_.assign(o_.blocks, 0);
  }

  Report run() {
    Report r;
    r.cache_name = name_;
    r.config = describe(o_);
    r.total_blocks = o_.blocks;
    r.block_size = bs_;
    r.verified = o_.verify;
    start_ = Clock::now();
    last_progress_ = start_;
    if (auto sr = cache_.set_eviction_strategy(o_.evict.strategy); !sr) {
      r.error = "set_eviction_strategy: " + sr.error().message();
      return r;
    }
    for (std::uint32_t i = 0; i < o_.workers; ++i) {
      workers_.push_back(std::make_unique<Worker>());
      workers_.back()->index = i;
    }
    release_arrivals();
    rescue_if_idle();
    {
      // An exception (out of memory) in a worker or between steps ends the run with an error
      // instead of terminating the process; every worker still reaches the barrier.
      StepBarrier barrier(o_.workers, [this] {
        try {
          on_step_end();
        } catch (const std::exception& e) {
          if (barrier_.error.empty()) barrier_.error = std::string("between steps: ") + e.what();
          stop_ = true;
        }
      });
      std::vector<std::thread> threads;
      threads.reserve(o_.workers);
      for (auto& w : workers_) {
        threads.emplace_back([this, &barrier, wp = w.get()] {
          while (!stop_) {
            try {
              step(*wp);
            } catch (const std::exception& e) {
              if (wp->ctx.error.empty()) wp->ctx.error = std::string("worker: ") + e.what();
            }
            barrier.arrive_and_wait();
          }
        });
      }
      for (auto& t : threads) t.join();
    }
    finish(r);
    return r;
  }

 private:
  // ---- timed cache calls ----------------------------------------------------------------------
  template <class F>
  auto timed(Stats& st, Op op, F&& f) {
    const auto t0 = Clock::now();
    auto result = f();
    const auto t1 = Clock::now();
    st.hist[static_cast<std::size_t>(op)].record(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
    if (!result) ++st.failed_calls;
    return result;
  }

  static std::string fail(const char* what, SeqId id, const Error& e) {
    return std::string(what) + "(" + to_string(id) + "): " + e.message();
  }

  SeqId new_id(Group& g) {
    const std::uint64_t local = g.next_local++ & ((std::uint64_t{1} << kLocalBits) - 1);
    return SeqId{(g.req.id << kLocalBits) | local};
  }

  static bool owns(const Group& g, SeqId id) {
    return std::any_of(g.seqs.begin(), g.seqs.end(), [&](const SeqState& s) { return s.id == id; });
  }

  /// Frees a sequence; one that was evicted meanwhile is fine. False on any other error.
  bool free_seq(Ctx& c, SeqId id) {
    auto r = timed(c.st, Op::free, [&] { return cache_.free(id); });
    if (!r && r.error().code() != Errc::sequence_not_found) {
      c.error = fail("free", id, r.error());
      return false;
    }
    return true;
  }

  void release_group(Ctx& c, Group& g) {
    for (const auto& s : g.seqs) free_seq(c, s.id);
  }

  // ---- --verify arena ---------------------------------------------------------------------------
  void copy_block(const CopyOp& op) {
    const std::size_t src = op.src.value * bs_;
    const std::size_t dst = op.dst.value * bs_;
    std::copy(arena_.begin() + static_cast<std::ptrdiff_t>(src),
              arena_.begin() + static_cast<std::ptrdiff_t>(src + bs_),
              arena_.begin() + static_cast<std::ptrdiff_t>(dst));
  }

  /// Writes kept tokens [from, to) of `s` into the arena through its block table.
  bool write_tokens(Ctx& c, const SeqState& s, std::uint32_t from, std::uint32_t to) {
    if (!o_.verify || from >= to) return true;
    auto info = cache_.get_sequence(s.id);
    if (!info) {
      c.error = "--verify: " + to_string(s.id) + " vanished while its owner was writing it";
      return false;
    }
    for (std::uint32_t i = from; i < to; ++i) {
      const std::uint64_t slot = info->slot_of(i);
      if (slot / bs_ >= info->block_ids.size()) {
        c.error = "--verify: token " + std::to_string(i) + " of " + to_string(s.id) +
                  " maps to slot " + std::to_string(slot) + " beyond its " +
                  std::to_string(info->block_ids.size()) + " blocks";
        return false;
      }
      arena_[info->block_ids[slot / bs_].value * bs_ + slot % bs_] = s.cookies[i];
    }
    return true;
  }

  void push_cookies(SeqState& s, std::uint32_t n) {
    if (o_.verify) {
      for (std::uint32_t k = 0; k < n; ++k) s.cookies.push_back(cookie(s.id.value, s.position + k));
    }
    s.position += n;
  }

  // ---- groups -----------------------------------------------------------------------------------
  std::unique_ptr<Group> make_group(const Request& req) {
    auto g = std::make_unique<Group>();
    g->req = req;
    g->rng = Rng(req.rng_seed);
    SeqState base;
    base.kept = req.prompt;
    base.prompt_prefix = req.prompt;
    base.position = req.prompt;
    if (o_.verify) {
      base.cookies.reserve(req.prompt);
      for (std::uint32_t p = 0; p < req.prompt; ++p) {
        base.cookies.push_back(cookie(kPromptWriter | req.id, p));
      }
    }
    if (o_.beam_width > 0) {
      base.target = req.outputs.at(0);
      g->seqs.push_back(base);
    } else {
      for (auto out : req.outputs) {
        g->seqs.push_back(base);
        g->seqs.back().target = out;
      }
    }
    return g;
  }

  static std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

  /// Blocks a (re)admission takes: the shared prompt prefix once, each sequence's rest apart.
  std::size_t blocks_needed(const Group& g) const {
    std::uint32_t prefix = g.seqs.front().prompt_prefix;
    for (const auto& s : g.seqs) prefix = std::min(prefix, s.prompt_prefix);
    const std::size_t shared_full = prefix / bs_;
    std::size_t need = 0;
    for (const auto& s : g.seqs) need += ceil_div(s.kept, bs_);
    return need - (g.seqs.size() - 1) * shared_full;
  }

  /// Lower bound on the blocks the request needs by its end; more than the cache -> never fits.
  std::size_t final_blocks_lower_bound(const Request& req) const {
    const std::size_t p = req.prompt;
    if (o_.beam_width > 0) return ceil_div(p + req.outputs[0], bs_) - 1 + o_.beam_width;
    std::size_t need = 0;
    for (auto out : req.outputs) need += ceil_div(p + out, bs_) - p / bs_;
    return need + p / bs_;
  }

  std::size_t group_seq_budget(const Group& g) const {
    return o_.beam_width > 0 ? std::max<std::size_t>(o_.beam_width, g.seqs.size()) : g.seqs.size();
  }

  enum class Admit : std::uint8_t { ok, no_room, evicted, fatal };

  /// Puts a waiting group into the cache: allocate (one sequence), or allocate the common prompt,
  /// fork it and append each sequence's own tokens (recompute of a preempted group).
  Admit restore(Ctx& c, Group& g, bool use_watermark) {
    if (use_watermark && cache_.free_block_count() < blocks_needed(g) + watermark_blocks_) {
      return Admit::no_room;
    }
    for (auto& s : g.seqs) s.id = new_id(g);
    std::vector<SeqId> created;
    auto rollback = [&](Admit why) {
      for (auto id : created) free_seq(c, id);
      return c.error.empty() ? why : Admit::fatal;
    };
    auto classify = [&](const char* what, SeqId id, const Error& e) {
      if (e.code() == Errc::out_of_memory) return rollback(Admit::no_room);
      if (e.code() == Errc::sequence_not_found) return rollback(Admit::evicted);
      c.error = fail(what, id, e);
      return rollback(Admit::fatal);
    };
    std::uint32_t prefix = g.seqs.front().prompt_prefix;
    for (const auto& s : g.seqs) prefix = std::min(prefix, s.prompt_prefix);
    const bool single = g.seqs.size() == 1;
    SeqState& root = g.seqs.front();
    const std::uint32_t root_tokens = single ? root.kept : prefix;
    std::uint64_t tokens = root_tokens;
    {
      std::shared_lock lock(gate_);
      auto r = timed(c.st, Op::allocate, [&] { return cache_.allocate(root.id, root_tokens); });
      if (!r) return classify("allocate", root.id, r.error());
      created.push_back(root.id);
      if (!write_tokens(c, root, 0, root_tokens)) return rollback(Admit::fatal);
    }
    if (!single) {
      for (std::size_t i = 1; i < g.seqs.size(); ++i) {
        auto r = timed(c.st, Op::fork, [&] { return cache_.fork(root.id, g.seqs[i].id); });
        if (!r) return classify("fork", root.id, r.error());
        ++c.st.forks;
        created.push_back(g.seqs[i].id);
      }
      for (auto& s : g.seqs) {
        if (s.kept <= prefix) continue;
        std::shared_lock lock(gate_);
        auto r = timed(c.st, Op::append, [&] { return cache_.append(s.id, s.kept - prefix); });
        if (!r) return classify("append", s.id, r.error());
        if (r.value()) {
          ++c.st.cow_copies;
          if (o_.verify) copy_block(*r.value());
        }
        tokens += s.kept - prefix;
        if (!write_tokens(c, s, prefix, s.kept)) return rollback(Admit::fatal);
      }
    }
    if (priority_) {
      for (const auto& s : g.seqs) {
        auto r = timed(c.st, Op::set_priority,
                       [&] { return cache_.set_priority(s.id, g.req.priority); });
        if (!r) return classify("set_priority", s.id, r.error());
      }
    }
    if (g.admitted_once) {
      c.st.recomputed_tokens += tokens;
    } else {
      c.st.prompt_tokens += tokens;
      g.admitted_once = true;
    }
    return Admit::ok;
  }

  void requeue(std::unique_ptr<Group> g) {
    std::lock_guard lock(queue_mu_);
    // Waiting requests stay in arrival (= id) order, so a preempted one goes back near the front.
    auto pos = std::upper_bound(
        waiting_.begin(), waiting_.end(), g->req.id,
        [](std::uint64_t id, const std::unique_ptr<Group>& x) { return id < x->req.id; });
    waiting_.insert(pos, std::move(g));
  }

  std::unique_ptr<Group> pop_waiting() {
    std::lock_guard lock(queue_mu_);
    if (waiting_.empty()) return nullptr;
    auto g = std::move(waiting_.front());
    waiting_.pop_front();
    return g;
  }

  void push_front_waiting(std::unique_ptr<Group> g) {
    std::lock_guard lock(queue_mu_);
    waiting_.push_front(std::move(g));
  }

  void admit(Worker& w) {
    std::size_t running = 0;
    for (const auto& g : w.running) running += group_seq_budget(*g);
    while (w.ctx.error.empty()) {
      auto g = pop_waiting();
      if (!g) return;
      if (running + group_seq_budget(*g) > per_worker_seqs_ && running > 0) {
        push_front_waiting(std::move(g));
        return;
      }
      const Admit a = restore(w.ctx, *g, /*use_watermark=*/true);
      if (a != Admit::ok) {
        push_front_waiting(std::move(g));
        return;
      }
      running += group_seq_budget(*g);
      w.running.push_back(std::move(g));
    }
  }

  // ---- decoding ---------------------------------------------------------------------------------
  /// True when `g` alone holds every block of the cache (so it can never grow).
  bool group_fills_cache(const Group& g) {
    if (cache_.num_sequences() > g.seqs.size()) return false;
    std::vector<std::uint32_t> ids;
    for (const auto& s : g.seqs) {
      if (auto info = cache_.get_sequence(s.id)) {
        for (auto b : info->block_ids) ids.push_back(b.value);
      }
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids.size() >= cache_.total_blocks();
  }

  /// Appends n tokens to g.seqs[i], evicting (by the strategy) while the cache is full.
  Outcome append_tokens(Ctx& c, Group& g, std::size_t i, std::uint32_t n) {
    for (std::uint64_t attempt = 0;; ++attempt) {
      Errc code{};
      {
        std::shared_lock lock(gate_);
        SeqState& s = g.seqs[i];
        auto r = timed(c.st, Op::append, [&] { return cache_.append(s.id, n); });
        if (r) {
          if (r.value()) {
            ++c.st.cow_copies;
            if (o_.verify) copy_block(*r.value());
          }
          push_cookies(s, n);
          s.kept += n;
          if (!write_tokens(c, s, s.kept - n, s.kept)) return Outcome::fatal;
          return Outcome::running;
        }
        code = r.error().code();
        if (code != Errc::out_of_memory && code != Errc::sequence_not_found) {
          c.error = fail("append", s.id, r.error());
          return Outcome::fatal;
        }
      }
      if (code == Errc::sequence_not_found) return Outcome::preempted;
      if (group_fills_cache(g)) return Outcome::aborted;
      if (attempt > 1'000'000) {
        c.error = "append(" + to_string(g.seqs[i].id) + ") found no memory after 10^6 evictions";
        return Outcome::fatal;
      }
      std::optional<SeqId> victim;
      {
        std::unique_lock lock(gate_);
        auto v = timed(c.st, Op::evict, [&] { return cache_.evict(); });
        if (v) victim = v.value();
      }
      if (!victim) continue;  // nothing left to evict: the blocks were freed meanwhile
      ++c.st.evictions;
      {
        std::lock_guard lock(evicted_mu_);
        evicted_.push_back(*victim);
      }
      if (owns(g, *victim)) return Outcome::preempted;
    }
  }

  /// StreamingLLM: once a sequence holds a block beyond sink + window, drop its middle tokens.
  Outcome maybe_trim(Ctx& c, SeqState& s) {
    if (!streaming_) return Outcome::running;
    const std::size_t sink = o_.evict.strategy.sink_tokens();
    const std::size_t window = o_.evict.strategy.window_tokens();
    if (s.kept < sink + window + bs_) return Outcome::running;
    std::shared_lock lock(gate_);
    auto r =
        timed(c.st, Op::streaming, [&] { return cache_.apply_streaming_llm(s.id, sink, window); });
    if (!r) {
      if (r.error().code() == Errc::sequence_not_found) return Outcome::preempted;
      c.error = fail("apply_streaming_llm", s.id, r.error());
      return Outcome::fatal;
    }
    const std::size_t expect = s.kept - sink - window;
    if (r.value() != expect) {
      c.error = "apply_streaming_llm(" + to_string(s.id) + ") dropped " +
                std::to_string(r.value()) + " tokens, expected " + std::to_string(expect);
      return Outcome::fatal;
    }
    s.kept -= static_cast<std::uint32_t>(expect);
    s.prompt_prefix = std::min<std::uint32_t>(s.prompt_prefix, static_cast<std::uint32_t>(sink));
    if (o_.verify) {
      const auto first = s.cookies.begin() + static_cast<std::ptrdiff_t>(sink);
      s.cookies.erase(first, first + static_cast<std::ptrdiff_t>(expect));
    }
    ++c.st.trims;
    c.st.dropped += expect;
    return Outcome::running;
  }

  Outcome settle(Ctx& c, Group& g, Outcome oc) {
    if (oc == Outcome::preempted) {
      release_group(c, g);
      ++g.preemptions;
      ++c.st.preemptions;
    } else if (oc == Outcome::aborted) {
      release_group(c, g);
    }
    return c.error.empty() ? oc : Outcome::fatal;
  }

  Outcome decode_samples(Ctx& c, Group& g) {
    for (std::size_t i = 0; i < g.seqs.size();) {
      Outcome oc = append_tokens(c, g, i, 1);
      if (oc == Outcome::running) oc = maybe_trim(c, g.seqs[i]);
      if (oc != Outcome::running) return settle(c, g, oc);
      ++c.st.output_tokens;
      SeqState& s = g.seqs[i];
      if (++s.generated >= s.target) {
        if (!free_seq(c, s.id)) return Outcome::fatal;
        g.seqs.erase(g.seqs.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
    return g.seqs.empty() ? Outcome::finished : Outcome::running;
  }

  Outcome decode_beams(Ctx& c, Group& g) {
    // Each of the K new beams picks a parent uniformly among the current beams (a neutral
    // Wright-Fisher model of which candidates survive the top-K cut).
    const std::size_t parents = g.seqs.size();
    std::vector<std::uint32_t> children(parents, 0);
    for (std::uint32_t j = 0; j < o_.beam_width; ++j) ++children[g.rng.below(parents)];
    std::vector<SeqState> survivors;
    std::vector<std::uint32_t> survivor_children;
    for (std::size_t i = 0; i < parents; ++i) {
      if (children[i] == 0) {
        if (!free_seq(c, g.seqs[i].id)) return Outcome::fatal;
      } else {
        survivors.push_back(std::move(g.seqs[i]));
        survivor_children.push_back(children[i]);
      }
    }
    g.seqs = std::move(survivors);
    const std::size_t kept_parents = g.seqs.size();
    for (std::size_t i = 0; i < kept_parents; ++i) {
      for (std::uint32_t k = 1; k < survivor_children[i]; ++k) {
        SeqState child = g.seqs[i];
        child.id = new_id(g);
        const SeqId parent = g.seqs[i].id;
        auto r = timed(c.st, Op::fork, [&] { return cache_.fork(parent, child.id); });
        if (!r) {
          if (r.error().code() == Errc::sequence_not_found) {
            return settle(c, g, Outcome::preempted);
          }
          c.error = fail("fork", parent, r.error());
          return Outcome::fatal;
        }
        ++c.st.forks;
        g.seqs.push_back(std::move(child));
        if (priority_) {
          auto p = timed(c.st, Op::set_priority,
                         [&] { return cache_.set_priority(g.seqs.back().id, g.req.priority); });
          if (!p && p.error().code() == Errc::sequence_not_found) {
            return settle(c, g, Outcome::preempted);
          }
        }
      }
    }
    for (std::size_t i = 0; i < g.seqs.size(); ++i) {
      Outcome oc = append_tokens(c, g, i, 1);
      if (oc == Outcome::running) oc = maybe_trim(c, g.seqs[i]);
      if (oc != Outcome::running) return settle(c, g, oc);
      ++c.st.output_tokens;
    }
    if (++g.beam_generated >= g.req.outputs[0]) {
      release_group(c, g);
      return c.error.empty() ? Outcome::finished : Outcome::fatal;
    }
    return Outcome::running;
  }

  void step(Worker& w) {
    admit(w);
    for (auto& gp : w.running) {
      if (!w.ctx.error.empty()) break;
      Group& g = *gp;
      const Outcome oc = o_.beam_width > 0 ? decode_beams(w.ctx, g) : decode_samples(w.ctx, g);
      switch (oc) {
        case Outcome::running:
        case Outcome::fatal:
          break;
        case Outcome::finished:
          ++w.ctx.st.finished;
          gp.reset();
          break;
        case Outcome::aborted:
          ++w.ctx.st.aborted;
          gp.reset();
          break;
        case Outcome::preempted:
          requeue(std::move(gp));
          break;
      }
    }
    std::erase_if(w.running, [](const std::unique_ptr<Group>& g) { return g == nullptr; });
    if (o_.step_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(o_.step_us));
  }

  // ---- between steps (all workers parked) -------------------------------------------------------
  void release_arrivals() {
    while (!stream_.exhausted() && stream_.next_arrival() <= vstep_) {
      if (waiting_.size() >= kMaxWaiting) {  // overload: hold arrivals back instead of growing
        ++throttled_steps_;
        return;
      }
      const Request req = stream_.next();
      prompt_sum_ += req.prompt;
      for (auto out : req.outputs) output_sum_ += out;
      outputs_drawn_ += req.outputs.size();
      if (!streaming_ && final_blocks_lower_bound(req) > o_.blocks) {
        ++barrier_.st.aborted;  // can never fit: reported, never admitted
        continue;
      }
      auto g = make_group(req);
      std::lock_guard lock(queue_mu_);
      waiting_.push_back(std::move(g));
    }
  }

  /// Sequences evicted during the step whose owners did not notice: preempt their groups now.
  void reconcile_evictions() {
    std::vector<SeqId> victims;
    {
      std::lock_guard lock(evicted_mu_);
      victims.swap(evicted_);
    }
    if (victims.empty()) return;
    std::unordered_map<std::uint64_t, std::unique_ptr<Group>*> by_request;
    for (auto& w : workers_) {
      for (auto& g : w->running) {
        if (g) by_request[g->req.id] = &g;
      }
    }
    for (auto id : victims) {
      auto it = by_request.find(id.value >> kLocalBits);
      if (it == by_request.end() || !*it->second || !owns(**it->second, id)) continue;
      auto& slot = *it->second;
      settle(barrier_, *slot, Outcome::preempted);
      requeue(std::move(slot));
      by_request.erase(it);
    }
    for (auto& w : workers_) {
      std::erase_if(w->running, [](const std::unique_ptr<Group>& g) { return g == nullptr; });
    }
  }

  bool all_idle() const {
    return std::all_of(workers_.begin(), workers_.end(),
                       [](const auto& w) { return w->running.empty(); });
  }

  /// With nothing running the queue head gets the whole cache (no watermark); a head that does
  /// not fit even then is aborted.
  void rescue_if_idle() {
    while (all_idle() && cache_.num_sequences() == 0 && barrier_.error.empty()) {
      auto g = pop_waiting();
      if (!g) return;
      const Admit a = restore(barrier_, *g, /*use_watermark=*/false);
      if (a == Admit::ok) {
        workers_.front()->running.push_back(std::move(g));
        return;
      }
      if (a == Admit::fatal) return;
      ++barrier_.st.aborted;
    }
  }

  void sample() {
    const std::size_t used = cache_.used_block_count();
    const std::size_t live = cache_.num_sequences();
    const double util = static_cast<double>(used) / static_cast<double>(o_.blocks);
    util_sum_ += util;
    util_peak_ = std::max(util_peak_, util);
    ++util_samples_;
    std::size_t waiting = 0;
    {
      std::lock_guard lock(queue_mu_);
      waiting = waiting_.size();
    }
    last_util_ = util;
    last_live_ = live;
    last_waiting_ = waiting;
    if (steps_run_ % series_stride_ == 0) {
      series_.push_back(Sample{vstep_, seconds_since(start_), used, live, waiting});
      if (series_.size() >= 2 * kMaxSeries) {
        std::vector<Sample> half;
        for (std::size_t i = 0; i < series_.size(); i += 2) half.push_back(series_[i]);
        series_ = std::move(half);
        series_stride_ *= 2;
      }
    }
    if (steps_run_ % o_.sample_every == 0 && live > 0) full_sample(used, live);
  }

  /// Reads every live sequence back: block-table lengths (sharing), fill (waste), cookies.
  void full_sample(std::size_t used, std::size_t live) {
    ++stamp_;
    seen_blocks_.clear();
    std::uint64_t logical = 0;
    std::uint64_t distinct = 0;
    std::uint64_t stored = 0;
    std::size_t sim_live = 0;
    std::vector<std::uint32_t> per_index;
    for (const auto& w : workers_) {
      for (const auto& g : w->running) {
        for (const auto& s : g->seqs) {
          ++sim_live;
          auto info = cache_.get_sequence(s.id);
          if (!info) {
            verify_error(to_string(s.id) + " is running but the cache does not know it");
            continue;
          }
          logical += info->block_ids.size();
          per_index.assign(info->block_ids.size(), 0);
          auto runs = info->token_runs;
          if (runs.empty() && info->num_tokens > 0) runs.push_back({0, 0, info->num_tokens});
          for (const auto& run : runs) {
            for (std::uint64_t a = run.slot, end = run.slot + run.length; a < end;) {
              const std::uint64_t idx = a / bs_;
              const std::uint64_t stop = std::min<std::uint64_t>(end, (idx + 1) * bs_);
              if (idx < per_index.size()) per_index[idx] += static_cast<std::uint32_t>(stop - a);
              a = stop;
            }
          }
          for (std::size_t k = 0; k < info->block_ids.size(); ++k) {
            const auto b = info->block_ids[k].value;
            if (b >= o_.blocks) continue;
            if (block_stamp_[b] != stamp_) {
              block_stamp_[b] = stamp_;
              block_fill_[b] = 0;
              seen_blocks_.push_back(b);
              ++distinct;
            }
            block_fill_[b] = std::max(block_fill_[b], per_index[k]);
          }
          if (o_.verify) check_sequence(s, *info);
        }
      }
    }
    for (auto b : seen_blocks_) stored += block_fill_[b];
    if (distinct != used || sim_live != live) {
      ++accounting_mismatches_;
      if (o_.verify) {
        verify_error("at step " + std::to_string(vstep_) + " the block tables hold " +
                     std::to_string(distinct) + " distinct blocks and the simulator " +
                     std::to_string(sim_live) + " sequences, the cache reports " +
                     std::to_string(used) + " used blocks and " + std::to_string(live) +
                     " sequences");
      }
    }
    logical_sum_ += logical;
    physical_sum_ += distinct;
    slots_sum_ += distinct * bs_;
    stored_sum_ += stored;
    ++sharing_samples_;
    if (o_.verify) {
      if (auto v = cache_.validate_unsafe(); !v.empty()) verify_error("validate_unsafe: " + v);
    }
  }

  void check_sequence(const SeqState& s, const SequenceInfo& info) {
    ++verify_seqs_;
    if (info.num_tokens != s.kept) {
      verify_error(to_string(s.id) + " holds " + std::to_string(info.num_tokens) +
                   " tokens, the simulator expects " + std::to_string(s.kept));
      return;
    }
    for (std::uint32_t i = 0; i < s.kept; ++i) {
      const std::uint64_t slot = info.slot_of(i);
      if (slot / bs_ >= info.block_ids.size()) {
        verify_error("token " + std::to_string(i) + " of " + to_string(s.id) +
                     " maps beyond its block table");
        return;
      }
      const BlockId b = info.block_ids[slot / bs_];
      const std::uint64_t got = arena_[b.value * bs_ + slot % bs_];
      ++verify_tokens_;
      if (got != s.cookies[i]) {
        verify_error("token " + std::to_string(i) + " of " + to_string(s.id) + " (slot " +
                     std::to_string(slot) + " in " + to_string(b) +
                     ") holds another token's data: copy-on-write or block accounting is broken");
        return;
      }
    }
  }

  void verify_error(const std::string& msg) {
    if (barrier_.error.empty()) barrier_.error = "--verify: " + msg;
  }

  Stats totals() const {
    Stats t;
    t.merge(barrier_.st);
    for (const auto& w : workers_) t.merge(w->ctx.st);
    return t;
  }

  void on_step_end() {
    ++steps_run_;
    for (const auto& w : workers_) {
      if (!w->ctx.error.empty() && barrier_.error.empty()) barrier_.error = w->ctx.error;
    }
    reconcile_evictions();
    sample();
    const Stats t = totals();
    const std::uint64_t done = t.finished + t.aborted;
    const bool all_done = stream_.exhausted() && done >= stream_.drawn();
    if (t.output_tokens != stall_tokens_ || done != stall_done_) {
      stall_tokens_ = t.output_tokens;
      stall_done_ = done;
      stall_steps_ = 0;
    } else if (!all_idle() || last_waiting_ > 0) {
      if (++stall_steps_ > 100000) barrier_.error = "no progress in 100000 steps (livelock)";
    }
    const bool out_of_time = o_.duration_s > 0 && seconds_since(start_) >= o_.duration_s;
    const bool out_of_steps = o_.max_steps > 0 && steps_run_ >= o_.max_steps;
    if (all_done || out_of_time || out_of_steps || !barrier_.error.empty()) stop_ = true;
    if (progress_ && (stop_ || seconds_since(last_progress_) >= 0.1)) {
      last_progress_ = Clock::now();
      report_progress(t, stop_);
    }
    if (stop_) return;
    ++vstep_;
    if (all_idle() && cache_.num_sequences() == 0 && last_waiting_ == 0 && !stream_.exhausted()) {
      vstep_ = std::max(vstep_, stream_.next_arrival());  // nothing to do until the next arrival
    }
    release_arrivals();
    rescue_if_idle();
  }

  void report_progress(const Stats& t, bool final) {
    Progress p;
    p.step = vstep_;
    p.wall_s = seconds_since(start_);
    p.done = t.finished + t.aborted;
    p.total = o_.requests;
    p.output_tokens = t.output_tokens;
    p.utilization = last_util_;
    p.running_seqs = last_live_;
    p.waiting = last_waiting_;
    p.preemptions = t.preemptions;
    p.final = final;
    progress_(p);
  }

  void finish(Report& r) {
    r.wall_s = seconds_since(start_);
    r.steps = steps_run_;
    // Stop: whatever still runs or waits is reported unfinished, and its blocks are freed.
    std::uint64_t unfinished = 0;
    for (auto& w : workers_) {
      for (auto& g : w->running) {
        release_group(barrier_, *g);
        ++unfinished;
      }
      w->running.clear();
    }
    {
      std::lock_guard lock(queue_mu_);
      unfinished += waiting_.size();
      waiting_.clear();
    }
    const Stats t = totals();
    r.requests = o_.requests != 0 ? o_.requests : stream_.drawn();
    r.finished = t.finished;
    r.aborted = t.aborted;
    r.unfinished = unfinished;
    r.not_arrived = r.requests - stream_.drawn();
    if (stream_.drawn() > 0) r.mean_prompt = prompt_sum_ / static_cast<double>(stream_.drawn());
    if (outputs_drawn_ > 0) r.mean_output = output_sum_ / static_cast<double>(outputs_drawn_);
    r.prompt_tokens = t.prompt_tokens;
    r.output_tokens = t.output_tokens;
    r.recomputed_tokens = t.recomputed_tokens;
    for (std::size_t i = 0; i < kNumOps; ++i) {
      r.op_latency[i] = t.hist[i];
      r.latency.merge(t.hist[i]);
    }
    r.failed_calls = t.failed_calls;
    r.allocator_seconds = static_cast<double>(r.latency.sum()) * 1e-9;
    r.worker_seconds = r.wall_s * o_.workers;
    r.util_mean = util_samples_ > 0 ? util_sum_ / static_cast<double>(util_samples_) : 0;
    r.util_peak = util_peak_;
    const CacheStats cs = cache_.stats();
    r.peak_blocks_used = cs.peak_blocks_used;
    r.waste_pct = slots_sum_ > 0 ? 100.0 * static_cast<double>(slots_sum_ - stored_sum_) /
                                       static_cast<double>(slots_sum_)
                                 : 0;
    r.sharing_saved_pct = logical_sum_ > 0
                              ? 100.0 * static_cast<double>(logical_sum_ - physical_sum_) /
                                    static_cast<double>(logical_sum_)
                              : 0;
    r.sharing_samples = sharing_samples_;
    r.cow_copies = t.cow_copies;
    r.forks = t.forks;
    r.preemptions = t.preemptions;
    r.evictions = t.evictions;
    r.streaming_trims = t.trims;
    r.streaming_dropped_tokens = t.dropped;
    r.verify_sequences_checked = verify_seqs_;
    r.verify_tokens_checked = verify_tokens_;
    r.end_used_blocks = cache_.used_block_count();
    r.end_sequences = cache_.num_sequences();
    r.series = std::move(series_);
    r.error = barrier_.error;
    if (r.error.empty() && (r.end_used_blocks != 0 || r.end_sequences != 0)) {
      r.error = "the cache still holds " + std::to_string(r.end_used_blocks) + " blocks and " +
                std::to_string(r.end_sequences) + " sequences after every request was freed";
    }
    if (r.error.empty() && r.finished + r.aborted + r.unfinished + r.not_arrived != r.requests) {
      r.error = "request accounting: finished + aborted + unfinished + not arrived != requests";
    }
    if (r.error.empty() && cs.total_evictions != r.evictions) {
      r.error = "the cache counted " + std::to_string(cs.total_evictions) +
                " evictions, the simulator " + std::to_string(r.evictions);
    }
    if (r.error.empty() && o_.verify) {
      if (auto v = cache_.validate_unsafe(); !v.empty()) r.error = "validate_unsafe: " + v;
    }
    if (accounting_mismatches_ > 0) {
      r.note = std::to_string(accounting_mismatches_) +
               " samples where the block tables and the cache's counters disagreed";
    }
    if (throttled_steps_ > 0) {
      r.note += std::string(r.note.empty() ? "" : "; ") + "arrivals held back in " +
                std::to_string(throttled_steps_) + " steps (over " + std::to_string(kMaxWaiting) +
                " requests waiting)";
    }
  }

  static constexpr std::size_t kMaxSeries = 4096;
  static constexpr std::size_t kMaxWaiting = std::size_t{1} << 20;

  const Options o_;
  Cache& cache_;
  const std::string name_;
  const ProgressFn& progress_;
  const std::size_t bs_;
  bool streaming_ = false;
  bool priority_ = false;
  std::size_t watermark_blocks_ = 0;
  std::size_t per_worker_seqs_ = 0;

  RequestStream stream_;
  double prompt_sum_ = 0;
  double output_sum_ = 0;
  std::uint64_t outputs_drawn_ = 0;

  std::mutex queue_mu_;
  std::deque<std::unique_ptr<Group>> waiting_;  // guarded by queue_mu_, in request-id order
  std::vector<std::unique_ptr<Worker>> workers_;
  Ctx barrier_;  // cache calls made between steps

  Gate gate_;
  std::vector<std::uint64_t> arena_;  // --verify: one cookie per token slot

  std::mutex evicted_mu_;
  std::vector<SeqId> evicted_;  // guarded by evicted_mu_

  // Written only between steps (barrier completion) or before/after the workers run.
  bool stop_ = false;
  std::uint64_t vstep_ = 0;
  std::uint64_t steps_run_ = 0;
  Clock::time_point start_;
  Clock::time_point last_progress_;
  std::uint64_t stall_tokens_ = 0;
  std::uint64_t stall_done_ = 0;
  std::uint64_t stall_steps_ = 0;

  double util_sum_ = 0;
  double util_peak_ = 0;
  std::uint64_t util_samples_ = 0;
  double last_util_ = 0;
  std::size_t last_live_ = 0;
  std::size_t last_waiting_ = 0;
  std::vector<Sample> series_;
  std::uint64_t series_stride_ = 1;

  std::vector<std::uint32_t> block_fill_;
  std::vector<std::uint64_t> block_stamp_;
  std::vector<std::uint32_t> seen_blocks_;
  std::uint64_t stamp_ = 0;
  std::uint64_t logical_sum_ = 0;
  std::uint64_t physical_sum_ = 0;
  std::uint64_t slots_sum_ = 0;
  std::uint64_t stored_sum_ = 0;
  std::uint64_t sharing_samples_ = 0;
  std::uint64_t accounting_mismatches_ = 0;
  std::uint64_t throttled_steps_ = 0;
  std::uint64_t verify_seqs_ = 0;
  std::uint64_t verify_tokens_ = 0;
};

}  // namespace pkv::sim::detail
