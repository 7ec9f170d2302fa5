// src/c_api/pool.cpp — the C ABI of a standalone block pool (pkv_pool): create / destroy, its
// figures, acquire / retain / release of one block or several, reference counts and the validator.
#include <algorithm>
#include <span>
#include <utility>
#include <vector>

#include "c_api/common.hpp"

using namespace pkv::capi;
using pkv::BlockId;

namespace {

// The C block ids blocks[0..n) (NULL only when n == 0) as C++ ids.
std::vector<BlockId> block_ids(const uint32_t* blocks, std::size_t n) {
  std::vector<BlockId> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = BlockId{blocks[i]};
  return ids;
}

}  // namespace

pkv_status pkv_pool_create(size_t num_blocks, uint32_t magazine_size, pkv_pool** out) {
  return guarded([&] {
    PKV_NONNULL(out);
    auto r = pkv::BlockPool::create(num_blocks, pkv::BlockPool::Options{magazine_size});
    if (!r) return fail(r.error());
    return adopt(std::move(r.value()), out);
  });
}

pkv_status pkv_pool_destroy(pkv_pool* pool) {
  return destroy(pool);
}

PKV_FIGURE(pkv_pool_capacity, pkv_pool, p, size_t, p.capacity())
PKV_FIGURE(pkv_pool_free_count, pkv_pool, p, size_t, p.free_count())
PKV_FIGURE(pkv_pool_used_count, pkv_pool, p, size_t, p.used_count())
PKV_FIGURE(pkv_pool_total_acquired, pkv_pool, p, uint64_t, p.total_acquired())
PKV_FIGURE(pkv_pool_total_released, pkv_pool, p, uint64_t, p.total_released())

pkv_status pkv_pool_acquire(pkv_pool* pool, uint32_t* block) {
  return call(pool, [&](pkv::BlockPool& p) {
    PKV_NONNULL(block);
    auto r = p.acquire();
    if (!r) return fail(r.error());
    *block = r.value().value;
    return PKV_OK;
  });
}

pkv_status pkv_pool_acquire_n(pkv_pool* pool, size_t k, uint32_t* out) {
  return call(pool, [&](pkv::BlockPool& p) {
    if (k != 0) PKV_NONNULL(out);
    thread_local std::vector<BlockId> got;
    got.clear();
    if (auto r = p.acquire(k, got); !r) return fail(r.error());
    std::transform(got.begin(), got.end(), out, [](BlockId b) { return b.value; });
    return PKV_OK;
  });
}

pkv_status pkv_pool_retain(pkv_pool* pool, uint32_t block) {
  return call(pool, [&](pkv::BlockPool& p) { return status(p.retain(BlockId{block})); });
}

pkv_status pkv_pool_retain_n(pkv_pool* pool, const uint32_t* blocks, size_t n) {
  return call(pool, [&](pkv::BlockPool& p) {
    if (n != 0) PKV_NONNULL(blocks);
    const std::vector<BlockId> ids = block_ids(blocks, n);
    return status(p.retain(std::span<const BlockId>(ids)));
  });
}

pkv_status pkv_pool_release(pkv_pool* pool, uint32_t block, bool* freed) {
  return call(pool, [&](pkv::BlockPool& p) {
    PKV_NONNULL(freed);
    return status(p.release(BlockId{block}), freed);
  });
}

pkv_status pkv_pool_release_n(pkv_pool* pool, const uint32_t* blocks, size_t n, size_t* freed) {
  return call(pool, [&](pkv::BlockPool& p) {
    PKV_NONNULL(freed);
    if (n != 0) PKV_NONNULL(blocks);
    const std::vector<BlockId> ids = block_ids(blocks, n);
    return status(p.release(std::span<const BlockId>(ids)), freed);
  });
}

pkv_status pkv_pool_ref_count(const pkv_pool* pool, uint32_t block, uint32_t* out) {
  return call(pool, [&](const pkv::BlockPool& p) {
    PKV_NONNULL(out);
    *out = p.ref_count(BlockId{block});
    return PKV_OK;
  });
}

pkv_status pkv_pool_validate_unsafe(const pkv_pool* pool) {
  return call(pool, [&](const pkv::BlockPool& p) { return invariants(p.validate_unsafe()); });
}
