// src/c_api/prefix.cpp — the C ABI of prefix caching: allocate / append by token ids, commit,
// match_prefix, its statistics and reset, a block's reference count, and the handle-free chain
// hashes of full blocks (pkv_block_hashes).
#include <cstring>

#include "c_api/common.hpp"
#include "c_api/convert.hpp"

using namespace pkv::capi;
using pkv::SeqId;

pkv_status pkv_cache_allocate_tokens(pkv_cache* cache, uint64_t seq, const uint32_t* prompt,
                                     size_t n, const char* salt, size_t salt_len, size_t* cached) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_ARRAY(prompt, n);
    PKV_ARRAY(salt, salt_len);
    PKV_NONNULL(cached);
    return status(c.allocate(SeqId{seq}, tokens_of(prompt, n), salt_of(salt, salt_len)), cached);
  });
}

pkv_status pkv_cache_append_tokens(pkv_cache* cache, uint64_t seq, const uint32_t* tokens, size_t n,
                                   pkv_copy_op* copy) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_ARRAY(tokens, n);
    PKV_NONNULL(copy);
    auto r = c.append(SeqId{seq}, tokens_of(tokens, n));
    if (!r) return fail(r.error());
    *copy = to_c(r.value());
    return PKV_OK;
  });
}

pkv_status pkv_cache_commit(pkv_cache* cache, uint64_t seq, size_t num_tokens, size_t* published) {
  return call(cache, [&](pkv::PagedKvCache& c) {
    PKV_NONNULL(published);
    return status(c.commit(SeqId{seq}, num_tokens), published);
  });
}

pkv_status pkv_cache_match_prefix(const pkv_cache* cache, const uint32_t* tokens, size_t n,
                                  const char* salt, size_t salt_len, size_t* out) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_ARRAY(tokens, n);
    PKV_ARRAY(salt, salt_len);
    PKV_NONNULL(out);
    *out = c.match_prefix(tokens_of(tokens, n), salt_of(salt, salt_len));
    return PKV_OK;
  });
}

pkv_status pkv_cache_prefix_stats(const pkv_cache* cache, pkv_prefix_stats* out) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_NONNULL(out);
    const pkv::PrefixCacheStats s = c.prefix_stats();
    *out = {s.requests, s.queries, s.hits, s.published, s.reclaimed, s.verify_failures};
    return PKV_OK;
  });
}

pkv_status pkv_cache_reset_prefix_cache(pkv_cache* cache) {
  return call(cache, [&](pkv::PagedKvCache& c) { return status(c.reset_prefix_cache()); });
}

pkv_status pkv_cache_block_ref_count(const pkv_cache* cache, uint32_t block, size_t* out) {
  return call(cache, [&](const pkv::PagedKvCache& c) {
    PKV_NONNULL(out);
    *out = c.block_ref_count(pkv::BlockId{block});
    return PKV_OK;
  });
}

pkv_status pkv_block_hashes(const uint32_t* tokens, size_t n, size_t block_size, const char* salt,
                            size_t salt_len, pkv_hash_algorithm algorithm, pkv_block_hash* out,
                            size_t capacity, size_t* required) {
  return guarded([&] {
    PKV_ARRAY(tokens, n);
    PKV_ARRAY(salt, salt_len);
    const CallerBuffer<pkv_block_hash> buf{out, capacity, required};
    if (pkv_status s = buf.check(); s != PKV_OK) return s;
    auto a = from_c(algorithm);
    if (!a) return fail(a.error());
    // block_hashes throws for block_size 0; say it as the status for a bad argument.
    if (block_size == 0) {
      return fail(pkv::Error::invalid_argument("block_hashes: block_size must be positive"));
    }
    // The result size is known before hashing: answer a size query without computing digests.
    if (auto s = buf.announce(n / block_size)) return *s;
    const auto hs =
        pkv::block_hashes(tokens_of(tokens, n), block_size, salt_of(salt, salt_len), a.value());
    return buf.fill(hs, [](const pkv::BlockHash& h) {
      pkv_block_hash r;
      std::memcpy(r.bytes, h.bytes.data(), sizeof r.bytes);
      return r;
    });
  });
}
