// sim/simulator.hpp — pkv-sim's entry points: run a workload on pkv or on the seed baseline.
//
// Contract
//   run_pkv / run_baseline build a fresh cache, run the whole simulation (Options::workers threads
//   plus the caller, which only waits) and return the Report; they never throw for bad options
//   (validate() first; an invalid Options gives a Report whose `error` says why). The progress
//   callback is called from one thread at a time, between scheduler steps.
#pragma once

#include <cstdint>
#include <functional>

#include "options.hpp"
#include "report.hpp"

namespace pkv::sim {

/// What the progress display shows; filled between steps (all workers parked).
struct Progress {
  std::uint64_t step = 0;
  double wall_s = 0;
  std::uint64_t done = 0;   ///< finished + aborted
  std::uint64_t total = 0;  ///< requests (0 = unlimited)
  std::uint64_t output_tokens = 0;
  double utilization = 0;
  std::uint64_t running_seqs = 0;
  std::uint64_t waiting = 0;
  std::uint64_t preemptions = 0;
  bool final = false;  ///< the last call of a run
};

using ProgressFn = std::function<void(const Progress&)>;

Report run_pkv(const Options& options, const ProgressFn& progress = {});

/// True when pkv-sim was built with baselines/seed_mutex_cache.hpp.
bool baseline_available() noexcept;
/// The same workload on pkv::baseline::SeedMutexCache. Without the baseline, a Report whose
/// `error` says it is unavailable.
Report run_baseline(const Options& options, const ProgressFn& progress = {});

}  // namespace pkv::sim
