// The C ABI (include/pkv/pkv.h) over the public C++ API. Each exported function is one guarded
// lambda: check the handle and the pointers, call the C++ method, convert the result. Adding a
// C++ method to the ABI is a declaration in pkv.h and a few lines here.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "pkv/pkv.h"
#include "pkv/pkv.hpp"

using pkv::BlockId;
using pkv::SeqId;

// A handle is a 16-byte shell: a magic word naming its kind and the C++ object. Destroy deletes
// the object, overwrites the magic and keeps the shell (see graveyard()), so a destroyed handle
// used again is detected instead of read after free.
struct pkv_cache {
  std::uint64_t magic;
  pkv::PagedKvCache* impl;
};
struct pkv_pool {
  std::uint64_t magic;
  pkv::BlockPool* impl;
};

namespace {

constexpr std::uint64_t kCacheMagic = 0x706b765f63616368ULL;  // "pkv_cach"
constexpr std::uint64_t kPoolMagic = 0x706b765f706f6f6cULL;   // "pkv_pool"
constexpr std::uint64_t kDeadMagic = 0x646561645f706b76ULL;   // "dead_pkv"

static_assert(static_cast<int>(pkv::Errc::out_of_memory) + 1 == PKV_OUT_OF_MEMORY);
static_assert(static_cast<int>(pkv::Errc::sequence_not_found) + 1 == PKV_SEQUENCE_NOT_FOUND);
static_assert(static_cast<int>(pkv::Errc::block_not_found) + 1 == PKV_BLOCK_NOT_FOUND);
static_assert(static_cast<int>(pkv::Errc::invalid_operation) + 1 == PKV_INVALID_OPERATION);
static_assert(static_cast<int>(pkv::Errc::invalid_argument) + 1 == PKV_INVALID_ARGUMENT);

// ---- the thread-local last error (a fixed buffer: recording an error never allocates) ----------

constexpr std::size_t kMessageBytes = 512;
thread_local char t_message[kMessageBytes] = "";

pkv_status fail(pkv_status status, std::string_view a, std::string_view b = {},
                std::string_view c = {}) noexcept {
  std::size_t n = 0;
  for (std::string_view part : {a, b, c}) {
    const std::size_t k = std::min(part.size(), kMessageBytes - 1 - n);
    if (k != 0) std::memcpy(t_message + n, part.data(), k);  // an empty view may hold nullptr
    n += k;
  }
  t_message[n] = '\0';
  return status;
}

pkv_status status_of(pkv::Errc code) noexcept {
  return static_cast<pkv_status>(static_cast<int>(code) + 1);
}

pkv_status fail(const pkv::Error& e) noexcept {
  return fail(status_of(e.code()), e.message());
}

pkv_status null_arg(const char* name) noexcept {
  return fail(PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer for ", name);
}

pkv_status too_small(std::size_t required, std::size_t capacity) {
  return fail(PKV_BUFFER_TOO_SMALL, "Buffer too small: " + std::to_string(required) +
                                        " elements needed, capacity " + std::to_string(capacity));
}

// Runs one exported function's body; no exception leaves it.
template <class F>
pkv_status guarded(F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(PKV_HOST_OUT_OF_MEMORY, "Host out of memory (std::bad_alloc)");
  } catch (const std::exception& e) {
    return fail(PKV_INTERNAL_ERROR, "Internal error: ", e.what());
  } catch (...) {
    return fail(PKV_INTERNAL_ERROR, "Internal error: unknown exception");
  }
}

// ---- handles -----------------------------------------------------------------------------------

// Destroyed shells, kept for the life of the process (reachable from here, so leak checkers see
// no leak). Never destroyed itself: static destructors may run before other threads stop.
struct Graveyard {
  std::mutex mu;
  std::vector<const void*> shells;
};
Graveyard& graveyard() {
  static Graveyard* g = new Graveyard;
  return *g;
}
void bury(const void* shell) {
  auto& g = graveyard();
  std::lock_guard lock(g.mu);
  g.shells.push_back(shell);  // may throw bad_alloc: the shell then stays unreferenced (leaked)
}

template <class Handle>
pkv_status bad_handle(const Handle* h, const char* kind) noexcept {
  if (h == nullptr) return null_arg(kind);
  return fail(PKV_INVALID_ARGUMENT, "Invalid argument: not a live ", kind,
              " handle (destroyed, or of another kind)");
}

#define PKV_CACHE(var, handle)                                 \
  if ((handle) == nullptr || (handle)->magic != kCacheMagic) { \
    return bad_handle(handle, "pkv_cache");                    \
  }                                                            \
  auto* var = (handle)->impl
#define PKV_POOL(var, handle)                                 \
  if ((handle) == nullptr || (handle)->magic != kPoolMagic) { \
    return bad_handle(handle, "pkv_pool");                    \
  }                                                           \
  auto* var = (handle)->impl
#define PKV_NONNULL(ptr) \
  if ((ptr) == nullptr) return null_arg(#ptr)

// ---- result conversion -------------------------------------------------------------------------

pkv_status status(const pkv::Result<void>& r) noexcept {
  return r ? PKV_OK : fail(r.error());
}

template <class T, class Out>
pkv_status status(const pkv::Result<T>& r, Out* out) {
  if (!r) return fail(r.error());
  *out = static_cast<Out>(r.value());
  return PKV_OK;
}

// Copies `src` (converted by `conv`) into a caller's buffer: see "Variable-length results".
template <class Out, class Src, class Conv>
pkv_status fill(const Src& src, Out* out, std::size_t capacity, std::size_t* required, Conv conv) {
  PKV_NONNULL(required);
  if (out == nullptr && capacity != 0) return null_arg("out");
  *required = src.size();
  if (out == nullptr) return PKV_OK;  // size query
  if (src.size() > capacity) return too_small(src.size(), capacity);
  std::transform(src.begin(), src.end(), out, conv);
  return PKV_OK;
}

pkv_copy_op to_c(const std::optional<pkv::CopyOp>& op) noexcept {
  if (!op) return {PKV_NO_BLOCK, PKV_NO_BLOCK};
  return {op->src.value, op->dst.value};
}

pkv::Result<pkv::EvictionStrategy> from_c(const pkv_eviction_strategy& s) {
  // A C caller may store any int in the enum field; reading it as the C++ enum type would be
  // undefined for values outside the enumerators, so read its bytes as an int.
  static_assert(sizeof(pkv_strategy_kind) == sizeof(int));
  int kind = 0;
  std::memcpy(&kind, &s.kind, sizeof kind);
  switch (kind) {
    case PKV_STRATEGY_LRU:
      return pkv::EvictionStrategy::lru();
    case PKV_STRATEGY_LFU:
      return pkv::EvictionStrategy::lfu();
    case PKV_STRATEGY_LONGEST_FIRST:
      return pkv::EvictionStrategy::longest_first();
    case PKV_STRATEGY_PRIORITY:
      return pkv::EvictionStrategy::priority(s.levels);
    case PKV_STRATEGY_STREAMING_LLM:
      return pkv::EvictionStrategy::streaming_llm(s.sink_tokens, s.window_tokens);
    default:
      return pkv::Error::invalid_argument("unknown eviction strategy kind " + std::to_string(kind));
  }
}

pkv_eviction_strategy to_c(const pkv::EvictionStrategy& s) noexcept {
  using Kind = pkv::EvictionStrategy::Kind;
  pkv_eviction_strategy out{PKV_STRATEGY_LRU, s.levels(), s.sink_tokens(), s.window_tokens()};
  switch (s.kind()) {
    case Kind::lru:
      out.kind = PKV_STRATEGY_LRU;
      break;
    case Kind::lfu:
      out.kind = PKV_STRATEGY_LFU;
      break;
    case Kind::longest_first:
      out.kind = PKV_STRATEGY_LONGEST_FIRST;
      break;
    case Kind::priority:
      out.kind = PKV_STRATEGY_PRIORITY;
      break;
    case Kind::streaming_llm:
      out.kind = PKV_STRATEGY_STREAMING_LLM;
      break;
  }
  return out;
}

// As pkv_strategy_kind: read the enum's bytes as an int (a C caller may store any value).
pkv::Result<pkv::HashAlgorithm> from_c(const pkv_hash_algorithm& a) {
  static_assert(sizeof(pkv_hash_algorithm) == sizeof(int));
  int v = 0;
  std::memcpy(&v, &a, sizeof v);
  switch (v) {
    case PKV_HASH_SHA256:
      return pkv::HashAlgorithm::sha256;
    case PKV_HASH_XXH3_128:
      return pkv::HashAlgorithm::xxh3_128;
    default:
      return pkv::Error::invalid_argument("unknown hash algorithm " + std::to_string(v));
  }
}

pkv_hash_algorithm to_c(pkv::HashAlgorithm a) noexcept {
  return a == pkv::HashAlgorithm::sha256 ? PKV_HASH_SHA256 : PKV_HASH_XXH3_128;
}

// A (pointer, length) argument as a span / string_view; NULL is allowed only with length 0.
#define PKV_ARRAY(ptr, n) \
  if ((ptr) == nullptr && (n) != 0) return null_arg(#ptr)

std::span<const pkv::TokenId> tokens_of(const uint32_t* p, std::size_t n) noexcept {
  static_assert(std::is_same_v<pkv::TokenId, uint32_t>);
  return n == 0 ? std::span<const pkv::TokenId>{} : std::span<const pkv::TokenId>(p, n);
}
std::string_view salt_of(const char* p, std::size_t n) noexcept {
  return n == 0 ? std::string_view{} : std::string_view(p, n);
}

// Scratch of append_batch, per thread, so a decode step allocates nothing once warm.
struct BatchScratch {
  std::vector<SeqId> ids;
  std::vector<std::size_t> counts;
  pkv::AppendBatchOutcome outcome;
  pkv::FreeManyOutcome freed;
};
thread_local BatchScratch t_batch;

// Copies an append_batch outcome into the caller's arrays (room for every item: checked by the
// caller); the first failed item's message becomes the last error message.
pkv_status write_outcome(const pkv::AppendBatchOutcome& o, pkv_item_copy* copies,
                         size_t* num_copies, pkv_item_error* errors, size_t* num_errors) noexcept {
  for (const auto& ic : o.copies) {
    copies[(*num_copies)++] = {ic.item, {ic.copy.src.value, ic.copy.dst.value}};
  }
  for (const auto& ie : o.errors) {
    errors[(*num_errors)++] = {ie.item, status_of(ie.error.code())};
  }
  if (!o.errors.empty()) (void)fail(o.errors.front().error);
  return PKV_OK;
}

}  // namespace

// ---- errors ------------------------------------------------------------------------------------

const char* pkv_status_name(int s) {
  switch (s) {
    case PKV_OK:
      return "PKV_OK";
    case PKV_OUT_OF_MEMORY:
      return "PKV_OUT_OF_MEMORY";
    case PKV_SEQUENCE_NOT_FOUND:
      return "PKV_SEQUENCE_NOT_FOUND";
    case PKV_BLOCK_NOT_FOUND:
      return "PKV_BLOCK_NOT_FOUND";
    case PKV_INVALID_OPERATION:
      return "PKV_INVALID_OPERATION";
    case PKV_INVALID_ARGUMENT:
      return "PKV_INVALID_ARGUMENT";
    case PKV_BUFFER_TOO_SMALL:
      return "PKV_BUFFER_TOO_SMALL";
    case PKV_HOST_OUT_OF_MEMORY:
      return "PKV_HOST_OUT_OF_MEMORY";
    case PKV_INTERNAL_ERROR:
      return "PKV_INTERNAL_ERROR";
  }
  return "PKV_UNKNOWN_STATUS";
}

const char* pkv_last_error_message(void) {
  return t_message;
}

// ---- cache lifecycle ---------------------------------------------------------------------------

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
    auto shell = std::make_unique<pkv_cache>();
    shell->magic = kCacheMagic;
    shell->impl = r.value().release();
    *out = shell.release();
    return PKV_OK;
  });
}

pkv_status pkv_cache_destroy(pkv_cache* cache) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    cache->magic = kDeadMagic;
    cache->impl = nullptr;
    delete c;
    bury(cache);
    return PKV_OK;
  });
}

// ---- eviction configuration --------------------------------------------------------------------

pkv_status pkv_cache_set_eviction_strategy(pkv_cache* cache,
                                           const pkv_eviction_strategy* strategy) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(strategy);
    auto s = from_c(*strategy);
    if (!s) return fail(s.error());
    return status(c->set_eviction_strategy(s.value()));
  });
}

pkv_status pkv_cache_eviction_strategy(const pkv_cache* cache, pkv_eviction_strategy* out) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(out);
    *out = to_c(c->eviction_strategy());
    return PKV_OK;
  });
}

pkv_status pkv_cache_set_eviction_threshold(pkv_cache* cache, double threshold) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->set_eviction_threshold(threshold));
  });
}

pkv_status pkv_cache_eviction_threshold(const pkv_cache* cache, double* out) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(out);
    *out = c->eviction_threshold();
    return PKV_OK;
  });
}

pkv_status pkv_cache_set_priority(pkv_cache* cache, uint64_t seq, uint32_t priority) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->set_priority(SeqId{seq}, priority));
  });
}

// ---- sequences ---------------------------------------------------------------------------------

pkv_status pkv_cache_allocate(pkv_cache* cache, uint64_t seq, size_t num_tokens) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->allocate(SeqId{seq}, num_tokens));
  });
}

pkv_status pkv_cache_append(pkv_cache* cache, uint64_t seq, size_t num_tokens, pkv_copy_op* copy) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(copy);
    auto r = c->append(SeqId{seq}, num_tokens);
    if (!r) return fail(r.error());
    *copy = to_c(r.value());
    return PKV_OK;
  });
}

pkv_status pkv_cache_append_batch(pkv_cache* cache, const uint64_t* seqs, const size_t* num_tokens,
                                  size_t uniform_tokens, size_t n, pkv_item_copy* copies,
                                  size_t* num_copies, pkv_item_error* errors, size_t* num_errors) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(num_copies);
    PKV_NONNULL(num_errors);
    *num_copies = 0;
    *num_errors = 0;
    if (n != 0) {
      PKV_NONNULL(seqs);
      PKV_NONNULL(copies);
      PKV_NONNULL(errors);
    }
    auto& b = t_batch;
    b.ids.resize(n);
    for (std::size_t i = 0; i < n; ++i) b.ids[i] = SeqId{seqs[i]};
    if (num_tokens != nullptr) {
      b.counts.assign(num_tokens, num_tokens + n);
      if (auto r = c->append_batch(b.ids, b.counts, b.outcome); !r) return fail(r.error());
    } else {
      c->append_batch(b.ids, uniform_tokens, b.outcome);
    }
    return write_outcome(b.outcome, copies, num_copies, errors, num_errors);
  });
}

pkv_status pkv_cache_append_batch_tokens(pkv_cache* cache, const uint64_t* seqs,
                                         const uint32_t* tokens, size_t n, pkv_item_copy* copies,
                                         size_t* num_copies, pkv_item_error* errors,
                                         size_t* num_errors) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(num_copies);
    PKV_NONNULL(num_errors);
    *num_copies = 0;
    *num_errors = 0;
    if (n != 0) {
      PKV_NONNULL(seqs);
      PKV_NONNULL(tokens);
      PKV_NONNULL(copies);
      PKV_NONNULL(errors);
    }
    auto& b = t_batch;
    b.ids.resize(n);
    for (std::size_t i = 0; i < n; ++i) b.ids[i] = SeqId{seqs[i]};
    if (auto r = c->append_batch(b.ids, tokens_of(tokens, n), b.outcome); !r) {
      return fail(r.error());
    }
    return write_outcome(b.outcome, copies, num_copies, errors, num_errors);
  });
}

pkv_status pkv_cache_free(pkv_cache* cache, uint64_t seq) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->free(SeqId{seq}));
  });
}

pkv_status pkv_cache_fork(pkv_cache* cache, uint64_t src, uint64_t dst) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->fork(SeqId{src}, SeqId{dst}));
  });
}

pkv_status pkv_cache_fork_many(pkv_cache* cache, uint64_t src, const uint64_t* dsts, size_t n) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_ARRAY(dsts, n);
    auto& ids = t_batch.ids;
    ids.resize(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = SeqId{dsts[i]};
    return status(c->fork_many(SeqId{src}, ids));
  });
}

pkv_status pkv_cache_free_many(pkv_cache* cache, const uint64_t* seqs, size_t n,
                               pkv_item_error* errors, size_t* num_errors) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(num_errors);
    *num_errors = 0;
    PKV_ARRAY(seqs, n);
    PKV_ARRAY(errors, n);
    auto& b = t_batch;
    b.ids.resize(n);
    for (std::size_t i = 0; i < n; ++i) b.ids[i] = SeqId{seqs[i]};
    c->free_many(b.ids, b.freed);
    for (const auto& ie : b.freed.errors) {
      errors[(*num_errors)++] = {ie.item, status_of(ie.error.code())};
    }
    if (!b.freed.errors.empty()) (void)fail(b.freed.errors.front().error);
    return PKV_OK;
  });
}

pkv_status pkv_cache_truncate(pkv_cache* cache, uint64_t seq, size_t num_tokens,
                              size_t* blocks_released) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(blocks_released);
    return status(c->truncate(SeqId{seq}, num_tokens), blocks_released);
  });
}

// ---- prefix caching ----------------------------------------------------------------------------

pkv_status pkv_cache_allocate_tokens(pkv_cache* cache, uint64_t seq, const uint32_t* prompt,
                                     size_t n, const char* salt, size_t salt_len, size_t* cached) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_ARRAY(prompt, n);
    PKV_ARRAY(salt, salt_len);
    PKV_NONNULL(cached);
    return status(c->allocate(SeqId{seq}, tokens_of(prompt, n), salt_of(salt, salt_len)), cached);
  });
}

pkv_status pkv_cache_append_tokens(pkv_cache* cache, uint64_t seq, const uint32_t* tokens, size_t n,
                                   pkv_copy_op* copy) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_ARRAY(tokens, n);
    PKV_NONNULL(copy);
    auto r = c->append(SeqId{seq}, tokens_of(tokens, n));
    if (!r) return fail(r.error());
    *copy = to_c(r.value());
    return PKV_OK;
  });
}

pkv_status pkv_cache_commit(pkv_cache* cache, uint64_t seq, size_t num_tokens, size_t* published) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(published);
    return status(c->commit(SeqId{seq}, num_tokens), published);
  });
}

pkv_status pkv_cache_match_prefix(const pkv_cache* cache, const uint32_t* tokens, size_t n,
                                  const char* salt, size_t salt_len, size_t* out) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_ARRAY(tokens, n);
    PKV_ARRAY(salt, salt_len);
    PKV_NONNULL(out);
    *out = c->match_prefix(tokens_of(tokens, n), salt_of(salt, salt_len));
    return PKV_OK;
  });
}

pkv_status pkv_cache_prefix_stats(const pkv_cache* cache, pkv_prefix_stats* out) {
  PKV_CACHE(c, cache);
  PKV_NONNULL(out);
  const pkv::PrefixCacheStats s = c->prefix_stats();
  *out = {s.requests, s.queries, s.hits, s.published, s.reclaimed, s.verify_failures};
  return PKV_OK;
}

pkv_status pkv_cache_reset_prefix_cache(pkv_cache* cache) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->reset_prefix_cache());
  });
}

pkv_status pkv_cache_block_ref_count(const pkv_cache* cache, uint32_t block, size_t* out) {
  PKV_CACHE(c, cache);
  PKV_NONNULL(out);
  *out = c->block_ref_count(BlockId{block});
  return PKV_OK;
}

pkv_status pkv_block_hashes(const uint32_t* tokens, size_t n, size_t block_size, const char* salt,
                            size_t salt_len, pkv_hash_algorithm algorithm, pkv_block_hash* out,
                            size_t capacity, size_t* required) {
  return guarded([&] {
    PKV_ARRAY(tokens, n);
    PKV_ARRAY(salt, salt_len);
    PKV_NONNULL(required);
    if (out == nullptr && capacity != 0) return null_arg("out");
    auto a = from_c(algorithm);
    if (!a) return fail(a.error());
    // block_hashes throws for block_size 0; say it as the status for a bad argument.
    if (block_size == 0) {
      return fail(pkv::Error::invalid_argument("block_hashes: block_size must be positive"));
    }
    // The result size is known before hashing: answer a size query without computing digests.
    if (out == nullptr || n / block_size > capacity) {
      *required = n / block_size;
      return out == nullptr ? PKV_OK : too_small(*required, capacity);
    }
    const auto hs =
        pkv::block_hashes(tokens_of(tokens, n), block_size, salt_of(salt, salt_len), a.value());
    return fill(hs, out, capacity, required, [](const pkv::BlockHash& h) {
      pkv_block_hash r;
      std::memcpy(r.bytes, h.bytes.data(), sizeof r.bytes);
      return r;
    });
  });
}

pkv_status pkv_cache_pin(pkv_cache* cache, uint64_t seq) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->pin(SeqId{seq}));
  });
}

pkv_status pkv_cache_unpin(pkv_cache* cache, uint64_t seq) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return status(c->unpin(SeqId{seq}));
  });
}

pkv_status pkv_cache_copy_done(pkv_cache* cache, uint64_t seq, size_t* released) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(released);
    return status(c->copy_done(SeqId{seq}), released);
  });
}

pkv_status pkv_cache_apply_streaming_llm(pkv_cache* cache, uint64_t seq, size_t sink_tokens,
                                         size_t window_tokens, size_t* dropped) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(dropped);
    return status(c->apply_streaming_llm(SeqId{seq}, sink_tokens, window_tokens), dropped);
  });
}

pkv_status pkv_cache_get_sequence(const pkv_cache* cache, uint64_t seq, pkv_sequence_info* out) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(out);
    auto info = c->get_sequence(SeqId{seq});
    if (!info) return fail(pkv::Error::sequence_not_found(SeqId{seq}));
    *out = {info->seq_id.value, info->num_tokens, info->block_ids.size(), info->last_access,
            info->access_count, info->priority,   info->token_runs.size()};
    return PKV_OK;
  });
}

pkv_status pkv_cache_block_table(const pkv_cache* cache, uint64_t seq, uint32_t* out,
                                 size_t capacity, size_t* required) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(required);
    auto info = c->get_sequence(SeqId{seq});
    if (!info) return fail(pkv::Error::sequence_not_found(SeqId{seq}));
    return fill(info->block_ids, out, capacity, required, [](BlockId b) { return b.value; });
  });
}

pkv_status pkv_cache_token_runs(const pkv_cache* cache, uint64_t seq, pkv_token_run* out,
                                size_t capacity, size_t* required) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(required);
    auto info = c->get_sequence(SeqId{seq});
    if (!info) return fail(pkv::Error::sequence_not_found(SeqId{seq}));
    return fill(info->token_runs, out, capacity, required, [](const pkv::TokenRun& r) {
      return pkv_token_run{r.first_token, r.slot, r.length};
    });
  });
}

pkv_status pkv_cache_sequence_ids(const pkv_cache* cache, uint64_t* out, size_t capacity,
                                  size_t* required) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    return fill(c->sequence_ids(), out, capacity, required, [](SeqId s) { return s.value; });
  });
}

// ---- eviction ----------------------------------------------------------------------------------

pkv_status pkv_cache_select_eviction_target(const pkv_cache* cache, uint64_t* seq, bool* found) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(seq);
    PKV_NONNULL(found);
    auto t = c->select_eviction_target();
    *found = t.has_value();
    if (t) *seq = t->value;
    return PKV_OK;
  });
}

pkv_status pkv_cache_evict(pkv_cache* cache, uint64_t* victim) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(victim);
    auto r = c->evict();
    if (!r) return fail(r.error());
    *victim = r.value().value;
    return PKV_OK;
  });
}

pkv_status pkv_cache_evict_to_threshold(pkv_cache* cache, double target, uint64_t* victims,
                                        size_t capacity, size_t* num_victims) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    PKV_NONNULL(num_victims);
    if (victims == nullptr && capacity != 0) return null_arg("victims");
    *num_victims = 0;
    // An invalid target is the C++ call's to reject (with its message; it changes nothing).
    if (!(target >= 0.0 && target <= 1.0)) {
      auto r = c->evict_to_threshold(target);
      return r ? fail(PKV_INTERNAL_ERROR,
                      "Internal error: evict_to_threshold took an invalid target")
               : fail(r.error());
    }
    if (victims == nullptr) {
      *num_victims = c->num_sequences();
      return PKV_OK;
    }
    // The C++ loop, bounded by the caller's buffer: evict() one victim at a time.
    while (c->utilization() > target && c->num_sequences() > 0) {
      if (*num_victims == capacity) {
        return fail(PKV_BUFFER_TOO_SMALL, "Buffer too small: evicted ",
                    std::to_string(capacity) +
                        " (the capacity) and the target is not reached; call again to continue");
      }
      auto r = c->evict();
      if (!r) break;  // another thread took the last sequence meanwhile
      victims[(*num_victims)++] = r.value().value;
    }
    return PKV_OK;
  });
}

// ---- figures -----------------------------------------------------------------------------------

#define PKV_CACHE_FIGURE(fn, type, expr)             \
  pkv_status fn(const pkv_cache* cache, type* out) { \
    PKV_CACHE(c, cache);                             \
    PKV_NONNULL(out);                                \
    *out = (expr);                                   \
    return PKV_OK;                                   \
  }
PKV_CACHE_FIGURE(pkv_cache_block_size, size_t, c->block_size())
PKV_CACHE_FIGURE(pkv_cache_total_blocks, size_t, c->total_blocks())
PKV_CACHE_FIGURE(pkv_cache_free_block_count, size_t, c->free_block_count())
PKV_CACHE_FIGURE(pkv_cache_used_block_count, size_t, c->used_block_count())
PKV_CACHE_FIGURE(pkv_cache_utilization, double, c->utilization())
PKV_CACHE_FIGURE(pkv_cache_block_memory_bytes, size_t, c->block_memory_bytes())
PKV_CACHE_FIGURE(pkv_cache_total_memory_bytes, size_t, c->total_memory_bytes())
PKV_CACHE_FIGURE(pkv_cache_used_memory_bytes, size_t, c->used_memory_bytes())
PKV_CACHE_FIGURE(pkv_cache_needs_eviction, bool, c->needs_eviction())
PKV_CACHE_FIGURE(pkv_cache_num_sequences, size_t, c->num_sequences())
PKV_CACHE_FIGURE(pkv_cache_cached_block_count, size_t, c->cached_block_count())
PKV_CACHE_FIGURE(pkv_cache_reclaimable_block_count, size_t, c->reclaimable_block_count())
#undef PKV_CACHE_FIGURE

pkv_status pkv_cache_stats_get(const pkv_cache* cache, pkv_cache_stats* out) {
  PKV_CACHE(c, cache);
  PKV_NONNULL(out);
  const pkv::CacheStats s = c->stats();
  *out = {s.total_allocations, s.total_frees, s.total_evictions, s.total_forks, s.peak_blocks_used};
  return PKV_OK;
}

pkv_status pkv_cache_display(const pkv_cache* cache, char* out, size_t capacity, size_t* required) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    std::ostringstream os;
    os << *c;
    std::string text = os.str();
    text.push_back('\0');
    return fill(text, out, capacity, required, [](char ch) { return ch; });
  });
}

pkv_status pkv_cache_validate_unsafe(const pkv_cache* cache) {
  return guarded([&] {
    PKV_CACHE(c, cache);
    const std::string v = c->validate_unsafe();
    return v.empty() ? PKV_OK : fail(PKV_INTERNAL_ERROR, "Invariant violated: ", v);
  });
}

// ---- block pool --------------------------------------------------------------------------------

pkv_status pkv_pool_create(size_t num_blocks, uint32_t magazine_size, pkv_pool** out) {
  return guarded([&] {
    PKV_NONNULL(out);
    auto r = pkv::BlockPool::create(num_blocks, pkv::BlockPool::Options{magazine_size});
    if (!r) return fail(r.error());
    auto shell = std::make_unique<pkv_pool>();
    shell->magic = kPoolMagic;
    shell->impl = r.value().release();
    *out = shell.release();
    return PKV_OK;
  });
}

pkv_status pkv_pool_destroy(pkv_pool* pool) {
  return guarded([&] {
    PKV_POOL(p, pool);
    pool->magic = kDeadMagic;
    pool->impl = nullptr;
    delete p;
    bury(pool);
    return PKV_OK;
  });
}

#define PKV_POOL_FIGURE(fn, type, expr)            \
  pkv_status fn(const pkv_pool* pool, type* out) { \
    PKV_POOL(p, pool);                             \
    PKV_NONNULL(out);                              \
    *out = (expr);                                 \
    return PKV_OK;                                 \
  }
PKV_POOL_FIGURE(pkv_pool_capacity, size_t, p->capacity())
PKV_POOL_FIGURE(pkv_pool_free_count, size_t, p->free_count())
PKV_POOL_FIGURE(pkv_pool_used_count, size_t, p->used_count())
PKV_POOL_FIGURE(pkv_pool_total_acquired, uint64_t, p->total_acquired())
PKV_POOL_FIGURE(pkv_pool_total_released, uint64_t, p->total_released())
#undef PKV_POOL_FIGURE

pkv_status pkv_pool_acquire(pkv_pool* pool, uint32_t* block) {
  return guarded([&] {
    PKV_POOL(p, pool);
    PKV_NONNULL(block);
    auto r = p->acquire();
    if (!r) return fail(r.error());
    *block = r.value().value;
    return PKV_OK;
  });
}

pkv_status pkv_pool_acquire_n(pkv_pool* pool, size_t k, uint32_t* out) {
  return guarded([&] {
    PKV_POOL(p, pool);
    if (k != 0) PKV_NONNULL(out);
    thread_local std::vector<BlockId> got;
    got.clear();
    if (auto r = p->acquire(k, got); !r) return fail(r.error());
    std::transform(got.begin(), got.end(), out, [](BlockId b) { return b.value; });
    return PKV_OK;
  });
}

pkv_status pkv_pool_retain(pkv_pool* pool, uint32_t block) {
  return guarded([&] {
    PKV_POOL(p, pool);
    return status(p->retain(BlockId{block}));
  });
}

pkv_status pkv_pool_retain_n(pkv_pool* pool, const uint32_t* blocks, size_t n) {
  return guarded([&] {
    PKV_POOL(p, pool);
    if (n != 0) PKV_NONNULL(blocks);
    std::vector<BlockId> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = BlockId{blocks[i]};
    return status(p->retain(std::span<const BlockId>(ids)));
  });
}

pkv_status pkv_pool_release(pkv_pool* pool, uint32_t block, bool* freed) {
  return guarded([&] {
    PKV_POOL(p, pool);
    PKV_NONNULL(freed);
    return status(p->release(BlockId{block}), freed);
  });
}

pkv_status pkv_pool_release_n(pkv_pool* pool, const uint32_t* blocks, size_t n, size_t* freed) {
  return guarded([&] {
    PKV_POOL(p, pool);
    PKV_NONNULL(freed);
    if (n != 0) PKV_NONNULL(blocks);
    std::vector<BlockId> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = BlockId{blocks[i]};
    return status(p->release(std::span<const BlockId>(ids)), freed);
  });
}

pkv_status pkv_pool_ref_count(const pkv_pool* pool, uint32_t block, uint32_t* out) {
  PKV_POOL(p, pool);
  PKV_NONNULL(out);
  *out = p->ref_count(BlockId{block});
  return PKV_OK;
}

pkv_status pkv_pool_validate_unsafe(const pkv_pool* pool) {
  return guarded([&] {
    PKV_POOL(p, pool);
    const std::string v = p->validate_unsafe();
    return v.empty() ? PKV_OK : fail(PKV_INTERNAL_ERROR, "Invariant violated: ", v);
  });
}
