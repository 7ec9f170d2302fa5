// sim/workload.hpp — the seeded request stream: Poisson arrivals and dataset-shaped lengths.
//
// Contract
//   RequestStream is deterministic: the same Options give the same requests in the same order on
//   every platform (own generator and own Box-Muller, no std:: distributions). Not thread-safe: the
//   simulator draws from it only inside its step barrier. Rng is a small value type, one per user.
#pragma once

#include <cstdint>
#include <vector>

#include "options.hpp"

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

struct Request {
  std::uint64_t id = 0;
  std::uint64_t arrival_step = 0;
  std::uint32_t prompt = 0;
  /// Output length of each sample (--n; all equal, as benchmarks run with ignore_eos), or one
  /// for the whole beam search / a plain request.
  std::vector<std::uint32_t> outputs;
  std::uint32_t priority = 0;  ///< level for --evict priority (lower is evicted first)
  std::uint64_t rng_seed = 0;  ///< per-request stream (beam parents), independent of scheduling
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

 private:
  std::uint32_t draw_length(double mean);

  Options options_;
  Rng rng_;
  double clock_ = 0;  // continuous arrival time in steps
  std::uint64_t next_arrival_ = 0;
  std::uint64_t drawn_ = 0;
};

}  // namespace pkv::sim
