// src/cache/placement.hpp — which shard a sequence lives in (Options::affinity_shift).
//
//   shard(seq) = ((seq >> owner_shift) & owner_mask) << owner_pos | (hash(seq) & local_mask)
// Off (affinity_shift 0): 0, 0, 0, kShards - 1, the hash alone. On (shift s): the id's owner
// bits (from bit s up) pick one of kAffinitySlices slices of kShards / kAffinitySlices shards,
// the hash picks the shard within it. SeqMap's slot index uses the hash from bit 8 up, the shard
// only bits below 8, so the two are independent.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "pkv/paged_kv_cache.hpp"

namespace pkv::detail {

struct Placement {
  static_assert(PagedKvCache::kShards <= 256, "the shard may use only hash bits below 8");

  static Placement from_affinity_shift(unsigned shift) noexcept {
    Placement p;
    if (shift != 0) {
      constexpr std::size_t per_slice = PagedKvCache::kShards / PagedKvCache::kAffinitySlices;
      p.owner_shift = shift;
      p.owner_pos = static_cast<unsigned>(std::countr_zero(per_slice));
      p.owner_mask = PagedKvCache::kAffinitySlices - 1;
      p.local_mask = per_slice - 1;
    }
    return p;
  }

  /// `hash` is std::hash<SeqId>{}(seq).
  std::size_t shard(SeqId seq, std::size_t hash) const noexcept {
    return (((seq.value >> owner_shift) & owner_mask) << owner_pos) | (hash & local_mask);
  }

  unsigned owner_shift = 0;
  unsigned owner_pos = 0;
  std::uint64_t owner_mask = 0;
  std::uint64_t local_mask = PagedKvCache::kShards - 1;
};

}  // namespace pkv::detail
