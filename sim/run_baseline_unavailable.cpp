// sim/run_baseline_unavailable.cpp — built when baselines/ (pkv_baselines_dep) is not configured:
// --compare-baseline then says so instead of running anything.
#include "simulator.hpp"

namespace pkv::sim {

bool baseline_available() noexcept {
  return false;
}

Report run_baseline(const Options& options, const ProgressFn&) {
  Report r;
  r.cache_name = "seed+mutex";
  r.config = describe(options);
  r.error =
      "the seed baseline is unavailable: pkv-sim was built without baselines/ "
      "(pkv_baselines_dep)";
  return r;
}

}  // namespace pkv::sim
