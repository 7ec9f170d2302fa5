// sim/workload.hpp — the seeded request stream: Poisson arrivals and dataset-shaped lengths.
//
// Contract
//   RequestStream is deterministic: the same Options give the same requests in the same order on
//   every platform (own generator and own Box-Muller, no std:: distributions). Not thread-safe: the
//   simulator draws from it only inside its step barrier. Rng is a small value type, one per user.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "options.hpp"
#include "trace.hpp"

namespace pkv::sim {

/// xoshiro256** seeded through splitmix64: fast, small, reproducible.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept;
  std::uint64_t next() noexcept;
  /// Uniform in [0, 1).
  double uniform() noexcept;
  /// Uniform in [0, bound); bound > 0.
  std::uint64_t below(std::uint64_t bound) noexcept;
  /// Standard normal (Box-Muller).
  double normal() noexcept;
  /// Exponential with the given mean.
  double exponential(double mean) noexcept;

 private:
  std::uint64_t s_[4];
};

std::uint64_t splitmix64(std::uint64_t x) noexcept;

/// The prompts of a token workload (--trace, --dataset shared-prefix) in request order: request
/// id i is trace line i, or the i-th shared-prefix prompt (generate_shared_prefix, shuffled with
/// the seed). Immutable after construction: shared by every thread.
class TokenWorkload {
 public:
  /// Only for options.token_mode().
  explicit TokenWorkload(const Options& options);

  std::size_t size() const noexcept;
  std::uint32_t prompt_length(std::uint64_t id) const;
  std::uint32_t output_length(std::uint64_t id) const;
  /// The prompt's token ids into `out` (cleared first).
  void prompt(std::uint64_t id, std::vector<TokenId>& out) const;
  /// Token id at `position` (>= the prompt's length) of what request `id` generates:
  /// request_token(id, position), equal to no other request's tokens.
  static TokenId generated(std::uint64_t id, std::uint64_t position) noexcept {
    return request_token(id, position);
  }
  /// The infinite-cache bound (trace.hpp) over the first `requests` requests in id order, with
  /// the same block size and rules as the cache (the last prompt token always computed).
  PrefixBound bound(std::size_t block_size, std::uint64_t requests) const;
  const Trace* trace() const noexcept { return trace_.get(); }

 private:
  std::shared_ptr<const Trace> trace_;
  std::vector<SharedPrefixPrompt> prompts_;  // shared-prefix only
  std::uint32_t output_ = 0;                 // shared-prefix output length
};

struct Request {
  std::uint64_t id = 0;
  std::uint64_t arrival_step = 0;
  std::uint32_t prompt = 0;
  /// Output length of each sample (--n; all equal, as benchmarks run with ignore_eos), or one
  /// for the whole beam search / a plain request.
  std::vector<std::uint32_t> outputs;
  std::uint32_t priority = 0;  ///< level for --evict priority (lower is evicted first)
  std::uint64_t rng_seed = 0;  ///< per-request stream (beam parents), independent of scheduling
  /// Token workloads: where the prompt's token ids come from (owned by the RequestStream, which
  /// outlives every request); null for the length-only datasets (allocated by count).
  const TokenWorkload* tokens = nullptr;
};

class RequestStream {
 public:
  explicit RequestStream(const Options& options);

  /// True when every request (of a finite count) has been drawn.
  bool exhausted() const noexcept;
  /// Arrival step of the next request; only when !exhausted().
  std::uint64_t next_arrival() const noexcept { return next_arrival_; }
  /// Draws the next request.
  Request next();
  std::uint64_t drawn() const noexcept { return drawn_; }
  /// The token workload's prompts, or null.
  const TokenWorkload* tokens() const noexcept { return tokens_.get(); }

 private:
  std::uint32_t draw_length(double mean);
  std::uint64_t trace_step(std::uint64_t id) const;  // arrival step of trace line `id`

  Options options_;
  Rng rng_;
  double clock_ = 0;  // continuous arrival time in steps
  std::uint64_t next_arrival_ = 0;
  std::uint64_t drawn_ = 0;
  std::shared_ptr<const TokenWorkload> tokens_;
};

}  // namespace pkv::sim
