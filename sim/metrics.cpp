// sim/metrics.cpp — utilization, the time series, sharing and internal waste (see metrics.hpp).
#include "metrics.hpp"

#include <algorithm>
#include <string>

namespace pkv::sim::detail {

Metrics::Metrics(const Options& o)
    : blocks_(o.blocks),
      bs_(o.block_size),
      sample_every_(o.sample_every),
      block_fill_(o.blocks, 0),
      block_stamp_(o.blocks, 0) {}

void Metrics::sample_step(std::uint64_t steps_run, std::uint64_t vstep, double wall_s,
                          std::size_t used, std::size_t live, std::size_t waiting) {
  const double util = static_cast<double>(used) / static_cast<double>(blocks_);
  util_sum_ += util;
  util_peak_ = std::max(util_peak_, util);
  ++util_samples_;
  last_util_ = util;
  last_live_ = live;
  last_waiting_ = waiting;
  if (steps_run % series_stride_ == 0) {
    series_.push_back(Sample{vstep, wall_s, used, live, waiting});
    if (series_.size() >= 2 * kMaxSeries) {
      std::vector<Sample> half;
      for (std::size_t i = 0; i < series_.size(); i += 2) half.push_back(series_[i]);
      series_ = std::move(half);
      series_stride_ *= 2;
    }
  }
}

bool Metrics::full_sample_due(std::uint64_t steps_run, std::size_t live) const {
  return steps_run % sample_every_ == 0 && live > 0;
}

void Metrics::begin_full_sample() {
  ++stamp_;
  seen_blocks_.clear();
  logical_ = 0;
  distinct_ = 0;
}

void Metrics::add(const SequenceInfo& info) {
  logical_ += info.block_ids.size();
  // Slots each table index fills, from the token runs (one run when never streamed).
  per_index_.assign(info.block_ids.size(), 0);
  auto runs = info.token_runs;
  if (runs.empty() && info.num_tokens > 0) runs.push_back({0, 0, info.num_tokens});
  for (const auto& run : runs) {
    for (std::uint64_t a = run.slot, end = run.slot + run.length; a < end;) {
      const std::uint64_t idx = a / bs_;
      const std::uint64_t stop = std::min<std::uint64_t>(end, (idx + 1) * bs_);
      if (idx < per_index_.size()) per_index_[idx] += static_cast<std::uint32_t>(stop - a);
      a = stop;
    }
  }
  for (std::size_t k = 0; k < info.block_ids.size(); ++k) {
    const auto b = info.block_ids[k].value;
    if (b >= blocks_) continue;
    if (block_stamp_[b] != stamp_) {
      block_stamp_[b] = stamp_;
      block_fill_[b] = 0;
      seen_blocks_.push_back(b);
      ++distinct_;
    }
    block_fill_[b] = std::max(block_fill_[b], per_index_[k]);
  }
}

bool Metrics::end_full_sample(std::size_t used, std::size_t live, std::size_t sim_live) {
  std::uint64_t stored = 0;
  for (auto b : seen_blocks_) stored += block_fill_[b];
  const bool agree = distinct_ == used && sim_live == live;
  if (!agree) ++accounting_mismatches_;
  logical_sum_ += logical_;
  physical_sum_ += distinct_;
  slots_sum_ += distinct_ * bs_;
  stored_sum_ += stored;
  ++sharing_samples_;
  return agree;
}

void Metrics::fill(Report& r) {
  r.util_mean = util_samples_ > 0 ? util_sum_ / static_cast<double>(util_samples_) : 0;
  r.util_peak = util_peak_;
  r.waste_pct = slots_sum_ > 0 ? 100.0 * static_cast<double>(slots_sum_ - stored_sum_) /
                                     static_cast<double>(slots_sum_)
                               : 0;
  r.sharing_saved_pct = logical_sum_ > 0
                            ? 100.0 * static_cast<double>(logical_sum_ - physical_sum_) /
                                  static_cast<double>(logical_sum_)
                            : 0;
  r.sharing_samples = sharing_samples_;
  r.series = std::move(series_);
  if (accounting_mismatches_ > 0) {
    r.note = std::to_string(accounting_mismatches_) +
             " samples where the block tables and the cache's counters disagreed";
  }
}

}  // namespace pkv::sim::detail
