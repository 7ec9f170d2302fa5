// sim/run_baseline.cpp — the simulator instantiated on the seed's design behind one mutex
// (baselines/seed_mutex_cache.hpp), for --compare-baseline.
#include <exception>

#include "seed_mutex_cache.hpp"
#include "simulator_impl.hpp"

namespace pkv::sim {

bool baseline_available() noexcept {
  return true;
}

Report run_baseline(const Options& options, const ProgressFn& progress) {
  Report failed;
  failed.cache_name = "seed+mutex";
  failed.config = describe(options);
  if (auto err = validate(options); !err.empty()) {
    failed.error = err;
    return failed;
  }
  // The seed has no copy-on-write (forked sequences write into the same shared block), so token
  // cookies cannot be checked on it: --verify applies to pkv only.
  Options o = options;
  o.verify = options.verify && options.verify_baseline;
  try {
    baseline::SeedMutexCache cache(o.blocks, o.block_size, 40, 128);
    detail::Simulator<baseline::SeedMutexCache> sim(o, cache, failed.cache_name, progress);
    Report r = sim.run();
    if (options.verify && !o.verify) {
      r.note +=
          std::string(r.note.empty() ? "" : "; ") + "not verified: the seed has no copy-on-write";
    }
    return r;
  } catch (const std::exception& e) {
    failed.error = std::string("SeedMutexCache: ") + e.what();
    return failed;
  }
}

}  // namespace pkv::sim
