// sim/plot.hpp — --plot: utilization and running sequences over time, drawn by gnuplot.
//
// Contract
//   Writes the series to a temporary directory, runs `gnuplot` on a generated script and removes
//   the temporaries. Returns "" on success, else a one-line error (gnuplot missing, gnuplot failed
//   with its first error line, file not written). Not thread-safe (runs a child process).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "report.hpp"

namespace pkv::sim {

/// One cache size of --capacity-sweep.
struct SweepPoint {
  std::size_t blocks = 0;
  std::size_t tokens = 0;  ///< blocks x block size
  double hit_rate = 0;     ///< the replay's prefix hit rate (tokens)
  double lru_rate = 0;     ///< the LRU model at this capacity (trace.hpp lru_cache_bound), or -1
};

/// --capacity-sweep --plot: hit rate against capacity (tokens, log scale) with the replay's
/// points, the LRU model's and the infinite-cache bound as a horizontal line. Errors as above.
std::string plot_sweep_png(const std::vector<SweepPoint>& points, double bound,
                           const std::string& title, const std::string& png_file,
                           const std::string& gnuplot = "gnuplot");

/// `baseline` may be null; if given its series is drawn dashed beside pkv's.
std::string plot_png(const Report& report, const Report* baseline, const std::string& png_file,
                     const std::string& gnuplot = "gnuplot");

}  // namespace pkv::sim
