// sim/scheduler.hpp — one scheduler worker's step: admit waiting requests, decode one token for
// every running sequence with one append_batch, preempt by eviction when memory runs out.
//
// A step (Scheduler::step, on a worker's own thread, all workers at once)
//   1. admit: pop waiting groups while the worker's share of --max-seqs and the watermark allow;
//      restore() allocates the prompt (a recomputed group: the common prefix, then fork and an
//      append of each sequence's own tokens).
//   2. beams: each beam search picks the parents of its K new beams, frees the losers (one
//      free_many) and forks the children (one fork_many per parent). On the seed baseline, which
//      has neither call, fork and free per sequence, as its users do.
//   3. decode: append_batch(every running sequence of the worker, 1): the step's CopyOps are
//      counted and, with --verify, performed and the tokens written (verifier.hpp).
//   4. per group, in order: items that found no free block are retried one by one, evicting by
//      the strategy until they fit (the victim's whole group is preempted: freed and requeued
//      with its tokens so far as its prompt); StreamingLLM trims; finished samples and beam
//      searches are freed.
//   A group that alone holds every block and still needs one is aborted.
//
// Threads: a worker touches only its own groups, its Ctx and the shared WaitingQueue and
// EvictionLog (which lock); the cache is shared by all.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "options.hpp"
#include "pkv/types.hpp"
#include "report.hpp"
#include "state.hpp"
#include "verifier.hpp"

namespace pkv::sim::detail {

/// A cache with prefix caching's token-id calls (pkv; the seed baseline has none and runs token
/// workloads by count, with no hits).
template <class Cache>
concept TokenCache = requires(Cache& c, const Cache& cc, SeqId s, std::span<const TokenId> t,
                              std::span<const SeqId> ids, AppendBatchOutcome& out) {
  {c.allocate(s, t, std::string_view{})};
  {c.append(s, t)};
  {c.append_batch(ids, t, out)};
  {c.commit(s, std::size_t{})};
  {cc.prefix_stats()};
};

/// A cache with the batched sequence calls (pkv): parallel sampling and beam search fork all of
/// a parent's children with one fork_many and free finished groups and beam losers with one
/// free_many. The seed baseline has neither; its users call fork and free per sequence.
template <class Cache>
concept ManyCache = requires(Cache& c, SeqId s, std::span<const SeqId> ids, FreeManyOutcome& out) {
  {c.fork_many(s, ids)};
  {c.free_many(ids, out)};
};

template <class Cache>
class Scheduler {
 public:
  static constexpr bool kTokens = TokenCache<Cache>;
  static constexpr bool kMany = ManyCache<Cache>;

  Scheduler(const Options& o, Cache& cache, Verifier<Cache>& verifier, WaitingQueue& waiting,
            EvictionLog& evicted)
      : o_(o),
        cache_(cache),
        verifier_(verifier),
        waiting_(waiting),
        evicted_(evicted),
        bs_(o.block_size),
        streaming_(o.evict.strategy.kind() == EvictionStrategy::Kind::streaming_llm),
        priority_(o.evict.strategy.kind() == EvictionStrategy::Kind::priority),
        watermark_blocks_(static_cast<std::size_t>(o.watermark * static_cast<double>(o.blocks))),
        per_worker_seqs_((o.max_seqs + o.workers - 1) / o.workers) {}

  enum class Admit : std::uint8_t { ok, no_room, evicted, fatal };

  /// One scheduler step of worker `w` (see the file comment).
  void step(Worker& w) {
    admit(w);
    std::vector<Outcome> oc(w.running.size(), Outcome::running);
    if (o_.beam_width > 0) {
      for (std::size_t k = 0; k < w.running.size() && w.ctx.error.empty(); ++k)
        oc[k] = fork_beams(w.ctx, *w.running[k]);
    }
    decode(w, oc);
    for (std::size_t k = 0; k < w.running.size(); ++k) {
      auto& gp = w.running[k];
      switch (w.ctx.error.empty() ? oc[k] : Outcome::fatal) {
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
          waiting_.requeue(std::move(gp));
          break;
      }
    }
    std::erase_if(w.running, [](const std::unique_ptr<Group>& g) { return g == nullptr; });
    if (o_.step_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(o_.step_us));
  }

  /// Puts a waiting group into the cache: allocate (one sequence), or allocate the common prompt,
  /// fork it and append each sequence's own tokens (recompute of a preempted group).
  Admit restore(Ctx& c, Group& g, bool use_watermark) {
    if (use_watermark && cache_.free_block_count() < blocks_needed(g, bs_) + watermark_blocks_)
      return Admit::no_room;
    for (auto& s : g.seqs) s.id = g.new_id();
    std::vector<SeqId> created;
    auto rollback = [&](Admit why) {
      free_seqs(c, created);
      return c.error.empty() ? why : Admit::fatal;
    };
    auto classify = [&](const char* what, SeqId id, const Error& e) {
      if (e.code() == Errc::out_of_memory) return rollback(Admit::no_room);
      if (e.code() == Errc::sequence_not_found) return rollback(Admit::evicted);
      c.error = fail(what, id, e);
      return rollback(Admit::fatal);
    };
    auto wrote = [&](typename Verifier<Cache>::Written w) {
      return w == Verifier<Cache>::Written::ok
                 ? Admit::ok
                 : rollback(w == Verifier<Cache>::Written::gone ? Admit::evicted : Admit::fatal);
    };
    const std::uint32_t prefix = g.common_prefix();
    const bool single = g.seqs.size() == 1;
    SeqState& root = g.seqs.front();
    const std::uint32_t root_tokens = single ? root.kept : prefix;
    std::uint64_t tokens = root_tokens;
    std::size_t hit = 0;  // leading tokens found in the prefix cache: not recomputed
    if (kTokens && g.req.tokens != nullptr) {
      // Token workload: allocate with the ids (the prompt, then what the request generated
      // before a preemption), write the KV of the tokens not found (prefill), commit them all.
      thread_local std::vector<TokenId> ids;
      g.req.tokens->prompt(g.req.id, ids);
      for (std::uint64_t p = ids.size(); p < root_tokens; ++p)
        ids.push_back(TokenWorkload::generated(g.req.id, p));
      ids.resize(root_tokens);
      const auto gate = verifier_.writing();
      auto r = timed(c.st, Op::allocate, [&] {
        if constexpr (kTokens) {
          return cache_.allocate(root.id, std::span<const TokenId>(ids));
        } else {
          return cache_.allocate(root.id, root_tokens);  // not reached
        }
      });
      if (!r) return classify("allocate", root.id, r.error());
      created.push_back(root.id);
      if constexpr (kTokens) hit = r.value();
      c.st.allocate_hit_tokens += hit;  // also when the admission is rolled back below
      if (Admit a = wrote(verifier_.written(c, root, static_cast<std::uint32_t>(hit), root_tokens,
                                            std::nullopt));
          a != Admit::ok)
        return a;
      if constexpr (kTokens) {
        auto m = timed(c.st, Op::commit, [&] { return cache_.commit(root.id, root_tokens); });
        if (!m) return classify("commit", root.id, m.error());
      }
    } else {
      const auto gate = verifier_.writing();
      auto r = timed(c.st, Op::allocate, [&] { return cache_.allocate(root.id, root_tokens); });
      if (!r) return classify("allocate", root.id, r.error());
      created.push_back(root.id);
      if (Admit a = wrote(verifier_.written(c, root, 0, root_tokens, std::nullopt)); a != Admit::ok)
        return a;
    }
    if (!single) {
      std::vector<SeqId> children;
      for (std::size_t i = 1; i < g.seqs.size(); ++i) children.push_back(g.seqs[i].id);
      if (auto r = fork_children(c, root.id, children); !r)
        return classify("fork", root.id, r.error());
      created.insert(created.end(), children.begin(), children.end());
      for (auto& s : g.seqs) {
        if (s.kept <= prefix) continue;
        const auto gate = verifier_.writing();
        auto r = timed(c.st, Op::append, [&] { return cache_.append(s.id, s.kept - prefix); });
        if (!r) return classify("append", s.id, r.error());
        if (r.value()) ++c.st.cow_copies;
        tokens += s.kept - prefix;
        if (Admit a = wrote(verifier_.written(c, s, prefix, s.kept, r.value())); a != Admit::ok)
          return a;
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
      c.st.recompute_hit_tokens += hit;
    } else {
      c.st.prompt_tokens += tokens;
      c.st.prefix_hit_tokens += hit;
      g.admitted_once = true;
    }
    return Admit::ok;
  }

  /// Frees every sequence of a preempted or aborted group (settle) and counts the preemption.
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

  void release_group(Ctx& c, Group& g) {
    std::vector<SeqId> ids;
    for (const auto& s : g.seqs) ids.push_back(s.id);
    free_seqs(c, ids);
  }

 private:
  // ---- timed cache calls ------------------------------------------------------------------------
  template <class F>
  auto timed(Stats& st, Op op, F&& f) {
    const auto t0 = Clock::now();
    auto result = f();
    const auto t1 = Clock::now();
    record(st, op, t0, t1);
    if (!result) ++st.failed_calls;
    return result;
  }

  static void record(Stats& st, Op op, Clock::time_point t0, Clock::time_point t1) {
    st.hist[static_cast<std::size_t>(op)].record(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
  }
  /// A call that does `items` sequence operations (fork_many, free_many): recorded as `op`, one
  /// sample per item, each the call's time divided by the items (as append_batch, report.hpp).
  template <class F>
  auto timed_items(Stats& st, Op op, std::size_t items, F&& f) {
    const auto t0 = Clock::now();
    auto result = f();
    const auto t1 = Clock::now();
    const auto ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    const std::uint64_t per_item = ns / std::max<std::size_t>(items, 1);
    for (std::size_t i = 0; i < items; ++i) st.hist[static_cast<std::size_t>(op)].record(per_item);
    return result;
  }

  static std::string fail(const char* what, SeqId id, const Error& e) {
    return std::string(what) + "(" + to_string(id) + "): " + e.message();
  }

  /// Forks every child of `children` from `parent`, all or nothing (fork_many; fork per child
  /// on a cache without it, undoing the ones made when one fails). Counts the forks.
  Result<void> fork_children(Ctx& c, SeqId parent, std::span<const SeqId> children) {
    if (children.empty()) return {};
    if constexpr (kMany) {
      auto r = timed_items(c.st, Op::fork, children.size(),
                           [&] { return cache_.fork_many(parent, children); });
      if (!r) {
        ++c.st.failed_calls;
        return r.error();
      }
    } else {
      for (std::size_t i = 0; i < children.size(); ++i) {
        auto r = timed(c.st, Op::fork, [&] { return cache_.fork(parent, children[i]); });
        if (!r) {
          for (std::size_t j = 0; j < i; ++j) free_seq(c, children[j]);
          return r.error();
        }
      }
    }
    c.st.forks += children.size();
    return {};
  }

  /// Frees `ids` (free_many, or free per id); ids evicted meanwhile are fine. False on any other
  /// error (recorded in c.error).
  bool free_seqs(Ctx& c, std::span<const SeqId> ids) {
    if constexpr (kMany) {
      if (ids.empty()) return true;
      FreeManyOutcome out;
      timed_items(c.st, Op::free, ids.size(), [&] {
        cache_.free_many(ids, out);
        return true;
      });
      for (const auto& e : out.errors) {
        ++c.st.failed_calls;
        if (e.error.code() != Errc::sequence_not_found) {
          c.error = fail("free_many", ids[e.item], e.error);
          return false;
        }
      }
      return true;
    } else {
      bool ok = true;
      for (SeqId id : ids) ok = free_seq(c, id) && ok;
      return ok;
    }
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

  // ---- admission --------------------------------------------------------------------------------
  void admit(Worker& w) {
    std::size_t running = 0;
    for (const auto& g : w.running) running += group_seq_budget(*g, o_);
    while (w.ctx.error.empty()) {
      auto g = waiting_.pop();
      if (!g) return;
      if (running + group_seq_budget(*g, o_) > per_worker_seqs_ && running > 0) {
        waiting_.push_front(std::move(g));
        return;
      }
      if (restore(w.ctx, *g, /*use_watermark=*/true) != Admit::ok) {
        waiting_.push_front(std::move(g));
        return;
      }
      running += group_seq_budget(*g, o_);
      w.running.push_back(std::move(g));
    }
  }

  // ---- decoding ---------------------------------------------------------------------------------
  /// Beam search: each of the K new beams picks a parent uniformly among the current beams (a
  /// neutral Wright-Fisher model of which candidates survive the top-K cut); losers are freed,
  /// extra children forked.
  Outcome fork_beams(Ctx& c, Group& g) {
    const std::size_t parents = g.seqs.size();
    std::vector<std::uint32_t> children(parents, 0);
    for (std::uint32_t j = 0; j < o_.beam_width; ++j) ++children[g.rng.below(parents)];
    std::vector<SeqState> survivors;
    std::vector<std::uint32_t> survivor_children;
    std::vector<SeqId> losers;
    for (std::size_t i = 0; i < parents; ++i) {
      if (children[i] == 0) {
        losers.push_back(g.seqs[i].id);
      } else {
        survivors.push_back(std::move(g.seqs[i]));
        survivor_children.push_back(children[i]);
      }
    }
    g.seqs = std::move(survivors);
    if (!free_seqs(c, losers)) return Outcome::fatal;
    const std::size_t kept_parents = g.seqs.size();
    std::vector<SeqId> ids;
    for (std::size_t i = 0; i < kept_parents; ++i) {
      if (survivor_children[i] < 2) continue;
      ids.clear();
      for (std::uint32_t k = 1; k < survivor_children[i]; ++k) ids.push_back(g.new_id());
      const SeqId parent = g.seqs[i].id;
      if (auto r = fork_children(c, parent, ids); !r) {
        if (r.error().code() == Errc::sequence_not_found) return settle(c, g, Outcome::preempted);
        c.error = fail("fork", parent, r.error());
        return Outcome::fatal;
      }
      for (SeqId id : ids) {
        SeqState child = g.seqs[i];
        child.id = id;
        g.seqs.push_back(std::move(child));
        if (priority_) {
          auto p = timed(c.st, Op::set_priority,
                         [&] { return cache_.set_priority(id, g.req.priority); });
          if (!p && p.error().code() == Errc::sequence_not_found)
            return settle(c, g, Outcome::preempted);
        }
      }
    }
    return Outcome::running;
  }

  /// Steps 3 and 4 of the file comment for every group still running (oc[k] == running).
  void decode(Worker& w, std::vector<Outcome>& oc) {
    Ctx& c = w.ctx;
    w.batch_ids.clear();
    w.batch_items.clear();
    w.batch_tokens.clear();
    bool by_ids = false;  // a token workload on a cache that takes ids: every item carries one
    for (std::size_t k = 0; k < w.running.size(); ++k) {
      if (oc[k] != Outcome::running) continue;
      const Group& g = *w.running[k];
      by_ids = kTokens && g.req.tokens != nullptr;
      for (std::size_t i = 0; i < g.seqs.size(); ++i) {
        w.batch_ids.push_back(g.seqs[i].id);
        w.batch_items.push_back(Worker::Item{k, i});
        if (by_ids)
          w.batch_tokens.push_back(TokenWorkload::generated(g.req.id, g.seqs[i].position));
      }
    }
    w.retry.assign(w.batch_items.size(), false);
    if (!w.batch_ids.empty() && c.error.empty()) {
      const auto gate = verifier_.writing();
      const auto t0 = Clock::now();
      if constexpr (kTokens) {
        if (by_ids) {
          if (auto r = cache_.append_batch(w.batch_ids, w.batch_tokens, w.batch); !r)
            c.error = "append_batch: " + r.error().message();
        } else {
          cache_.append_batch(w.batch_ids, 1, w.batch);
        }
      } else {
        cache_.append_batch(w.batch_ids, 1, w.batch);
      }
      const auto t1 = Clock::now();
      c.st.hist[static_cast<std::size_t>(Op::append_batch)].record_shared(
          static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()),
          w.batch_ids.size());
      c.st.failed_calls += w.batch.errors.size();
      // The step's writes: every appended item's CopyOp and new token, in item order.
      auto copy = w.batch.copies.begin();
      auto error = w.batch.errors.begin();
      for (std::size_t j = 0; j < w.batch_items.size() && c.error.empty(); ++j) {
        std::optional<CopyOp> op;
        if (copy != w.batch.copies.end() && copy->item == j) op = (copy++)->copy;
        const std::optional<Error> err = error != w.batch.errors.end() && error->item == j
                                             ? std::optional<Error>((error++)->error)
                                             : std::nullopt;
        const std::size_t k = w.batch_items[j].group;
        if (oc[k] != Outcome::running) continue;  // preempted by an earlier item
        Group& g = *w.running[k];
        SeqState& s = g.seqs[w.batch_items[j].seq];
        if (err) {
          if (err->code() == Errc::out_of_memory) {
            w.retry[j] = true;
          } else if (err->code() == Errc::sequence_not_found) {
            oc[k] = settle(c, g, Outcome::preempted);
          } else {
            c.error = fail("append_batch", s.id, *err);
          }
          continue;
        }
        if (op) ++c.st.cow_copies;
        push_tokens(s, 1, verifier_.on());
        const auto written = verifier_.written(c, s, s.kept - 1, s.kept, op);
        if (written == Verifier<Cache>::Written::gone) oc[k] = settle(c, g, Outcome::preempted);
      }
    }
    // Retries, trims and finished sequences, group by group.
    w.evicted_requests.clear();
    std::size_t j = 0;
    for (std::size_t k = 0; k < w.running.size(); ++k) {
      const std::size_t first = j;
      while (j < w.batch_items.size() && w.batch_items[j].group == k) ++j;
      if (oc[k] != Outcome::running || !c.error.empty()) continue;
      Group& g = *w.running[k];
      if (w.evicted_requests.contains(g.req.id)) {  // a victim of this worker's earlier retry
        oc[k] = settle(c, g, Outcome::preempted);
        continue;
      }
      oc[k] = finish_group(w, g, first, j);
    }
  }

  /// Step 4 for group `g`, whose batch items are w.batch_items[first, end).
  Outcome finish_group(Worker& w, Group& g, std::size_t first, std::size_t end) {
    Ctx& c = w.ctx;
    // Item order is sequence order; finished samples are erased after the loop.
    std::vector<bool> done(g.seqs.size(), false);
    for (std::size_t j = first; j < end; ++j) {
      const std::size_t i = w.batch_items[j].seq;
      Outcome oc = w.retry[j] ? append_tokens(w, g, i) : Outcome::running;
      if (oc == Outcome::running) oc = maybe_trim(c, g.seqs[i]);
      if (oc != Outcome::running) return settle(c, g, oc);
      ++c.st.output_tokens;
      SeqState& s = g.seqs[i];
      if (o_.beam_width == 0 && ++s.generated >= s.target) {
        if (!free_seq(c, s.id)) return Outcome::fatal;
        done[i] = true;
      }
    }
    if (o_.beam_width > 0) {
      if (++g.beam_generated >= g.req.outputs[0]) {
        release_group(c, g);
        return c.error.empty() ? Outcome::finished : Outcome::fatal;
      }
      return Outcome::running;
    }
    std::size_t i = 0;
    std::erase_if(g.seqs, [&](const SeqState&) { return done[i++]; });
    return g.seqs.empty() ? Outcome::finished : Outcome::running;
  }

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

  /// Appends one token to g.seqs[i], evicting (by the strategy) while the cache is full.
  Outcome append_tokens(Worker& w, Group& g, std::size_t i) {
    Ctx& c = w.ctx;
    for (std::uint64_t attempt = 0;; ++attempt) {
      Errc code{};
      {
        const auto gate = verifier_.writing();
        SeqState& s = g.seqs[i];
        auto r = timed(c.st, Op::append, [&] {
          if constexpr (kTokens) {
            if (g.req.tokens != nullptr) {
              const TokenId t[1] = {TokenWorkload::generated(g.req.id, s.position)};
              return cache_.append(s.id, std::span<const TokenId>(t));
            }
          }
          return cache_.append(s.id, 1);
        });
        if (r) {
          if (r.value()) ++c.st.cow_copies;
          push_tokens(s, 1, verifier_.on());
          switch (verifier_.written(c, s, s.kept - 1, s.kept, r.value())) {
            case Verifier<Cache>::Written::ok:
              return Outcome::running;
            case Verifier<Cache>::Written::gone:
              return Outcome::preempted;
            case Verifier<Cache>::Written::fatal:
              return Outcome::fatal;
          }
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
        const auto gate = verifier_.evicting();
        auto v = timed(c.st, Op::evict, [&] { return cache_.evict(); });
        if (v) victim = v.value();
      }
      if (!victim) continue;  // nothing left to evict: the blocks were freed meanwhile
      ++c.st.evictions;
      evicted_.add(*victim);
      if (g.owns(*victim)) return Outcome::preempted;
      w.evicted_requests.insert(request_of(*victim));
    }
  }

  /// StreamingLLM: once a sequence holds a block beyond sink + window, drop its middle tokens.
  Outcome maybe_trim(Ctx& c, SeqState& s) {
    if (!streaming_) return Outcome::running;
    const std::size_t sink = o_.evict.strategy.sink_tokens();
    const std::size_t window = o_.evict.strategy.window_tokens();
    if (s.kept < sink + window + bs_) return Outcome::running;
    const auto gate = verifier_.writing();
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
    if (verifier_.on()) {
      const auto first = s.cookies.begin() + static_cast<std::ptrdiff_t>(sink);
      s.cookies.erase(first, first + static_cast<std::ptrdiff_t>(expect));
    }
    ++c.st.trims;
    c.st.dropped += expect;
    return Outcome::running;
  }

  const Options& o_;
  Cache& cache_;
  Verifier<Cache>& verifier_;
  WaitingQueue& waiting_;
  EvictionLog& evicted_;
  const std::size_t bs_;
  const bool streaming_;
  const bool priority_;
  const std::size_t watermark_blocks_;
  const std::size_t per_worker_seqs_;
};

}  // namespace pkv::sim::detail
