// sim/simulator_impl.hpp — the simulator's run: the workers in lockstep steps, and what happens
// between two steps; a template over the cache type (internal).
//
// Model
//   Time is counted in scheduler steps. --workers threads run the steps in lockstep: each runs
//   one Scheduler::step (scheduler.hpp) on its own groups, all of them calling the one shared
//   cache at the same time. A std::barrier separates steps; its completion runs with every worker
//   parked, so the bookkeeping there (arrivals, reconciling evictions, sampling, --verify checks,
//   progress) sees a quiescent cache and needs no locks of its own.
//
// Between steps (on_step_end)
//   Victims of this step's evictions whose owners did not notice are preempted; utilization is
//   sampled (metrics.hpp) and, every --sample-every steps, every live sequence is read back
//   (sharing, waste, and with --verify its tokens: verifier.hpp); the run stops when every
//   request is done, at --duration / --max-steps, or on an error; arrivals are released, and with
//   nothing running the queue head gets the whole cache (or is aborted if it cannot fit).
#pragma once

#include <algorithm>
#include <barrier>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "metrics.hpp"
#include "pkv/types.hpp"
#include "report.hpp"
#include "scheduler.hpp"
#include "simulator.hpp"
#include "state.hpp"
#include "verifier.hpp"
#include "workload.hpp"

namespace pkv::sim::detail {

template <class Cache>
class Simulator {
 public:
  Simulator(const Options& options, Cache& cache, std::string name, const ProgressFn& progress)
      : o_(options),
        cache_(cache),
        name_(std::move(name)),
        progress_(progress),
        stream_(options),
        verifier_(options, cache),
        metrics_(options),
        scheduler_(o_, cache, verifier_, waiting_, evicted_),
        streaming_(o_.evict.strategy.kind() == EvictionStrategy::Kind::streaming_llm) {}

  Report run() {
    Report r;
    r.cache_name = name_;
    r.config = describe(o_);
    r.total_blocks = o_.blocks;
    r.block_size = o_.block_size;
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
      std::barrier barrier(static_cast<std::ptrdiff_t>(o_.workers), StepEnd{this});
      std::vector<std::thread> threads;
      threads.reserve(o_.workers);
      for (auto& w : workers_) {
        threads.emplace_back([this, &barrier, wp = w.get()] {
          while (!stop_) {
            try {
              scheduler_.step(*wp);
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
  // The barrier's completion: runs in the last worker to arrive while the others wait.
  struct StepEnd {
    Simulator* self;
    void operator()() noexcept {
      try {
        self->on_step_end();
      } catch (const std::exception& e) {
        if (self->barrier_.error.empty())
          self->barrier_.error = std::string("between steps: ") + e.what();
        self->stop_ = true;
      }
    }
  };

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
      if (!streaming_ && final_blocks_lower_bound(req, o_) > o_.blocks) {
        ++barrier_.st.aborted;  // can never fit: reported, never admitted
        continue;
      }
      waiting_.push_back(make_group(req, o_));
    }
  }

  /// Sequences evicted during the step whose owners did not notice: preempt their groups now.
  void reconcile_evictions() {
    const std::vector<SeqId> victims = evicted_.take();
    if (victims.empty()) return;
    std::unordered_map<std::uint64_t, std::unique_ptr<Group>*> by_request;
    for (auto& w : workers_) {
      for (auto& g : w->running) {
        if (g) by_request[g->req.id] = &g;
      }
    }
    for (auto id : victims) {
      auto it = by_request.find(request_of(id));
      if (it == by_request.end() || !*it->second || !(*it->second)->owns(id)) continue;
      auto& slot = *it->second;
      scheduler_.settle(barrier_, *slot, Outcome::preempted);
      waiting_.requeue(std::move(slot));
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
      auto g = waiting_.pop();
      if (!g) return;
      const auto a = scheduler_.restore(barrier_, *g, /*use_watermark=*/false);
      if (a == Scheduler<Cache>::Admit::ok) {
        workers_.front()->running.push_back(std::move(g));
        return;
      }
      if (a == Scheduler<Cache>::Admit::fatal) return;
      ++barrier_.st.aborted;
    }
  }

  void sample() {
    const std::size_t used = cache_.used_block_count();
    const std::size_t live = cache_.num_sequences();
    metrics_.sample_step(steps_run_, vstep_, seconds_since(start_), used, live, waiting_.size());
    if (metrics_.full_sample_due(steps_run_, live)) full_sample(used, live);
  }

  /// Reads every live sequence back: block-table lengths (sharing), fill (waste), cookies.
  void full_sample(std::size_t used, std::size_t live) {
    metrics_.begin_full_sample();
    std::size_t sim_live = 0;
    for (const auto& w : workers_) {
      for (const auto& g : w->running) {
        for (const auto& s : g->seqs) {
          ++sim_live;
          auto info = cache_.get_sequence(s.id);
          if (!info) {
            verify_error(to_string(s.id) + " is running but the cache does not know it");
            continue;
          }
          metrics_.add(*info);
          if (std::string e; verifier_.on() && !verifier_.check(s, *info, e)) verify_error(e);
        }
      }
    }
    if (!metrics_.end_full_sample(used, live, sim_live) && verifier_.on()) {
      verify_error("at step " + std::to_string(vstep_) + " the block tables hold " +
                   std::to_string(metrics_.distinct_blocks()) +
                   " distinct blocks and the simulator " + std::to_string(sim_live) +
                   " sequences, the cache reports " + std::to_string(used) + " used blocks and " +
                   std::to_string(live) + " sequences");
    }
    if (verifier_.on()) {
      if (auto v = cache_.validate_unsafe(); !v.empty()) verify_error("validate_unsafe: " + v);
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
    } else if (!all_idle() || metrics_.last_waiting() > 0) {
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
    if (all_idle() && cache_.num_sequences() == 0 && metrics_.last_waiting() == 0 &&
        !stream_.exhausted()) {
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
    p.utilization = metrics_.last_utilization();
    p.running_seqs = metrics_.last_live();
    p.waiting = metrics_.last_waiting();
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
        scheduler_.release_group(barrier_, *g);
        ++unfinished;
      }
      w->running.clear();
    }
    unfinished += waiting_.clear();
    const Stats t = totals();
    r.requests = o_.requests != 0 ? o_.requests : stream_.drawn();
    r.finished = t.finished;
    r.aborted = t.aborted;
    r.unfinished = unfinished;
    r.not_arrived = r.requests - stream_.drawn();
    if (stream_.drawn() > 0) r.mean_prompt = prompt_sum_ / static_cast<double>(stream_.drawn());
    if (outputs_drawn_ > 0) r.mean_output = output_sum_ / static_cast<double>(outputs_drawn_);
    r.prompt_tokens = t.prompt_tokens;
    r.token_mode = o_.token_mode();
    r.prefix_hit_tokens = t.prefix_hit_tokens;
    r.recompute_hit_tokens = t.recompute_hit_tokens;
    if constexpr (TokenCache<Cache>) {
      r.prefix_caching = r.token_mode;
      r.prefix = cache_.prefix_stats();
      r.end_cached_blocks = cache_.cached_block_count();
      r.end_reclaimable_blocks = cache_.reclaimable_block_count();
    }
    if (const TokenWorkload* tw = stream_.tokens()) {
      r.has_bound = true;
      r.bound = tw->bound(o_.block_size, r.requests);
    }
    r.output_tokens = t.output_tokens;
    r.recomputed_tokens = t.recomputed_tokens;
    for (std::size_t i = 0; i < kNumOps; ++i) {
      r.op_latency[i] = t.hist[i];
      r.latency.merge(t.hist[i]);
    }
    r.failed_calls = t.failed_calls;
    r.allocator_seconds = static_cast<double>(r.latency.sum()) * 1e-9;
    r.worker_seconds = r.wall_s * o_.workers;
    metrics_.fill(r);
    const CacheStats cs = cache_.stats();
    r.peak_blocks_used = cs.peak_blocks_used;
    r.cow_copies = t.cow_copies;
    r.forks = t.forks;
    r.preemptions = t.preemptions;
    r.evictions = t.evictions;
    r.streaming_trims = t.trims;
    r.streaming_dropped_tokens = t.dropped;
    r.verify_sequences_checked = verifier_.sequences_checked();
    r.verify_tokens_checked = verifier_.tokens_checked();
    r.end_used_blocks = cache_.used_block_count();
    r.end_sequences = cache_.num_sequences();
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
    if constexpr (TokenCache<Cache>) {
      // Every sequence is freed, so every findable block is held by none; the simulator's hits
      // are the cache's (one allocate per admission, all counted).
      if (r.error.empty() && r.end_cached_blocks != r.end_reclaimable_blocks) {
        r.error = "the cache counts " + std::to_string(r.end_cached_blocks) + " cached but " +
                  std::to_string(r.end_reclaimable_blocks) +
                  " reclaimable blocks with nothing held";
      }
      if (r.error.empty() && r.prefix_caching && r.prefix.hits != t.allocate_hit_tokens) {
        r.error = "the cache counted " + std::to_string(r.prefix.hits) +
                  " prefix hit tokens, the simulator " + std::to_string(t.allocate_hit_tokens);
      }
    } else if (r.token_mode) {
      r.note += std::string(r.note.empty() ? "" : "; ") +
                "no prefix caching on this cache: token prompts allocated by count (no hits)";
    }
    if (throttled_steps_ > 0) {
      r.note += std::string(r.note.empty() ? "" : "; ") + "arrivals held back in " +
                std::to_string(throttled_steps_) + " steps (over " + std::to_string(kMaxWaiting) +
                " requests waiting)";
    }
  }

  static constexpr std::size_t kMaxWaiting = std::size_t{1} << 20;

  const Options o_;
  Cache& cache_;
  const std::string name_;
  const ProgressFn& progress_;

  RequestStream stream_;
  double prompt_sum_ = 0;
  double output_sum_ = 0;
  std::uint64_t outputs_drawn_ = 0;

  WaitingQueue waiting_;
  EvictionLog evicted_;
  Verifier<Cache> verifier_;
  Metrics metrics_;
  Scheduler<Cache> scheduler_;
  const bool streaming_;
  std::vector<std::unique_ptr<Worker>> workers_;
  Ctx barrier_;  // cache calls made between steps

  // Written only between steps (barrier completion) or before/after the workers run.
  bool stop_ = false;
  std::uint64_t vstep_ = 0;
  std::uint64_t steps_run_ = 0;
  Clock::time_point start_;
  Clock::time_point last_progress_;
  std::uint64_t stall_tokens_ = 0;
  std::uint64_t stall_done_ = 0;
  std::uint64_t stall_steps_ = 0;
  std::uint64_t throttled_steps_ = 0;
};

}  // namespace pkv::sim::detail
