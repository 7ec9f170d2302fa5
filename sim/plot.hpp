// sim/plot.hpp — --plot: utilization and running sequences over time, drawn by gnuplot.
//
// Contract
//   Writes the series to a temporary directory, runs `gnuplot` on a generated script and removes
//   the temporaries. Returns "" on success, else a one-line error (gnuplot missing, gnuplot failed
//   with its first error line, file not written). Not thread-safe (runs a child process).
#pragma once

#include <string>

#include "report.hpp"

namespace pkv::sim {

/// `baseline` may be null; if given its series is drawn dashed beside pkv's.
std::string plot_png(const Report& report, const Report* baseline, const std::string& png_file,
                     const std::string& gnuplot = "gnuplot");

}  // namespace pkv::sim
