// sim/run_pkv.cpp — the simulator instantiated on pkv::PagedKvCache.
#include "pkv/paged_kv_cache.hpp"
#include "simulator_impl.hpp"

namespace pkv::sim {

namespace {
// OPT-13B: 40 heads of 128 (sizes the per-block memory only; the simulator never allocates it).
constexpr std::size_t kHeads = 40;
constexpr std::size_t kHeadDim = 128;
}  // namespace

Report run_pkv(const Options& options, const ProgressFn& progress) {
  Report failed;
  failed.cache_name = "pkv::PagedKvCache";
  failed.config = describe(options);
  if (auto err = validate(options); !err.empty()) {
    failed.error = err;
    return failed;
  }
  // --verify: sequences are pinned while their KV data is written, and copy-on-write sources
  // are held until copied (sim/verifier.hpp).
  PagedKvCache::Options cache_options;
  cache_options.hold_copy_sources = options.verify;
  auto cache =
      PagedKvCache::create(options.blocks, options.block_size, kHeads, kHeadDim, cache_options);
  if (!cache) {
    failed.error = "PagedKvCache::create: " + cache.error().message();
    return failed;
  }
  detail::Simulator<PagedKvCache> sim(options, *cache.value(), failed.cache_name, progress);
  return sim.run();
}

}  // namespace pkv::sim
