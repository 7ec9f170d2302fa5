// src/c_api/cache.cpp — the C ABI of a cache as a whole: options, create / destroy, the eviction
// configuration, victim choice (select / evict / evict_to_threshold), the figures and statistics,
// Display text and the validator. Calls on one sequence are in sequences.cpp, batched calls in
// batch.cpp, prefix caching in prefix.cpp.
#include <sstream>
#include <string>
#include <utility>

#include "c_api/common.hpp"
#include "c_api/convert.hpp"

using namespace pkv::capi;

// ---- lifecycle ----------------------------------------------------------------------------------

pkv_status pkv_cache_options_init(pkv_cache_options* options) {
  PKV_NONNULL(options);
  const pkv::PagedKvCache::Options d{};
  *options = {d.pool.magazine_size, d.hold_copy_sources, d.affinity_shift,
              d.prefix.enabled,     to_c(d.prefix.hash), d.prefix.verify_tokens};
  return PKV_OK;
}

pkv_status pkv_cache_create(size_t num_blocks, size_t block_size, size_t num_heads, size_t head_dim,
                            const pkv_cache_options* options, pkv_cache** out) {
  return guarded([&] {
    PKV_NONNULL(out);
    pkv::PagedKvCache::Options o{};
    if (options != nullptr) {
      o.pool.magazine_size = options->magazine_size;
      o.hold_copy_sources = options->hold_copy_sources;
      o.affinity_shift = options->affinity_shift;
      o.prefix.enabled = options->prefix_caching;
      o.prefix.verify_tokens = options->prefix_verify_tokens;
      auto h = from_c(options->prefix_hash);
      if (!h) return fail(h.error());
      o.prefix.hash = h.value();
    }
    auto r = pkv::PagedKvCache::create(num_blocks, block_size, num_heads, head_dim, o);
    if (!r) return fail(r.error());
    return adopt(std::move(r.value()), out);
  });
}

pkv_status pkv_cache_destroy(pkv_cache* cache) {
  return destroy(cache);
}

// ---- eviction configuration ---------------------------------------------------------------------

pkv_status pkv_cache_set_eviction_strategy(pkv_cache* cache,
                                           const pkv_eviction_strategy* strategy) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(strategy);
    auto s = from_c(*strategy);
    if (!s) return fail(s.error());
    return status(c.set_eviction_strategy(s.value()));
  });
}

pkv_status pkv_cache_eviction_strategy(const pkv_cache* cache, pkv_eviction_strategy* out) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_NONNULL(out);
    *out = to_c(c.eviction_strategy());
    return PKV_OK;
  });
}

pkv_status pkv_cache_set_eviction_threshold(pkv_cache* cache, double threshold) {
  return call(cache,
              [&](pkv::PagedKvCache& c) { return status(c.set_eviction_threshold(threshold)); });
}

pkv_status pkv_cache_eviction_threshold(const pkv_cache* cache, double* out) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_NONNULL(out);
    *out = c.eviction_threshold();
    return PKV_OK;
  });
}

pkv_status pkv_cache_set_priority(pkv_cache* cache, uint64_t seq, uint32_t priority) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    return status(c.set_priority(pkv::SeqId{seq}, priority));
  });
}

// ---- eviction -----------------------------------------------------------------------------------

pkv_status pkv_cache_select_eviction_target(const pkv_cache* cache, uint64_t* seq, bool* found) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_NONNULL(seq);
    PKV_NONNULL(found);
    auto t = c.select_eviction_target();
    *found = t.has_value();
    if (t) *seq = t->value;
    return PKV_OK;
  });
}

pkv_status pkv_cache_evict(pkv_cache* cache, uint64_t* victim) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(victim);
    auto r = c.evict();
    if (!r) return fail(r.error());
    *victim = r.value().value;
    return PKV_OK;
  });
}

pkv_status pkv_cache_evict_to_threshold(pkv_cache* cache, double target, uint64_t* victims,
                                        size_t capacity, size_t* num_victims) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    const CallerBuffer<uint64_t> buf{victims, capacity, num_victims, "victims", "num_victims"};
    if (pkv_status s = buf.check(); s != PKV_OK) return s;
    *num_victims = 0;
    // An invalid target is the C++ call's to reject (with its message; it changes nothing).
    if (!(target >= 0.0 && target <= 1.0)) {
      auto r = c.evict_to_threshold(target);
      return r ? fail(PKV_INTERNAL_ERROR,
                      "Internal error: evict_to_threshold took an invalid target")
               : fail(r.error());
    }
    // A size query: at most every live sequence is a victim.
    if (victims == nullptr) return *buf.announce(c.num_sequences());
    // The C++ loop, bounded by the caller's buffer: evict() one victim at a time.
    while (c.utilization() > target && c.num_sequences() > 0) {
      if (*num_victims == capacity) {
        return fail(PKV_BUFFER_TOO_SMALL, "Buffer too small: evicted ",
                    std::to_string(capacity) +
                        " (the capacity) and the target is not reached; call again to continue");
      }
      auto r = c.evict();
      if (!r) break;  // another thread took the last sequence meanwhile
      victims[(*num_victims)++] = r.value().value;
    }
    return PKV_OK;
  });
}

// ---- figures ------------------------------------------------------------------------------------

PKV_FIGURE(pkv_cache_block_size, pkv_cache, c, size_t, c.block_size())
PKV_FIGURE(pkv_cache_total_blocks, pkv_cache, c, size_t, c.total_blocks())
PKV_FIGURE(pkv_cache_free_block_count, pkv_cache, c, size_t, c.free_block_count())
PKV_FIGURE(pkv_cache_used_block_count, pkv_cache, c, size_t, c.used_block_count())
PKV_FIGURE(pkv_cache_utilization, pkv_cache, c, double, c.utilization())
PKV_FIGURE(pkv_cache_block_memory_bytes, pkv_cache, c, size_t, c.block_memory_bytes())
PKV_FIGURE(pkv_cache_total_memory_bytes, pkv_cache, c, size_t, c.total_memory_bytes())
PKV_FIGURE(pkv_cache_used_memory_bytes, pkv_cache, c, size_t, c.used_memory_bytes())
PKV_FIGURE(pkv_cache_needs_eviction, pkv_cache, c, bool, c.needs_eviction())
PKV_FIGURE(pkv_cache_num_sequences, pkv_cache, c, size_t, c.num_sequences())
PKV_FIGURE(pkv_cache_cached_block_count, pkv_cache, c, size_t, c.cached_block_count())
PKV_FIGURE(pkv_cache_reclaimable_block_count, pkv_cache, c, size_t, c.reclaimable_block_count())

pkv_status pkv_cache_stats_get(const pkv_cache* cache, pkv_cache_stats* out) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_NONNULL(out);
    const pkv::CacheStats s = c.stats();
    *out = {s.total_allocations, s.total_frees, s.total_evictions, s.total_forks,
            s.peak_blocks_used};
    return PKV_OK;
  });
}

// ---- printing and validation --------------------------------------------------------------------

pkv_status pkv_cache_display(const pkv_cache* cache, char* out, size_t capacity, size_t* required) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    std::ostringstream os;
    os << c;
    std::string text = os.str();
    text.push_back('\0');
    return CallerBuffer<char>{out, capacity, required}.fill(text, [](char ch) { return ch; });
  });
}

pkv_status pkv_cache_validate_unsafe(const pkv_cache* cache) {
  return call(cache, [&](const pkv::PagedKvCache& c) { return invariants(c.validate_unsafe()); });
}
