// sim/report.hpp — what a run measured, and its text and JSON forms.
//
// Accounting (checked by the tests; the simulator fills `error` when it does not hold):
//     finished + aborted + unfinished + not_arrived == requests
//     end_used_blocks == 0 && end_sequences == 0          (everything freed at the end)
//   Sharing follows the PagedAttention paper: over the samples taken at step boundaries,
//     logical_blocks = sum over live sequences of their block-table lengths (no sharing)
//     used_blocks    = physical blocks in use
//     memory_saved   = (sum logical - sum used) / sum logical
//   Internal waste = allocated token slots that hold no token, over allocated slots.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "histogram.hpp"
#include "options.hpp"
#include "pkv/prefix_types.hpp"
#include "trace.hpp"

namespace pkv::sim {

/// The allocator calls the simulator times. append_batch (a worker's decode step, one call) is
/// recorded as one sample per item, each the call's time divided by its items, so counts and
/// rates are per sequence operation and the time sum is exact; append: admission's appends and
/// the retries of items that found no free block.
enum class Op : std::uint8_t {
  allocate,
  append,
  append_batch,
  fork,
  free,
  evict,
  streaming,
  set_priority,
  commit
};
inline constexpr std::size_t kNumOps = 9;
const char* op_name(Op op) noexcept;

/// One point of the time series (taken every step; sharing/waste every sample_every steps).
struct Sample {
  std::uint64_t step = 0;
  double wall_s = 0;
  std::uint64_t used_blocks = 0;
  std::uint64_t running_seqs = 0;  ///< live sequences in the cache
  std::uint64_t waiting = 0;       ///< requests waiting for admission
};

struct Report {
  std::string cache_name;  ///< "pkv::PagedKvCache" or the baseline's name
  std::string config;      ///< describe(options)
  // requests
  std::uint64_t requests = 0;  ///< requests drawn from the stream (arrived or not)
  std::uint64_t finished = 0;
  std::uint64_t aborted = 0;      ///< could never fit in the cache
  std::uint64_t unfinished = 0;   ///< arrived but stopped by --duration / --max-steps
  std::uint64_t not_arrived = 0;  ///< drawn, arrival after the stop
  double mean_prompt = 0;         ///< realised means of the requests drawn
  double mean_output = 0;
  // time
  std::uint64_t steps = 0;
  double wall_s = 0;
  // tokens
  std::uint64_t prompt_tokens = 0;      ///< prompt tokens allocated at first admission
  std::uint64_t output_tokens = 0;      ///< tokens decoded (one per running sequence per step)
  std::uint64_t recomputed_tokens = 0;  ///< tokens re-allocated after a preemption
  // prefix caching (token workloads: --trace, --dataset shared-prefix)
  //   prefix hit rate = prefix_hit_tokens / prompt_tokens (first admissions; the bound's rules)
  bool token_mode = false;
  bool prefix_caching = false;  ///< the cache looked prefixes up (false: by count, the seed)
  std::uint64_t prefix_hit_tokens = 0;       ///< prompt tokens found cached: not recomputed
  std::uint64_t recompute_hit_tokens = 0;    ///< readmitted (preempted) tokens found cached
  PrefixCacheStats prefix{};                 ///< the cache's own counters (every allocate)
  std::uint64_t end_cached_blocks = 0;       ///< findable blocks after every request was freed
  std::uint64_t end_reclaimable_blocks = 0;  ///< of them held by no sequence (all, at the end)
  bool has_bound = false;
  PrefixBound bound{};  ///< infinite cache, same trace, same block size and rules
  // allocator calls
  LatencyHistogram latency;  ///< every timed call
  LatencyHistogram op_latency[kNumOps];
  std::uint64_t failed_calls = 0;  ///< calls (or append_batch items) that returned an error
  double allocator_seconds = 0;    ///< time inside timed calls, all workers
  double worker_seconds = 0;       ///< wall time x workers
  // memory
  std::size_t total_blocks = 0;
  std::size_t block_size = 0;
  double util_mean = 0;
  double util_peak = 0;
  std::uint64_t peak_blocks_used = 0;  ///< the cache's own high-water mark
  double waste_pct = 0;                ///< internal waste, %
  double sharing_saved_pct = 0;        ///< memory saved by sharing, %
  std::uint64_t sharing_samples = 0;
  // events
  std::uint64_t cow_copies = 0;
  std::uint64_t forks = 0;
  std::uint64_t preemptions = 0;  ///< request groups requeued (recompute)
  std::uint64_t evictions = 0;    ///< successful evict() calls
  std::uint64_t streaming_trims = 0;
  std::uint64_t streaming_dropped_tokens = 0;
  // checks
  bool verified = false;
  std::uint64_t verify_sequences_checked = 0;
  std::uint64_t verify_tokens_checked = 0;
  std::uint64_t end_used_blocks = 0;
  std::uint64_t end_sequences = 0;
  std::string error;  ///< non-empty: the run failed (error exit)
  std::string note;   ///< e.g. why a run was skipped

  std::vector<Sample> series;

  double requests_per_s() const noexcept;
  double tokens_per_s() const noexcept;
  double calls_per_s() const noexcept;
  double allocator_share_pct() const noexcept;
  double prefix_hit_rate() const noexcept;
};

void print_text(std::ostream& os, const Report& r);
/// Two runs side by side (pkv first, baseline second).
void print_comparison(std::ostream& os, const Report& a, const Report& b);
/// A JSON object; `baseline` may be null.
void print_json(std::ostream& os, const Report& r, const Report* baseline);

}  // namespace pkv::sim
