// sim/metrics.hpp — what the simulator measures between steps: block utilization and the time
// series (every step), and at every full sample the sharing and internal waste of the live
// sequences' block tables; fill() puts the totals into the Report.
//
// Definitions (report.hpp states them for the reader of a report)
//   logical  = sum over live sequences of their block-table lengths (what they need unshared)
//   distinct = physical blocks those tables name;  saved = (sum logical - sum distinct) / logical
//   stored   = sum over distinct blocks of the most slots any table fills in it;
//   waste    = (distinct x block_size - stored) / (distinct x block_size)
//
// Not thread-safe: used only by the step barrier's completion (every worker parked) and before
// and after the workers run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "options.hpp"
#include "pkv/types.hpp"
#include "report.hpp"

namespace pkv::sim::detail {

class Metrics {
 public:
  explicit Metrics(const Options& o);

  /// Every step: utilization and (thinned to at most 2 x kMaxSeries points) the time series.
  void sample_step(std::uint64_t steps_run, std::uint64_t vstep, double wall_s, std::size_t used,
                   std::size_t live, std::size_t waiting);
  /// True when this step takes a full sample (block tables read back).
  bool full_sample_due(std::uint64_t steps_run, std::size_t live) const;

  /// A full sample: begin, one add() per live sequence, end. end() returns false when the block
  /// tables (distinct blocks, sequences) disagree with the cache's counters (used, live).
  void begin_full_sample();
  void add(const SequenceInfo& info);
  bool end_full_sample(std::size_t used, std::size_t live, std::size_t sim_live);
  std::uint64_t distinct_blocks() const noexcept { return distinct_; }

  double last_utilization() const noexcept { return last_util_; }
  std::size_t last_live() const noexcept { return last_live_; }
  std::size_t last_waiting() const noexcept { return last_waiting_; }

  /// Utilization, waste, sharing, the series and the mismatch note.
  void fill(Report& r);

 private:
  static constexpr std::size_t kMaxSeries = 4096;

  const std::size_t blocks_;
  const std::size_t bs_;
  const std::uint32_t sample_every_;

  double util_sum_ = 0;
  double util_peak_ = 0;
  std::uint64_t util_samples_ = 0;
  double last_util_ = 0;
  std::size_t last_live_ = 0;
  std::size_t last_waiting_ = 0;
  std::vector<Sample> series_;
  std::uint64_t series_stride_ = 1;

  // The current full sample: the most slots any table fills in each block seen (block_fill_),
  // valid where block_stamp_ == stamp_.
  std::vector<std::uint32_t> block_fill_;
  std::vector<std::uint64_t> block_stamp_;
  std::vector<std::uint32_t> seen_blocks_;
  std::vector<std::uint32_t> per_index_;
  std::uint64_t stamp_ = 0;
  std::uint64_t logical_ = 0;
  std::uint64_t distinct_ = 0;

  std::uint64_t logical_sum_ = 0;
  std::uint64_t physical_sum_ = 0;
  std::uint64_t slots_sum_ = 0;
  std::uint64_t stored_sum_ = 0;
  std::uint64_t sharing_samples_ = 0;
  std::uint64_t accounting_mismatches_ = 0;
};

}  // namespace pkv::sim::detail
