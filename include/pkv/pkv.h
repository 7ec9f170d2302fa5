/* pkv/pkv.h — the C ABI of pkv (C11 and C++), over the C++ API in pkv/pkv.hpp.
 *
 * What it is
 *   Opaque handles pkv_cache* (a PagedKvCache) and pkv_pool* (a BlockPool), created by
 *   pkv_cache_create / pkv_pool_create and destroyed by pkv_cache_destroy / pkv_pool_destroy.
 *   Sequence ids are uint64_t, block ids uint32_t; names and behaviour are the C++ ones
 *   (paged_kv_cache.hpp, block_pool.hpp), which carry the full contract.
 *
 * Thread safety
 *   Exactly the C++ contract: every function on a live handle may be called from any number of
 *   threads at once (allocate / append / append_batch / free / fork / get_sequence lock only the
 *   sequence's shard; the figures are lock-free; see paged_kv_cache.hpp). The exceptions are the
 *   *_destroy functions, which must not overlap any other call on the same handle, and the
 *   *_validate_unsafe functions, which must run while no other call on the handle is in flight.
 *
 * Errors
 *   Every function except pkv_status_name / pkv_last_error_message returns a pkv_status.
 *   PKV_OK (0) is success; PKV_OUT_OF_MEMORY .. PKV_INVALID_ARGUMENT mirror pkv::Errc (value =
 *   Errc + 1) and carry the seed's messages; three codes are the C layer's own:
 *     PKV_BUFFER_TOO_SMALL   a caller-provided output buffer cannot hold the result; the
 *                            required count is stored and nothing else changed;
 *     PKV_HOST_OUT_OF_MEMORY operator new failed (std::bad_alloc) inside the call;
 *     PKV_INTERNAL_ERROR     any other C++ exception (a bug in pkv; please report it).
 *   No C++ exception ever crosses this boundary. A failed call changes nothing (except
 *   pkv_cache_append_batch items, each all or nothing, and pkv_cache_evict_to_threshold, which
 *   keeps the victims it evicted and lists them). After a failure, pkv_last_error_message()
 *   returns its message: thread-local, valid until the next failing pkv call on the same thread;
 *   successful calls leave it unchanged (as errno).
 *
 * Pointer arguments
 *   Every pointer argument is checked: NULL gives PKV_INVALID_ARGUMENT and changes nothing. The
 *   documented exceptions: `options` of pkv_*_create may be NULL (defaults), and an output buffer
 *   may be NULL when its capacity is 0 (a required-size query). A handle that was destroyed, or a
 *   pointer that is not a handle of the expected kind (a pkv_pool* cast to pkv_cache*), is
 *   detected by a magic word and gives PKV_INVALID_ARGUMENT: destroy clears the magic and frees
 *   the C++ object but keeps the 16-byte handle shell for the life of the process, so reading it
 *   again is defined (the cost: 16 bytes per destroyed handle). A pointer that never came from
 *   pkv, or a destroy racing another call on the same handle, is undefined behaviour.
 *
 * Variable-length results (block tables, token runs, sequence ids, victims, Display text)
 *   The caller passes a buffer and its capacity (in elements); the function stores the number of
 *   elements of the result in *required (for text: bytes including the terminating NUL) and
 *   writes the buffer only if it is large enough, else returns PKV_BUFFER_TOO_SMALL. A capacity of
 *   0 with a NULL buffer is a pure size query. Under concurrent calls the size may change between
 *   the query and the call: loop while PKV_BUFFER_TOO_SMALL.
 */
#ifndef PKV_PKV_H
#define PKV_PKV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PKV_API __attribute__((visibility("default")))
#else
#define PKV_API
#endif

typedef enum pkv_status {
  PKV_OK = 0,
  PKV_OUT_OF_MEMORY = 1,      /* not enough free KV blocks; nothing was taken */
  PKV_SEQUENCE_NOT_FOUND = 2, /* no live sequence has this id */
  PKV_BLOCK_NOT_FOUND = 3,    /* block id out of range or not referenced */
  PKV_INVALID_OPERATION = 4,  /* well formed but not allowed in this state */
  PKV_INVALID_ARGUMENT = 5,   /* out of domain, NULL pointer, destroyed or wrong handle */
  PKV_BUFFER_TOO_SMALL = 6,   /* output buffer too small; *required holds the size */
  PKV_HOST_OUT_OF_MEMORY = 7, /* std::bad_alloc inside the call */
  PKV_INTERNAL_ERROR = 8      /* any other C++ exception */
} pkv_status;

/* "PKV_OK", "PKV_OUT_OF_MEMORY", ...; "PKV_UNKNOWN_STATUS" for any other int. Never NULL. */
PKV_API const char* pkv_status_name(int status);
/* The message of the last failed pkv call on this thread ("" if none). Never NULL; the text stays
 * valid until the next failing pkv call on this thread. */
PKV_API const char* pkv_last_error_message(void);

/* Never a valid block id (block ids are below 2^32 - 1). */
#define PKV_NO_BLOCK UINT32_MAX

typedef struct pkv_cache pkv_cache;
typedef struct pkv_pool pkv_pool;

/* ---- cache lifecycle ------------------------------------------------------------------------- */

/* The digest naming a cached block (pkv/block_hash.hpp). */
typedef enum pkv_hash_algorithm {
  PKV_HASH_SHA256 = 0,  /* SHA-256, 32 bytes */
  PKV_HASH_XXH3_128 = 1 /* XXH3_128 seed 0, canonical order in bytes 0..15, 16..31 zero */
} pkv_hash_algorithm;

typedef struct pkv_cache_options {
  uint32_t magazine_size;  /* the pool's per-thread magazine (default 32, at most 64; 0 = off) */
  bool hold_copy_sources;  /* keep copy-on-write sources until pkv_cache_copy_done (default off) */
  unsigned affinity_shift; /* thread-affine placement (default 0 = off; at most 63) */
  /* Automatic prefix caching (C++ PrefixCachingOptions; see pkv_cache_allocate_tokens). */
  bool prefix_caching;            /* default on */
  pkv_hash_algorithm prefix_hash; /* default PKV_HASH_SHA256; another value: INVALID_ARGUMENT */
  bool prefix_verify_tokens;      /* compare stored token ids on a hit (default off) */
} pkv_cache_options;

/* Fills *options with the defaults. */
PKV_API pkv_status pkv_cache_options_init(pkv_cache_options* options);
/* Creates a cache of num_blocks blocks of block_size tokens (num_heads x head_dim size the KV
 * memory). All four must be non-zero (PKV_INVALID_ARGUMENT). options may be NULL (defaults). */
PKV_API pkv_status pkv_cache_create(size_t num_blocks, size_t block_size, size_t num_heads,
                                    size_t head_dim, const pkv_cache_options* options,
                                    pkv_cache** out);
/* Destroys the cache; the handle is invalid afterwards (using it again: PKV_INVALID_ARGUMENT).
 * Must not overlap another call on the same handle. */
PKV_API pkv_status pkv_cache_destroy(pkv_cache* cache);

/* ---- eviction configuration ------------------------------------------------------------------ */

typedef enum pkv_strategy_kind {
  PKV_STRATEGY_LRU = 0,
  PKV_STRATEGY_LFU = 1,
  PKV_STRATEGY_LONGEST_FIRST = 2,
  PKV_STRATEGY_PRIORITY = 3,     /* uses levels */
  PKV_STRATEGY_STREAMING_LLM = 4 /* uses sink_tokens, window_tokens */
} pkv_strategy_kind;

typedef struct pkv_eviction_strategy {
  pkv_strategy_kind kind;
  uint32_t levels;
  size_t sink_tokens;
  size_t window_tokens;
} pkv_eviction_strategy;

/* Priority(0), StreamingLLM(0, 0) and an unknown kind: PKV_INVALID_ARGUMENT. */
PKV_API pkv_status pkv_cache_set_eviction_strategy(pkv_cache* cache,
                                                   const pkv_eviction_strategy* strategy);
PKV_API pkv_status pkv_cache_eviction_strategy(const pkv_cache* cache, pkv_eviction_strategy* out);
/* Clamped to 0..1; NaN: PKV_INVALID_ARGUMENT. */
PKV_API pkv_status pkv_cache_set_eviction_threshold(pkv_cache* cache, double threshold);
PKV_API pkv_status pkv_cache_eviction_threshold(const pkv_cache* cache, double* out);
PKV_API pkv_status pkv_cache_set_priority(pkv_cache* cache, uint64_t seq, uint32_t priority);

/* ---- sequences ------------------------------------------------------------------------------- */

typedef struct pkv_copy_op {
  uint32_t src; /* copy the KV data of block src ... */
  uint32_t dst; /* ... into block dst before writing; both PKV_NO_BLOCK when there is no copy */
} pkv_copy_op;

PKV_API pkv_status pkv_cache_allocate(pkv_cache* cache, uint64_t seq, size_t num_tokens);
/* *copy receives the copy-on-write the caller must perform, or {PKV_NO_BLOCK, PKV_NO_BLOCK}. */
PKV_API pkv_status pkv_cache_append(pkv_cache* cache, uint64_t seq, size_t num_tokens,
                                    pkv_copy_op* copy);

typedef struct pkv_item_copy {
  size_t item; /* index into the call's seqs */
  pkv_copy_op copy;
} pkv_item_copy;

typedef struct pkv_item_error {
  size_t item; /* index into the call's seqs */
  pkv_status status;
} pkv_item_error;

/* One decode step: append(seqs[i], num_tokens ? num_tokens[i] : uniform_tokens) for i in 0..n, in
 * order, each item all or nothing on its own (C++ append_batch). copies and errors must each have
 * room for n entries; *num_copies / *num_errors receive how many were written, in item order. An
 * item not listed in errors appended. Returns PKV_OK when the batch ran (even if items failed;
 * then the first failed item's message is the last error message); another status (a NULL
 * pointer, PKV_HOST_OUT_OF_MEMORY) means nothing was appended. seqs, num_tokens, copies and errors
 * may be NULL when n == 0; num_tokens is NULL for the same count on every item. */
PKV_API pkv_status pkv_cache_append_batch(pkv_cache* cache, const uint64_t* seqs,
                                          const size_t* num_tokens, size_t uniform_tokens, size_t n,
                                          pkv_item_copy* copies, size_t* num_copies,
                                          pkv_item_error* errors, size_t* num_errors);
PKV_API pkv_status pkv_cache_free(pkv_cache* cache, uint64_t seq);
PKV_API pkv_status pkv_cache_fork(pkv_cache* cache, uint64_t src, uint64_t dst);
PKV_API pkv_status pkv_cache_pin(pkv_cache* cache, uint64_t seq);
PKV_API pkv_status pkv_cache_unpin(pkv_cache* cache, uint64_t seq);
/* *released receives how many held copy sources were released. */
PKV_API pkv_status pkv_cache_copy_done(pkv_cache* cache, uint64_t seq, size_t* released);
/* *dropped receives the number of tokens dropped. */
PKV_API pkv_status pkv_cache_apply_streaming_llm(pkv_cache* cache, uint64_t seq, size_t sink_tokens,
                                                 size_t window_tokens, size_t* dropped);

/* fork(src, d) for every d of dsts[0..n) in one step, all or nothing (C++ fork_many). dsts may be
 * NULL when n == 0 (then src is only checked). */
PKV_API pkv_status pkv_cache_fork_many(pkv_cache* cache, uint64_t src, const uint64_t* dsts,
                                       size_t n);
/* free(seqs[i]) for i in 0..n, in order (C++ free_many). errors must have room for n entries;
 * *num_errors receives how many items failed (each changed nothing), in item order. Returns PKV_OK
 * when the call ran (the first failed item's message is then the last error message). seqs and
 * errors may be NULL when n == 0. */
PKV_API pkv_status pkv_cache_free_many(pkv_cache* cache, const uint64_t* seqs, size_t n,
                                       pkv_item_error* errors, size_t* num_errors);
/* Drops the last num_tokens tokens of seq; *blocks_released receives how many blocks left its
 * table. num_tokens above the sequence's length: PKV_INVALID_ARGUMENT. */
PKV_API pkv_status pkv_cache_truncate(pkv_cache* cache, uint64_t seq, size_t num_tokens,
                                      size_t* blocks_released);

/* ---- prefix caching (paged_kv_cache.hpp, "Prefix caching") --------------------------------- *
 * Token ids are uint32_t. A salt is salt_len bytes (any bytes; salt may be NULL when salt_len is
 * 0); different salts never share a block. */

/* Registers seq with the blocks of prompt[0..n): its longest cached prefix is shared, the rest
 * taken new, all or nothing. *cached receives how many leading tokens were found cached (a multiple
 * of the block size, at most n - 1). n == 0: PKV_INVALID_ARGUMENT; an existing seq:
 * PKV_INVALID_OPERATION; not enough blocks: PKV_OUT_OF_MEMORY. */
PKV_API pkv_status pkv_cache_allocate_tokens(pkv_cache* cache, uint64_t seq, const uint32_t* prompt,
                                             size_t n, const char* salt, size_t salt_len,
                                             size_t* cached);
/* pkv_cache_append that records the ids tokens[0..n) (it first commits what seq held). tokens may
 * be NULL when n == 0. */
PKV_API pkv_status pkv_cache_append_tokens(pkv_cache* cache, uint64_t seq, const uint32_t* tokens,
                                           size_t n, pkv_copy_op* copy);
/* One decode step with token ids: append_tokens(seqs[i], &tokens[i], 1) for i in 0..n, in order,
 * with pkv_cache_append_batch's outcome rules and buffers. */
PKV_API pkv_status pkv_cache_append_batch_tokens(pkv_cache* cache, const uint64_t* seqs,
                                                 const uint32_t* tokens, size_t n,
                                                 pkv_item_copy* copies, size_t* num_copies,
                                                 pkv_item_error* errors, size_t* num_errors);
/* The KV of the first num_tokens tokens of seq is written: their full blocks become findable.
 * *published receives how many blocks were newly published. num_tokens above the sequence's
 * length: PKV_INVALID_ARGUMENT. */
PKV_API pkv_status pkv_cache_commit(pkv_cache* cache, uint64_t seq, size_t num_tokens,
                                    size_t* published);
/* How many leading tokens of tokens[0..n) pkv_cache_allocate_tokens would find cached now; no
 * effect. Lock-free. tokens may be NULL when n == 0. */
PKV_API pkv_status pkv_cache_match_prefix(const pkv_cache* cache, const uint32_t* tokens, size_t n,
                                          const char* salt, size_t salt_len, size_t* out);

typedef struct pkv_prefix_stats { /* C++ PrefixCacheStats (prefix_types.hpp has the meanings) */
  uint64_t requests;
  uint64_t queries;
  uint64_t hits;
  uint64_t published;
  uint64_t reclaimed;
  uint64_t verify_failures;
} pkv_prefix_stats;

PKV_API pkv_status pkv_cache_prefix_stats(const pkv_cache* cache, pkv_prefix_stats* out);
/* Findable blocks, held or not / held by no sequence (counted as free). Lock-free. */
PKV_API pkv_status pkv_cache_cached_block_count(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_reclaimable_block_count(const pkv_cache* cache, size_t* out);
/* Forgets every hash (held blocks stay with their sequences). */
PKV_API pkv_status pkv_cache_reset_prefix_cache(pkv_cache* cache);
/* How many sequences hold block (0 for a free block or an id out of range). */
PKV_API pkv_status pkv_cache_block_ref_count(const pkv_cache* cache, uint32_t block, size_t* out);

typedef struct pkv_block_hash {
  uint8_t bytes[32]; /* C++ BlockHash::bytes */
} pkv_block_hash;

/* The chain hashes of the n / block_size full blocks of tokens[0..n) under the salt (C++
 * block_hashes; see "Variable-length results"). tokens may be NULL when n == 0. block_size 0 or an
 * unknown algorithm: PKV_INVALID_ARGUMENT. Thread-safe, needs no handle. */
PKV_API pkv_status pkv_block_hashes(const uint32_t* tokens, size_t n, size_t block_size,
                                    const char* salt, size_t salt_len, pkv_hash_algorithm algorithm,
                                    pkv_block_hash* out, size_t capacity, size_t* required);

/* The scalars of a sequence's snapshot (C++ SequenceInfo); the block table and token runs come
 * from pkv_cache_block_table / pkv_cache_token_runs. */
typedef struct pkv_sequence_info {
  uint64_t seq_id;
  size_t num_tokens;
  size_t num_blocks;
  uint64_t last_access;
  uint64_t access_count;
  uint32_t priority;
  size_t num_token_runs;
} pkv_sequence_info;

typedef struct pkv_token_run {
  uint64_t first_token;
  uint64_t slot;
  uint64_t length;
} pkv_token_run;

/* PKV_SEQUENCE_NOT_FOUND if seq is not live. */
PKV_API pkv_status pkv_cache_get_sequence(const pkv_cache* cache, uint64_t seq,
                                          pkv_sequence_info* out);
/* The block table of seq (see "Variable-length results" above). */
PKV_API pkv_status pkv_cache_block_table(const pkv_cache* cache, uint64_t seq, uint32_t* out,
                                         size_t capacity, size_t* required);
PKV_API pkv_status pkv_cache_token_runs(const pkv_cache* cache, uint64_t seq, pkv_token_run* out,
                                        size_t capacity, size_t* required);
/* Ids of all live sequences, unordered. */
PKV_API pkv_status pkv_cache_sequence_ids(const pkv_cache* cache, uint64_t* out, size_t capacity,
                                          size_t* required);

/* ---- eviction -------------------------------------------------------------------------------- */

/* *found = false when there is no candidate (then *seq is unchanged). */
PKV_API pkv_status pkv_cache_select_eviction_target(const pkv_cache* cache, uint64_t* seq,
                                                    bool* found);
/* No sequence: PKV_INVALID_OPERATION "Invalid operation: No sequences to evict". */
PKV_API pkv_status pkv_cache_evict(pkv_cache* cache, uint64_t* victim);
/* Evicts until utilization <= target or no sequence is left, writing the victims in order. The
 * victims cannot be known in advance, so `capacity` bounds how many this call evicts: when it
 * evicted `capacity` and the target is still not reached, it returns PKV_BUFFER_TOO_SMALL (the
 * victims written stay evicted and listed; call again to continue). *num_victims receives the
 * number written. A NULL buffer with capacity 0 evicts nothing and stores the number of live
 * sequences (an upper bound when no other thread adds any). target outside 0..1 or NaN:
 * PKV_INVALID_ARGUMENT. */
PKV_API pkv_status pkv_cache_evict_to_threshold(pkv_cache* cache, double target, uint64_t* victims,
                                                size_t capacity, size_t* num_victims);

/* ---- figures (lock-free; exact when no call is in flight) ------------------------------------ */

PKV_API pkv_status pkv_cache_block_size(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_total_blocks(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_free_block_count(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_used_block_count(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_utilization(const pkv_cache* cache, double* out);
PKV_API pkv_status pkv_cache_block_memory_bytes(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_total_memory_bytes(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_used_memory_bytes(const pkv_cache* cache, size_t* out);
PKV_API pkv_status pkv_cache_needs_eviction(const pkv_cache* cache, bool* out);
PKV_API pkv_status pkv_cache_num_sequences(const pkv_cache* cache, size_t* out);

typedef struct pkv_cache_stats {
  uint64_t total_allocations;
  uint64_t total_frees;
  uint64_t total_evictions;
  uint64_t total_forks;
  uint64_t peak_blocks_used;
} pkv_cache_stats;

PKV_API pkv_status pkv_cache_stats_get(const pkv_cache* cache, pkv_cache_stats* out);
/* The seed's Display form (six lines, each ending in '\n'), NUL-terminated; *required counts the
 * NUL. */
PKV_API pkv_status pkv_cache_display(const pkv_cache* cache, char* out, size_t capacity,
                                     size_t* required);
/* NOT thread-safe (quiescent only): PKV_OK when every invariant holds, else PKV_INTERNAL_ERROR
 * with the first violation as the last error message. */
PKV_API pkv_status pkv_cache_validate_unsafe(const pkv_cache* cache);

/* ---- block pool ------------------------------------------------------------------------------ */

/* num_blocks in 1..2^32-2; magazine_size <= 64 (0 turns the per-thread magazines off). */
PKV_API pkv_status pkv_pool_create(size_t num_blocks, uint32_t magazine_size, pkv_pool** out);
PKV_API pkv_status pkv_pool_destroy(pkv_pool* pool);
PKV_API pkv_status pkv_pool_capacity(const pkv_pool* pool, size_t* out);
PKV_API pkv_status pkv_pool_free_count(const pkv_pool* pool, size_t* out);
PKV_API pkv_status pkv_pool_used_count(const pkv_pool* pool, size_t* out);
/* One free block, reference count 1. None free: PKV_OUT_OF_MEMORY. */
PKV_API pkv_status pkv_pool_acquire(pkv_pool* pool, uint32_t* block);
/* Exactly k blocks into out[0..k) or none (PKV_OUT_OF_MEMORY). out may be NULL when k == 0. */
PKV_API pkv_status pkv_pool_acquire_n(pkv_pool* pool, size_t k, uint32_t* out);
PKV_API pkv_status pkv_pool_retain(pkv_pool* pool, uint32_t block);
/* All n must be referenced (checked first; else PKV_BLOCK_NOT_FOUND, nothing changed). */
PKV_API pkv_status pkv_pool_retain_n(pkv_pool* pool, const uint32_t* blocks, size_t n);
/* *freed = true when the block went back to the free list. */
PKV_API pkv_status pkv_pool_release(pkv_pool* pool, uint32_t block, bool* freed);
/* *freed receives how many reached count 0. Ids out of range or free: PKV_BLOCK_NOT_FOUND after
 * the others were released (the C++ contract). */
PKV_API pkv_status pkv_pool_release_n(pkv_pool* pool, const uint32_t* blocks, size_t n,
                                      size_t* freed);
/* 0 for a free block or an id out of range. */
PKV_API pkv_status pkv_pool_ref_count(const pkv_pool* pool, uint32_t block, uint32_t* out);
PKV_API pkv_status pkv_pool_total_acquired(const pkv_pool* pool, uint64_t* out);
PKV_API pkv_status pkv_pool_total_released(const pkv_pool* pool, uint64_t* out);
/* NOT thread-safe: as pkv_cache_validate_unsafe. */
PKV_API pkv_status pkv_pool_validate_unsafe(const pkv_pool* pool);

#ifdef __cplusplus
}
#endif

#endif /* PKV_PKV_H */
