// sim/state.hpp — what the simulator keeps about its requests: each sequence's tokens (and, for
// --verify, the cookie expected in each), request groups, per-worker statistics, the waiting
// queue and the log of evictions, and the block arithmetic of admission.
//
// Ids
//   SeqId = request id << kLocalBits | a per-request counter, so a victim's request is
//   victim >> kLocalBits and a recomputed group gets fresh ids.
//
// Threads
//   A Group and its SeqStates belong to one worker at a time (or to the waiting queue); Stats and
//   Ctx to one worker (or to the step barrier's completion). WaitingQueue and EvictionLog are
//   shared and lock their own mutex.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "histogram.hpp"
#include "options.hpp"
#include "pkv/types.hpp"
#include "report.hpp"
#include "workload.hpp"

namespace pkv::sim::detail {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr unsigned kLocalBits = 24;  // SeqId = request id << 24 | per-request counter

inline std::uint64_t request_of(SeqId id) {
  return id.value >> kLocalBits;
}

/// The cookie a token's KV slot must hold under --verify: who wrote it and at which position.
inline std::uint64_t token_cookie(std::uint64_t writer, std::uint64_t position) {
  return splitmix64(writer ^ 0x5bd1e9955bd1e995ULL) + position * 0x9e3779b97f4a7c15ULL + 1;
}
constexpr std::uint64_t kPromptWriter = std::uint64_t{1} << 63;  // writer of a request's prompt

/// Token workloads: the cookie of a token is its content's, not its writer's: a chain over the
/// token ids up to it (prev = the cookie before it, kContentSeed at position 0). Two sequences
/// whose first p tokens are equal expect the same cookie at p, so a prefix hit, whose KV another
/// request wrote, reads back exactly the cookies it claims; a wrong hit reads another chain.
constexpr std::uint64_t kContentSeed = 0x243f6a8885a308d3ULL;
inline std::uint64_t content_cookie(std::uint64_t prev, TokenId token, std::uint64_t position) {
  return splitmix64(prev ^ splitmix64((std::uint64_t{token} << 32) ^ position)) | 1;
}

struct SeqState {
  SeqId id{};
  std::uint32_t kept = 0;              ///< tokens the cache holds for it
  std::uint32_t prompt_prefix = 0;     ///< leading kept tokens that are the request's prompt
  std::uint32_t generated = 0;         ///< sampling: tokens decoded by this sample
  std::uint32_t target = 0;            ///< sampling: this sample's output length
  std::uint64_t position = 0;          ///< logical position of the next token (cookies)
  bool tokens = false;                 ///< token workload: generated ids, content cookies
  std::vector<std::uint64_t> cookies;  ///< --verify: expected cookie of each kept token
};

/// One request: its sequences (one, --n samples, or the current beams) and its progress.
struct Group {
  Request req;
  std::vector<SeqState> seqs;
  std::uint32_t beam_generated = 0;
  std::uint32_t preemptions = 0;
  std::uint32_t next_local = 0;
  bool admitted_once = false;
  Rng rng{0};

  SeqId new_id() {
    const std::uint64_t local = next_local++ & ((std::uint64_t{1} << kLocalBits) - 1);
    return SeqId{(req.id << kLocalBits) | local};
  }
  bool owns(SeqId id) const {
    return std::any_of(seqs.begin(), seqs.end(), [&](const SeqState& s) { return s.id == id; });
  }
  /// Tokens shared by every sequence of the group (the prompt, or what StreamingLLM left of it).
  std::uint32_t common_prefix() const {
    std::uint32_t prefix = seqs.front().prompt_prefix;
    for (const auto& s : seqs) prefix = std::min(prefix, s.prompt_prefix);
    return prefix;
  }
};

/// Appends tokens to `s` (kept and, under --verify, their cookies).
inline void push_tokens(SeqState& s, std::uint32_t n, bool verify) {
  if (verify && s.tokens) {
    for (std::uint32_t k = 0; k < n; ++k) {
      const std::uint64_t p = s.position + k;
      const TokenId t = TokenWorkload::generated(request_of(s.id), p);
      s.cookies.push_back(
          content_cookie(s.cookies.empty() ? kContentSeed : s.cookies.back(), t, p));
    }
  } else if (verify) {
    for (std::uint32_t k = 0; k < n; ++k)
      s.cookies.push_back(token_cookie(s.id.value, s.position + k));
  }
  s.position += n;
  s.kept += n;
}

/// A request's group before its first admission: the prompt, and one sequence per sample (one
/// for beam search, whose beams are forked while decoding).
inline std::unique_ptr<Group> make_group(const Request& req, const Options& o) {
  auto g = std::make_unique<Group>();
  g->req = req;
  g->rng = Rng(req.rng_seed);
  SeqState base;
  base.kept = req.prompt;
  base.prompt_prefix = req.prompt;
  base.position = req.prompt;
  base.tokens = req.tokens != nullptr;
  if (o.verify && req.tokens) {
    std::vector<TokenId> prompt;
    req.tokens->prompt(req.id, prompt);
    base.cookies.reserve(prompt.size());
    std::uint64_t prev = kContentSeed;
    for (std::size_t p = 0; p < prompt.size(); ++p) {
      prev = content_cookie(prev, prompt[p], p);
      base.cookies.push_back(prev);
    }
  } else if (o.verify) {
    base.cookies.reserve(req.prompt);
    for (std::uint32_t p = 0; p < req.prompt; ++p)
      base.cookies.push_back(token_cookie(kPromptWriter | req.id, p));
  }
  if (o.beam_width > 0) {
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

// ---- block arithmetic of admission ------------------------------------------------------------

inline std::size_t ceil_div(std::size_t a, std::size_t b) {
  return (a + b - 1) / b;
}

/// Blocks a (re)admission takes: the shared prompt prefix once, each sequence's rest apart.
inline std::size_t blocks_needed(const Group& g, std::size_t bs) {
  const std::size_t shared_full = g.common_prefix() / bs;
  std::size_t need = 0;
  for (const auto& s : g.seqs) need += ceil_div(s.kept, bs);
  return need - (g.seqs.size() - 1) * shared_full;
}

/// Lower bound on the blocks the request needs by its end; more than the cache -> never fits.
inline std::size_t final_blocks_lower_bound(const Request& req, const Options& o) {
  const std::size_t p = req.prompt;
  const std::size_t bs = o.block_size;
  if (o.beam_width > 0) return ceil_div(p + req.outputs[0], bs) - 1 + o.beam_width;
  std::size_t need = 0;
  for (auto out : req.outputs) need += ceil_div(p + out, bs) - p / bs;
  return need + p / bs;
}

/// Running sequences the group counts for against --max-seqs.
inline std::size_t group_seq_budget(const Group& g, const Options& o) {
  return o.beam_width > 0 ? std::max<std::size_t>(o.beam_width, g.seqs.size()) : g.seqs.size();
}

// ---- outcomes and statistics ------------------------------------------------------------------

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
  std::uint64_t prefix_hit_tokens = 0;     // token workloads: prompt tokens found cached (first
                                           // admission)
  std::uint64_t recompute_hit_tokens = 0;  // and tokens found cached when readmitted
  std::uint64_t allocate_hit_tokens = 0;   // every allocate's hit (the cache's count)
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
    prefix_hit_tokens += o.prefix_hit_tokens;
    recompute_hit_tokens += o.recompute_hit_tokens;
    allocate_hit_tokens += o.allocate_hit_tokens;
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

  // The decode step's buffers, reused from step to step (scheduler.hpp).
  struct Item {
    std::size_t group;  // index into `running`
    std::size_t seq;    // index into that group's seqs
  };
  std::vector<SeqId> batch_ids;
  std::vector<TokenId> batch_tokens;  // token workloads: each item's generated token id
  std::vector<Item> batch_items;
  std::vector<bool> retry;  // per item: found no free block, retried with eviction
  AppendBatchOutcome batch;
  std::unordered_set<std::uint64_t> evicted_requests;  // requests this worker evicted this step
};

// ---- shared between workers --------------------------------------------------------------------

/// Requests waiting for admission, in arrival (= id) order. Thread-safe.
class WaitingQueue {
 public:
  void push_back(std::unique_ptr<Group> g) {
    std::lock_guard lock(mu_);
    q_.push_back(std::move(g));
  }
  /// A preempted group goes back in id order, so near the front.
  void requeue(std::unique_ptr<Group> g) {
    std::lock_guard lock(mu_);
    auto pos = std::upper_bound(
        q_.begin(), q_.end(), g->req.id,
        [](std::uint64_t id, const std::unique_ptr<Group>& x) { return id < x->req.id; });
    q_.insert(pos, std::move(g));
  }
  /// A group popped but not admitted goes back first.
  void push_front(std::unique_ptr<Group> g) {
    std::lock_guard lock(mu_);
    q_.push_front(std::move(g));
  }
  std::unique_ptr<Group> pop() {
    std::lock_guard lock(mu_);
    if (q_.empty()) return nullptr;
    auto g = std::move(q_.front());
    q_.pop_front();
    return g;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return q_.size();
  }
  /// Drops every waiting group; returns how many.
  std::size_t clear() {
    std::lock_guard lock(mu_);
    const std::size_t n = q_.size();
    q_.clear();
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::deque<std::unique_ptr<Group>> q_;
};

/// Victims of evict() in this step, for the step barrier to preempt groups whose owners did not
/// notice. Thread-safe.
class EvictionLog {
 public:
  void add(SeqId victim) {
    std::lock_guard lock(mu_);
    victims_.push_back(victim);
  }
  std::vector<SeqId> take() {
    std::lock_guard lock(mu_);
    std::vector<SeqId> out;
    out.swap(victims_);
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<SeqId> victims_;
};

}  // namespace pkv::sim::detail
