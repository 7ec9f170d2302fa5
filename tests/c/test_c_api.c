/* tests/c/test_c_api.c — the C ABI (pkv/pkv.h) from C11: every function, its error paths and a
 * multi-threaded run with exact accounting. Prints TAP (one test point per group, meson protocol
 * 'tap') and a summary line; runs in the release, ASan+UBSan and TSan builds. */
#include <math.h>
#include <pkv/pkv.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_point = 0;
static int g_failed_points = 0;
static int g_fail_here = 0; /* checks failed in the current group */

#define CHECK(cond)                                                                       \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      printf("#   %s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
             pkv_last_error_message());                                                   \
      ++g_fail_here;                                                                      \
    }                                                                                     \
  } while (0)
#define CHECK_ST(call, want) CHECK((call) == (want))
#define OK(call) CHECK_ST(call, PKV_OK)
/* The call fails with `want` and the last error message starts with `prefix`. */
#define FAILS(call, want, prefix)                                          \
  do {                                                                     \
    CHECK_ST(call, want);                                                  \
    CHECK(strncmp(pkv_last_error_message(), prefix, strlen(prefix)) == 0); \
  } while (0)

static void point(const char* name) {
  ++g_point;
  if (g_fail_here == 0) {
    printf("ok %d - %s\n", g_point, name);
  } else {
    printf("not ok %d - %s (%d checks failed)\n", g_point, name, g_fail_here);
    ++g_failed_points;
  }
  g_fail_here = 0;
}

static pkv_cache* make_cache(size_t blocks, size_t block_size) {
  pkv_cache* c = NULL;
  if (pkv_cache_create(blocks, block_size, 32, 128, NULL, &c) != PKV_OK) {
    printf("Bail out! pkv_cache_create: %s\n", pkv_last_error_message());
    exit(1);
  }
  return c;
}

static size_t free_blocks(const pkv_cache* c) {
  size_t n = 0;
  OK(pkv_cache_free_block_count(c, &n));
  return n;
}

static void test_status_names(void) {
  CHECK(strcmp(pkv_status_name(PKV_OK), "PKV_OK") == 0);
  CHECK(strcmp(pkv_status_name(PKV_OUT_OF_MEMORY), "PKV_OUT_OF_MEMORY") == 0);
  CHECK(strcmp(pkv_status_name(PKV_SEQUENCE_NOT_FOUND), "PKV_SEQUENCE_NOT_FOUND") == 0);
  CHECK(strcmp(pkv_status_name(PKV_BLOCK_NOT_FOUND), "PKV_BLOCK_NOT_FOUND") == 0);
  CHECK(strcmp(pkv_status_name(PKV_INVALID_OPERATION), "PKV_INVALID_OPERATION") == 0);
  CHECK(strcmp(pkv_status_name(PKV_INVALID_ARGUMENT), "PKV_INVALID_ARGUMENT") == 0);
  CHECK(strcmp(pkv_status_name(PKV_BUFFER_TOO_SMALL), "PKV_BUFFER_TOO_SMALL") == 0);
  CHECK(strcmp(pkv_status_name(PKV_HOST_OUT_OF_MEMORY), "PKV_HOST_OUT_OF_MEMORY") == 0);
  CHECK(strcmp(pkv_status_name(PKV_INTERNAL_ERROR), "PKV_INTERNAL_ERROR") == 0);
  CHECK(strcmp(pkv_status_name(99), "PKV_UNKNOWN_STATUS") == 0);
  CHECK(pkv_last_error_message() != NULL);
  point("status names and an empty last error");
}

static void test_create_destroy(void) {
  pkv_cache* c = NULL;
  pkv_cache_options o;
  OK(pkv_cache_options_init(&o));
  CHECK(o.magazine_size == 32 && !o.hold_copy_sources && o.affinity_shift == 0);
  FAILS(pkv_cache_options_init(NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  FAILS(pkv_cache_create(0, 16, 32, 128, NULL, &c), PKV_INVALID_ARGUMENT, "Invalid argument:");
  CHECK(c == NULL);
  FAILS(pkv_cache_create(10, 0, 32, 128, NULL, &c), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_create(10, 16, 0, 128, NULL, &c), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_create(10, 16, 32, 0, NULL, &c), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_create((size_t)UINT32_MAX + 5, 16, 32, 128, NULL, &c), PKV_INVALID_ARGUMENT,
        "Invalid argument:");
  FAILS(pkv_cache_create(SIZE_MAX, SIZE_MAX, SIZE_MAX, SIZE_MAX, NULL, &c), PKV_INVALID_ARGUMENT,
        "Invalid argument:");
  FAILS(pkv_cache_create(10, 16, 32, 128, NULL, NULL), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for out");
  o.affinity_shift = 64;
  FAILS(pkv_cache_create(10, 16, 32, 128, &o, &c), PKV_INVALID_ARGUMENT, "Invalid argument:");
  o.affinity_shift = 0;
  o.magazine_size = 65;
  FAILS(pkv_cache_create(10, 16, 32, 128, &o, &c), PKV_INVALID_ARGUMENT, "Invalid argument:");
  CHECK(c == NULL);
  o.magazine_size = 0;
  o.hold_copy_sources = true;
  OK(pkv_cache_create(10, 16, 32, 128, &o, &c));
  CHECK(c != NULL);
  OK(pkv_cache_destroy(c));
  /* A destroyed handle is detected (its shell is kept), not read after free. */
  FAILS(pkv_cache_destroy(c), PKV_INVALID_ARGUMENT, "Invalid argument: not a live pkv_cache");
  FAILS(pkv_cache_allocate(c, 1, 1), PKV_INVALID_ARGUMENT, "Invalid argument: not a live");
  size_t n = 0;
  FAILS(pkv_cache_num_sequences(c, &n), PKV_INVALID_ARGUMENT, "Invalid argument: not a live");
  FAILS(pkv_cache_destroy(NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  /* A pool handle is not a cache handle, and the other way round. */
  pkv_pool* p = NULL;
  OK(pkv_pool_create(4, 0, &p));
  FAILS(pkv_cache_allocate((pkv_cache*)(void*)p, 1, 1), PKV_INVALID_ARGUMENT,
        "Invalid argument: not a live pkv_cache");
  c = make_cache(4, 16);
  FAILS(pkv_pool_acquire((pkv_pool*)(void*)c, (uint32_t*)&n), PKV_INVALID_ARGUMENT,
        "Invalid argument: not a live pkv_pool");
  OK(pkv_pool_destroy(p));
  OK(pkv_cache_destroy(c));
  point("create, destroy, options and handle checks");
}

static void test_figures(void) {
  pkv_cache* c = make_cache(10, 16);
  size_t v = 0;
  double d = -1;
  bool b = true;
  OK(pkv_cache_block_size(c, &v));
  CHECK(v == 16);
  OK(pkv_cache_total_blocks(c, &v));
  CHECK(v == 10);
  OK(pkv_cache_block_memory_bytes(c, &v));
  CHECK(v == 262144);
  OK(pkv_cache_total_memory_bytes(c, &v));
  CHECK(v == 2621440);
  OK(pkv_cache_allocate(c, 1, 40)); /* 3 blocks */
  OK(pkv_cache_free_block_count(c, &v));
  CHECK(v == 7);
  OK(pkv_cache_used_block_count(c, &v));
  CHECK(v == 3);
  OK(pkv_cache_used_memory_bytes(c, &v));
  CHECK(v == 3 * 262144);
  OK(pkv_cache_utilization(c, &d));
  CHECK(fabs(d - 0.3) < 1e-12);
  OK(pkv_cache_needs_eviction(c, &b));
  CHECK(!b);
  OK(pkv_cache_num_sequences(c, &v));
  CHECK(v == 1);
  pkv_cache_stats s;
  OK(pkv_cache_stats_get(c, &s));
  CHECK(s.total_allocations == 3 && s.total_frees == 0 && s.total_evictions == 0 &&
        s.total_forks == 0 && s.peak_blocks_used == 3);

  FAILS(pkv_cache_block_size(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  FAILS(pkv_cache_total_blocks(NULL, &v), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  FAILS(pkv_cache_free_block_count(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_used_block_count(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_utilization(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_block_memory_bytes(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_total_memory_bytes(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_used_memory_bytes(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_needs_eviction(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_num_sequences(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_stats_get(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");

  /* Display: size query, too small, exact. */
  size_t need = 0;
  OK(pkv_cache_display(c, NULL, 0, &need));
  CHECK(need > 1);
  char small[8];
  FAILS(pkv_cache_display(c, small, sizeof small, &v), PKV_BUFFER_TOO_SMALL, "Buffer too small");
  CHECK(v == need);
  char* text = malloc(need);
  OK(pkv_cache_display(c, text, need, &v));
  CHECK(strlen(text) + 1 == need);
  CHECK(strcmp(text,
               "PagedKvCache\n"
               "  Strategy: LRU (block_size=16)\n"
               "  Blocks: 3/10 (30.0% used)\n"
               "  Memory: 0.79 MB / 2.62 MB\n"
               "  Sequences: 1 active\n"
               "  Stats: allocs=3, frees=0, evictions=0, forks=0\n") == 0);
  free(text);
  FAILS(pkv_cache_display(c, NULL, 5, &v), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");
  FAILS(pkv_cache_display(c, small, sizeof small, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  OK(pkv_cache_validate_unsafe(c));
  FAILS(pkv_cache_validate_unsafe(NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  OK(pkv_cache_destroy(c));
  point("figures, stats, Display");
}

static void test_sequences(void) {
  pkv_cache* c = make_cache(10, 16);
  pkv_copy_op op;
  OK(pkv_cache_allocate(c, 1, 20)); /* 2 blocks, the last half full */
  FAILS(pkv_cache_allocate(c, 1, 1), PKV_INVALID_OPERATION,
        "Invalid operation: Sequence S1 already exists");
  FAILS(pkv_cache_allocate(c, 2, 1000), PKV_OUT_OF_MEMORY,
        "Out of memory: requested 63 blocks, 8 available");
  FAILS(pkv_cache_allocate(c, 2, SIZE_MAX), PKV_OUT_OF_MEMORY, "Out of memory");
  CHECK(free_blocks(c) == 8);

  OK(pkv_cache_append(c, 1, 4, &op)); /* fits in the last block */
  CHECK(op.src == PKV_NO_BLOCK && op.dst == PKV_NO_BLOCK);
  FAILS(pkv_cache_append(c, 9, 1, &op), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S9");
  FAILS(pkv_cache_append(c, 1, SIZE_MAX, &op), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_cache_append(c, 1, 1, NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  FAILS(pkv_cache_append(c, 1, 16 * 9, &op), PKV_OUT_OF_MEMORY, "Out of memory");

  /* fork + copy-on-write */
  OK(pkv_cache_fork(c, 1, 2));
  FAILS(pkv_cache_fork(c, 1, 1), PKV_INVALID_OPERATION,
        "Invalid operation: Cannot fork sequence S1 onto itself");
  FAILS(pkv_cache_fork(c, 1, 2), PKV_INVALID_OPERATION,
        "Invalid operation: Destination sequence S2 already exists");
  FAILS(pkv_cache_fork(c, 7, 8), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S7");
  CHECK(free_blocks(c) == 8);
  uint32_t t1[4], t2[4];
  size_t n1 = 0, n2 = 0;
  OK(pkv_cache_block_table(c, 1, t1, 4, &n1));
  OK(pkv_cache_block_table(c, 2, t2, 4, &n2));
  CHECK(n1 == 2 && n2 == 2 && t1[0] == t2[0] && t1[1] == t2[1]);
  OK(pkv_cache_append(c, 2, 1, &op));
  CHECK(op.src == t1[1] && op.dst != PKV_NO_BLOCK && op.dst != t1[1]);
  OK(pkv_cache_block_table(c, 2, t2, 4, &n2));
  CHECK(n2 == 2 && t2[0] == t1[0] && t2[1] == op.dst);
  CHECK(free_blocks(c) == 7);

  /* block table: size query, too small, NULL */
  size_t need = 0;
  OK(pkv_cache_block_table(c, 1, NULL, 0, &need));
  CHECK(need == 2);
  FAILS(pkv_cache_block_table(c, 1, t1, 1, &need), PKV_BUFFER_TOO_SMALL, "Buffer too small");
  CHECK(need == 2);
  FAILS(pkv_cache_block_table(c, 1, NULL, 4, &need), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_cache_block_table(c, 1, t1, 4, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_cache_block_table(c, 5, t1, 4, &need), PKV_SEQUENCE_NOT_FOUND, "Sequence not found");

  /* get_sequence, token runs */
  pkv_sequence_info info;
  OK(pkv_cache_get_sequence(c, 2, &info));
  CHECK(info.seq_id == 2 && info.num_tokens == 25 && info.num_blocks == 2 &&
        info.num_token_runs == 1 && info.access_count == 2 && info.priority == 0);
  pkv_sequence_info info1;
  OK(pkv_cache_get_sequence(c, 1, &info1));
  CHECK(info1.last_access < info.last_access);
  FAILS(pkv_cache_get_sequence(c, 3, &info), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S3");
  FAILS(pkv_cache_get_sequence(c, 1, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  pkv_token_run runs[2];
  OK(pkv_cache_token_runs(c, 2, runs, 2, &need));
  CHECK(need == 1 && runs[0].first_token == 0 && runs[0].slot == 0 && runs[0].length == 25);
  FAILS(pkv_cache_token_runs(c, 2, runs, 0, &need), PKV_BUFFER_TOO_SMALL, "Buffer too small");
  FAILS(pkv_cache_token_runs(c, 3, runs, 2, &need), PKV_SEQUENCE_NOT_FOUND, "Sequence not");
  FAILS(pkv_cache_token_runs(c, 2, runs, 2, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");

  /* sequence ids */
  uint64_t ids[4];
  OK(pkv_cache_sequence_ids(c, NULL, 0, &need));
  CHECK(need == 2);
  OK(pkv_cache_sequence_ids(c, ids, 4, &need));
  CHECK(need == 2 && ids[0] + ids[1] == 3 && ids[0] * ids[1] == 2);
  FAILS(pkv_cache_sequence_ids(c, ids, 1, &need), PKV_BUFFER_TOO_SMALL, "Buffer too small");
  FAILS(pkv_cache_sequence_ids(c, ids, 4, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");

  /* pin / unpin / priority / copy_done */
  OK(pkv_cache_pin(c, 1));
  OK(pkv_cache_unpin(c, 1));
  FAILS(pkv_cache_unpin(c, 1), PKV_INVALID_OPERATION, "Invalid operation: Sequence S1 is not");
  FAILS(pkv_cache_pin(c, 42), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S42");
  FAILS(pkv_cache_unpin(c, 42), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S42");
  OK(pkv_cache_set_priority(c, 1, 7));
  OK(pkv_cache_get_sequence(c, 1, &info));
  CHECK(info.priority == 7);
  FAILS(pkv_cache_set_priority(c, 42, 1), PKV_SEQUENCE_NOT_FOUND, "Sequence not found");
  size_t released = 99;
  OK(pkv_cache_copy_done(c, 2, &released));
  CHECK(released == 0); /* hold_copy_sources is off */
  FAILS(pkv_cache_copy_done(c, 42, &released), PKV_SEQUENCE_NOT_FOUND, "Sequence not found");
  FAILS(pkv_cache_copy_done(c, 2, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");

  /* free */
  OK(pkv_cache_free(c, 1));
  FAILS(pkv_cache_free(c, 1), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S1");
  OK(pkv_cache_free(c, 2));
  CHECK(free_blocks(c) == 10);
  pkv_cache_stats s;
  OK(pkv_cache_stats_get(c, &s));
  CHECK(s.total_allocations == 3 && s.total_frees == 3 && s.total_forks == 1);
  OK(pkv_cache_validate_unsafe(c));
  FAILS(pkv_cache_free(NULL, 1), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  OK(pkv_cache_destroy(c));
  point("allocate, append, fork with copy-on-write, tables, pin, free");
}

static void test_copy_hold(void) {
  pkv_cache_options o;
  OK(pkv_cache_options_init(&o));
  o.hold_copy_sources = true;
  pkv_cache* c = NULL;
  OK(pkv_cache_create(8, 4, 1, 1, &o, &c));
  pkv_copy_op op;
  size_t released = 0;
  OK(pkv_cache_allocate(c, 1, 2));
  OK(pkv_cache_fork(c, 1, 2));
  OK(pkv_cache_append(c, 2, 1, &op));
  CHECK(op.src != PKV_NO_BLOCK);
  OK(pkv_cache_free(c, 1));
  CHECK(free_blocks(c) == 6); /* the source is still held by S2 */
  OK(pkv_cache_copy_done(c, 2, &released));
  CHECK(released == 1 && free_blocks(c) == 7);
  OK(pkv_cache_destroy(c));
  point("hold_copy_sources and copy_done");
}

static void test_append_batch(void) {
  pkv_cache* c = make_cache(6, 4);
  OK(pkv_cache_allocate(c, 1, 2));
  OK(pkv_cache_allocate(c, 2, 4));
  OK(pkv_cache_fork(c, 1, 3));
  const uint64_t seqs[4] = {1, 2, 99, 3};
  pkv_item_copy copies[4];
  pkv_item_error errors[4];
  size_t nc = 9, ne = 9;
  OK(pkv_cache_append_batch(c, seqs, NULL, 1, 4, copies, &nc, errors, &ne));
  /* S1 shares its half-full block with S3: S1 copies; S2 takes a block; S99 fails; S3 then is
   * alone in the old block and appends in place. */
  CHECK(nc == 1 && copies[0].item == 0 && copies[0].copy.src != PKV_NO_BLOCK);
  CHECK(ne == 1 && errors[0].item == 2 && errors[0].status == PKV_SEQUENCE_NOT_FOUND);
  CHECK(strcmp(pkv_last_error_message(), "Sequence not found: S99") == 0);
  pkv_sequence_info info;
  OK(pkv_cache_get_sequence(c, 2, &info));
  CHECK(info.num_tokens == 5 && info.num_blocks == 2);

  /* per-item counts */
  const size_t counts[2] = {0, 16};
  const uint64_t two[2] = {1, 2};
  OK(pkv_cache_append_batch(c, two, counts, 0, 2, copies, &nc, errors, &ne));
  CHECK(nc == 0 && ne == 1 && errors[0].item == 1 && errors[0].status == PKV_OUT_OF_MEMORY);
  OK(pkv_cache_get_sequence(c, 2, &info));
  CHECK(info.num_tokens == 5);
  const size_t ok_counts[2] = {1, 3};
  OK(pkv_cache_append_batch(c, two, ok_counts, 0, 2, copies, &nc, errors, &ne));
  CHECK(nc == 0 && ne == 0);
  OK(pkv_cache_get_sequence(c, 2, &info));
  CHECK(info.num_tokens == 8);

  /* empty batch, NULL pointers */
  OK(pkv_cache_append_batch(c, NULL, NULL, 1, 0, NULL, &nc, NULL, &ne));
  CHECK(nc == 0 && ne == 0);
  FAILS(pkv_cache_append_batch(c, NULL, NULL, 1, 2, copies, &nc, errors, &ne), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for seqs");
  FAILS(pkv_cache_append_batch(c, two, NULL, 1, 2, NULL, &nc, errors, &ne), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for copies");
  FAILS(pkv_cache_append_batch(c, two, NULL, 1, 2, copies, &nc, NULL, &ne), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for errors");
  FAILS(pkv_cache_append_batch(c, two, NULL, 1, 2, copies, NULL, errors, &ne), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for num_copies");
  FAILS(pkv_cache_append_batch(c, two, NULL, 1, 2, copies, &nc, errors, NULL), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for num_errors");
  FAILS(pkv_cache_append_batch(NULL, two, NULL, 1, 2, copies, &nc, errors, &ne),
        PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer for pkv_cache");
  OK(pkv_cache_get_sequence(c, 2, &info));
  CHECK(info.num_tokens == 8); /* none of the rejected calls appended */
  OK(pkv_cache_validate_unsafe(c));
  OK(pkv_cache_destroy(c));
  point("append_batch, uniform and per-item, with item errors and copies");
}

static void test_eviction(void) {
  pkv_cache* c = make_cache(12, 16);
  pkv_eviction_strategy s;
  OK(pkv_cache_eviction_strategy(c, &s));
  CHECK(s.kind == PKV_STRATEGY_LRU);
  uint64_t victim = 0;
  bool found = true;
  OK(pkv_cache_select_eviction_target(c, &victim, &found));
  CHECK(!found);
  FAILS(pkv_cache_evict(c, &victim), PKV_INVALID_OPERATION,
        "Invalid operation: No sequences to evict");
  for (uint64_t i = 1; i <= 4; ++i) OK(pkv_cache_allocate(c, i, 16 * i)); /* 1+2+3+4 blocks */
  pkv_copy_op op;
  OK(pkv_cache_append(c, 1, 1, &op)); /* S1 most recent, 2 blocks: 11 of 12 used */
  OK(pkv_cache_select_eviction_target(c, &victim, &found));
  CHECK(found && victim == 2);

  s.kind = PKV_STRATEGY_LONGEST_FIRST;
  OK(pkv_cache_set_eviction_strategy(c, &s));
  OK(pkv_cache_eviction_strategy(c, &s));
  CHECK(s.kind == PKV_STRATEGY_LONGEST_FIRST);
  OK(pkv_cache_evict(c, &victim));
  CHECK(victim == 4);
  s.kind = PKV_STRATEGY_PRIORITY;
  s.levels = 0;
  FAILS(pkv_cache_set_eviction_strategy(c, &s), PKV_INVALID_ARGUMENT, "Invalid argument");
  s.levels = 4;
  OK(pkv_cache_set_eviction_strategy(c, &s));
  OK(pkv_cache_set_priority(c, 1, 3));
  OK(pkv_cache_set_priority(c, 2, 3));
  OK(pkv_cache_select_eviction_target(c, &victim, &found));
  CHECK(found && victim == 3);
  s.kind = PKV_STRATEGY_STREAMING_LLM;
  s.sink_tokens = 0;
  s.window_tokens = 0;
  FAILS(pkv_cache_set_eviction_strategy(c, &s), PKV_INVALID_ARGUMENT, "Invalid argument");
  s.kind = (pkv_strategy_kind)17;
  FAILS(pkv_cache_set_eviction_strategy(c, &s), PKV_INVALID_ARGUMENT,
        "Invalid argument: unknown eviction strategy kind 17");
  FAILS(pkv_cache_set_eviction_strategy(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_cache_eviction_strategy(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  s.kind = PKV_STRATEGY_LFU;
  OK(pkv_cache_set_eviction_strategy(c, &s));
  OK(pkv_cache_eviction_strategy(c, &s));
  CHECK(s.kind == PKV_STRATEGY_LFU);
  FAILS(pkv_cache_select_eviction_target(c, NULL, &found), PKV_INVALID_ARGUMENT, "Invalid");
  FAILS(pkv_cache_select_eviction_target(c, &victim, NULL), PKV_INVALID_ARGUMENT, "Invalid");
  FAILS(pkv_cache_evict(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");

  /* threshold */
  double t = 0;
  OK(pkv_cache_eviction_threshold(c, &t));
  CHECK(t == 0.9);
  OK(pkv_cache_set_eviction_threshold(c, 7.0));
  OK(pkv_cache_eviction_threshold(c, &t));
  CHECK(t == 1.0);
  OK(pkv_cache_set_eviction_threshold(c, 0.5));
  bool needs = false;
  OK(pkv_cache_needs_eviction(c, &needs));
  CHECK(needs); /* 7 of 12 used (S1 2 blocks, S2 2, S3 3) */
  FAILS(pkv_cache_set_eviction_threshold(c, NAN), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_cache_eviction_threshold(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");

  /* evict_to_threshold, bounded by the buffer */
  uint64_t victims[4];
  size_t nv = 9;
  FAILS(pkv_cache_evict_to_threshold(c, 1.5, victims, 4, &nv), PKV_INVALID_ARGUMENT,
        "Invalid argument");
  FAILS(pkv_cache_evict_to_threshold(c, NAN, victims, 4, &nv), PKV_INVALID_ARGUMENT,
        "Invalid argument");
  FAILS(pkv_cache_evict_to_threshold(c, -0.1, victims, 4, &nv), PKV_INVALID_ARGUMENT, "Invalid");
  FAILS(pkv_cache_evict_to_threshold(c, 0.1, NULL, 4, &nv), PKV_INVALID_ARGUMENT, "Invalid");
  FAILS(pkv_cache_evict_to_threshold(c, 0.1, victims, 4, NULL), PKV_INVALID_ARGUMENT, "Invalid");
  OK(pkv_cache_evict_to_threshold(c, 0.1, NULL, 0, &nv));
  CHECK(nv == 3);
  FAILS(pkv_cache_evict_to_threshold(c, 0.0, victims, 1, &nv), PKV_BUFFER_TOO_SMALL,
        "Buffer too small: evicted 1");
  CHECK(nv == 1);
  OK(pkv_cache_evict_to_threshold(c, 0.0, victims, 4, &nv));
  CHECK(nv == 2);
  size_t n = 0;
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 0 && free_blocks(c) == 12);
  pkv_cache_stats st;
  OK(pkv_cache_stats_get(c, &st));
  CHECK(st.total_evictions == 4);
  OK(pkv_cache_validate_unsafe(c));
  OK(pkv_cache_destroy(c));
  point("eviction strategies, threshold, evict, evict_to_threshold");
}

static void test_streaming(void) {
  pkv_cache* c = make_cache(20, 4);
  size_t dropped = 99;
  OK(pkv_cache_allocate(c, 1, 40)); /* 10 blocks */
  OK(pkv_cache_apply_streaming_llm(c, 1, 100, 100, &dropped));
  CHECK(dropped == 0);
  FAILS(pkv_cache_apply_streaming_llm(c, 1, 0, 0, &dropped), PKV_INVALID_ARGUMENT, "Invalid");
  FAILS(pkv_cache_apply_streaming_llm(c, 1, SIZE_MAX, 2, &dropped), PKV_INVALID_ARGUMENT,
        "Invalid argument");
  FAILS(pkv_cache_apply_streaming_llm(c, 2, 4, 4, &dropped), PKV_SEQUENCE_NOT_FOUND, "Sequence");
  FAILS(pkv_cache_apply_streaming_llm(c, 1, 4, 4, NULL), PKV_INVALID_ARGUMENT, "Invalid");
  /* sink 4 (block 0), window 8 (blocks 8, 9): blocks 1..7 go. The seed skipped one block too
   * many when the sink is a multiple of the block size. */
  OK(pkv_cache_apply_streaming_llm(c, 1, 4, 8, &dropped));
  CHECK(dropped == 28);
  pkv_sequence_info info;
  OK(pkv_cache_get_sequence(c, 1, &info));
  CHECK(info.num_tokens == 12 && info.num_blocks == 3 && info.num_token_runs == 1);
  CHECK(free_blocks(c) == 17);
  pkv_copy_op op;
  OK(pkv_cache_append(c, 1, 1, &op)); /* the last kept block is full: one new block */
  CHECK(free_blocks(c) == 16);
  /* Unaligned: sink 5 (blocks 0, 1), window 6 (tokens 34..39: blocks 8, 9). Kept tokens stay in
   * their slots: tokens 0..4 in slots 0..4, tokens 5..10 in slots 10..15. */
  OK(pkv_cache_allocate(c, 2, 40));
  OK(pkv_cache_apply_streaming_llm(c, 2, 5, 6, &dropped));
  CHECK(dropped == 29);
  OK(pkv_cache_get_sequence(c, 2, &info));
  CHECK(info.num_tokens == 11 && info.num_blocks == 4 && info.num_token_runs == 2);
  pkv_token_run runs[2];
  size_t n = 0;
  OK(pkv_cache_token_runs(c, 2, runs, 2, &n));
  CHECK(n == 2 && runs[0].first_token == 0 && runs[0].slot == 0 && runs[0].length == 5);
  CHECK(runs[1].first_token == 5 && runs[1].slot == 10 && runs[1].length == 6);
  CHECK(free_blocks(c) == 12);
  OK(pkv_cache_validate_unsafe(c));
  OK(pkv_cache_destroy(c));
  point("apply_streaming_llm keeps exactly sink + window");
}

static void test_pool(void) {
  pkv_pool* p = NULL;
  FAILS(pkv_pool_create(0, 32, &p), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_create(8, 65, &p), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_create(8, 8, NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  OK(pkv_pool_create(8, 4, &p));
  size_t v = 0;
  uint64_t u = 0;
  uint32_t b = 0, r = 9;
  bool freed = false;
  OK(pkv_pool_capacity(p, &v));
  CHECK(v == 8);
  OK(pkv_pool_acquire(p, &b));
  CHECK(b < 8);
  OK(pkv_pool_ref_count(p, b, &r));
  CHECK(r == 1);
  OK(pkv_pool_retain(p, b));
  OK(pkv_pool_ref_count(p, b, &r));
  CHECK(r == 2);
  OK(pkv_pool_release(p, b, &freed));
  CHECK(!freed);
  OK(pkv_pool_release(p, b, &freed));
  CHECK(freed);
  FAILS(pkv_pool_release(p, b, &freed), PKV_BLOCK_NOT_FOUND, "Block not found: B");
  FAILS(pkv_pool_retain(p, b), PKV_BLOCK_NOT_FOUND, "Block not found: B");
  FAILS(pkv_pool_retain(p, 1000), PKV_BLOCK_NOT_FOUND, "Block not found: B1000");
  OK(pkv_pool_ref_count(p, 1000, &r));
  CHECK(r == 0);

  uint32_t ids[8];
  FAILS(pkv_pool_acquire_n(p, 9, ids), PKV_OUT_OF_MEMORY,
        "Out of memory: requested 9 blocks, 8 available");
  OK(pkv_pool_acquire_n(p, 0, NULL));
  OK(pkv_pool_acquire_n(p, 8, ids));
  OK(pkv_pool_free_count(p, &v));
  CHECK(v == 0);
  OK(pkv_pool_used_count(p, &v));
  CHECK(v == 8);
  FAILS(pkv_pool_acquire(p, &b), PKV_OUT_OF_MEMORY, "Out of memory");
  OK(pkv_pool_retain_n(p, ids, 8));
  const uint32_t bad[2] = {ids[0], 5000};
  FAILS(pkv_pool_retain_n(p, bad, 2), PKV_BLOCK_NOT_FOUND, "Block not found: B5000");
  OK(pkv_pool_ref_count(p, ids[0], &r));
  CHECK(r == 2); /* the rejected retain_n changed nothing */
  size_t nfreed = 9;
  OK(pkv_pool_release_n(p, ids, 8, &nfreed));
  CHECK(nfreed == 0);
  OK(pkv_pool_release_n(p, ids, 8, &nfreed));
  CHECK(nfreed == 8);
  OK(pkv_pool_total_acquired(p, &u));
  CHECK(u == 9);
  OK(pkv_pool_total_released(p, &u));
  CHECK(u == 9);
  OK(pkv_pool_validate_unsafe(p));

  FAILS(pkv_pool_acquire(p, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_acquire_n(p, 2, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_retain_n(p, NULL, 2), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_release(p, 0, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_release_n(p, NULL, 2, &nfreed), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_release_n(p, ids, 2, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_ref_count(p, 0, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_capacity(p, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_free_count(NULL, &v), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_used_count(p, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_total_acquired(p, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_total_released(p, NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  FAILS(pkv_pool_validate_unsafe(NULL), PKV_INVALID_ARGUMENT, "Invalid argument");
  OK(pkv_pool_destroy(p));
  FAILS(pkv_pool_destroy(p), PKV_INVALID_ARGUMENT, "Invalid argument: not a live pkv_pool");
  FAILS(pkv_pool_acquire(p, &b), PKV_INVALID_ARGUMENT, "Invalid argument: not a live pkv_pool");
  FAILS(pkv_pool_destroy(NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  point("block pool: every function and its errors");
}

/* ---- multi-threaded: each thread runs its own sequences on one cache; exact afterwards ------- */

enum { kThreads = 4, kSeqsPerThread = 16, kSteps = 300 };

typedef struct {
  pkv_cache* cache;
  int tid;
  long failures;
  char first_error[160];
} worker_arg;

static void note(worker_arg* a, pkv_status s) {
  if (s == PKV_OK) return;
  if (a->failures++ == 0) {
    snprintf(a->first_error, sizeof a->first_error, "%s: %s", pkv_status_name(s),
             pkv_last_error_message());
  }
}

static void* worker(void* p) {
  worker_arg* a = p;
  uint64_t ids[kSeqsPerThread];
  const uint64_t base = ((uint64_t)(a->tid + 1) << 32);
  uint64_t next = base;
  for (int i = 0; i < kSeqsPerThread; ++i) {
    ids[i] = next++;
    note(a, pkv_cache_allocate(a->cache, ids[i], 1 + (size_t)(i * 7 % 40)));
  }
  pkv_item_copy copies[kSeqsPerThread];
  pkv_item_error errors[kSeqsPerThread];
  for (int step = 0; step < kSteps; ++step) {
    size_t nc = 0, ne = 0;
    note(a,
         pkv_cache_append_batch(a->cache, ids, NULL, 1, kSeqsPerThread, copies, &nc, errors, &ne));
    if (ne != 0) note(a, errors[0].status);
    const int k = step % kSeqsPerThread;
    if (step % 5 == 0) {
      /* beam: fork, append (copy-on-write), free the parent; the child takes its place */
      const uint64_t child = next++;
      pkv_copy_op op;
      note(a, pkv_cache_fork(a->cache, ids[k], child));
      note(a, pkv_cache_append(a->cache, child, 1, &op));
      note(a, pkv_cache_free(a->cache, ids[k]));
      ids[k] = child;
    } else if (step % 7 == 0) {
      note(a, pkv_cache_free(a->cache, ids[k]));
      ids[k] = next++;
      note(a, pkv_cache_allocate(a->cache, ids[k], 30));
    }
    if (step % 11 == 0) {
      size_t n = 0;
      uint32_t table[64];
      note(a, pkv_cache_block_table(a->cache, ids[k], table, 64, &n));
      size_t free_now = 0;
      note(a, pkv_cache_free_block_count(a->cache, &free_now));
      pkv_cache_stats st;
      note(a, pkv_cache_stats_get(a->cache, &st));
    }
  }
  for (int i = 0; i < kSeqsPerThread; ++i) note(a, pkv_cache_free(a->cache, ids[i]));
  return NULL;
}

static void test_threads(void) {
  pkv_cache* c = make_cache(4096, 16);
  pthread_t th[kThreads];
  worker_arg args[kThreads];
  for (int t = 0; t < kThreads; ++t) {
    args[t] = (worker_arg){c, t, 0, ""};
    CHECK(pthread_create(&th[t], NULL, worker, &args[t]) == 0);
  }
  for (int t = 0; t < kThreads; ++t) {
    CHECK(pthread_join(th[t], NULL) == 0);
    if (args[t].failures != 0) printf("#   thread %d: %s\n", t, args[t].first_error);
    CHECK(args[t].failures == 0);
  }
  size_t n = 99;
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 0);
  CHECK(free_blocks(c) == 4096);
  pkv_cache_stats st;
  OK(pkv_cache_stats_get(c, &st));
  CHECK(st.total_allocations == st.total_frees);
  CHECK(st.total_forks == (uint64_t)kThreads * (kSteps / 5));
  OK(pkv_cache_validate_unsafe(c));
  OK(pkv_cache_destroy(c));
  point("threads share one cache through the C ABI; exact accounting afterwards");
}

/* ---- fork_many / free_many / truncate ---------------------------------------------------------
 */

static void test_many_truncate(void) {
  pkv_cache* c = make_cache(16, 4);
  size_t n = 99;
  OK(pkv_cache_allocate(c, 1, 6)); /* 2 blocks */
  const uint64_t dsts[3] = {2, 3, 4};
  OK(pkv_cache_fork_many(c, 1, dsts, 3));
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 4);
  CHECK(free_blocks(c) == 14); /* shared, no block taken */
  uint32_t table[4];
  size_t req = 0;
  OK(pkv_cache_block_table(c, 1, table, 4, &req));
  OK(pkv_cache_block_ref_count(c, table[0], &n));
  CHECK(n == 4);
  /* bad input changes nothing */
  FAILS(pkv_cache_fork_many(c, 1, NULL, 2), PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer");
  OK(pkv_cache_fork_many(c, 1, NULL, 0)); /* checks src only */
  FAILS(pkv_cache_fork_many(c, 99, NULL, 0), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S99");
  const uint64_t dup[2] = {7, 7};
  FAILS(pkv_cache_fork_many(c, 1, dup, 2), PKV_INVALID_ARGUMENT, "Invalid argument:");
  const uint64_t self[2] = {8, 1};
  FAILS(pkv_cache_fork_many(c, 1, self, 2), PKV_INVALID_OPERATION, "Invalid operation:");
  const uint64_t exists[2] = {9, 2};
  FAILS(pkv_cache_fork_many(c, 1, exists, 2), PKV_INVALID_OPERATION, "Invalid operation:");
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 4);
  FAILS(pkv_cache_fork_many(NULL, 1, dsts, 3), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");

  /* truncate */
  size_t released = 99;
  OK(pkv_cache_truncate(c, 4, 3, &released)); /* 6 -> 3 tokens: one block leaves */
  CHECK(released == 1);
  pkv_sequence_info info;
  OK(pkv_cache_get_sequence(c, 4, &info));
  CHECK(info.num_tokens == 3 && info.num_blocks == 1);
  released = 99;
  FAILS(pkv_cache_truncate(c, 4, 4, &released), PKV_INVALID_ARGUMENT, "Invalid argument:");
  CHECK(released == 99);
  FAILS(pkv_cache_truncate(c, 42, 1, &released), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S42");
  FAILS(pkv_cache_truncate(c, 4, 1, NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");
  OK(pkv_cache_truncate(c, 4, 0, &released));
  CHECK(released == 0);

  /* free_many: 2 twice and an unknown id fail on their own; the others go */
  const uint64_t seqs[5] = {2, 55, 3, 2, 4};
  pkv_item_error errs[5];
  size_t ne = 99;
  OK(pkv_cache_free_many(c, seqs, 5, errs, &ne));
  CHECK(ne == 2);
  CHECK(errs[0].item == 1 && errs[0].status == PKV_SEQUENCE_NOT_FOUND);
  CHECK(errs[1].item == 3 && errs[1].status == PKV_SEQUENCE_NOT_FOUND);
  CHECK(strncmp(pkv_last_error_message(), "Sequence not found: S55", 23) == 0);
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 1);
  FAILS(pkv_cache_free_many(c, seqs, 5, NULL, &ne), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");
  FAILS(pkv_cache_free_many(c, NULL, 5, errs, &ne), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");
  FAILS(pkv_cache_free_many(c, seqs, 5, errs, NULL), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL");
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 1);
  OK(pkv_cache_free_many(c, NULL, 0, NULL, &ne));
  CHECK(ne == 0);
  const uint64_t last[1] = {1};
  OK(pkv_cache_free_many(c, last, 1, errs, &ne));
  CHECK(ne == 0);
  CHECK(free_blocks(c) == 16);
  OK(pkv_cache_validate_unsafe(c));
  OK(pkv_cache_destroy(c));
  point("fork_many, free_many, truncate and their bad input");
}

/* ---- prefix caching -----------------------------------------------------------------------------
 */

static void test_prefix(void) {
  pkv_cache_options o;
  OK(pkv_cache_options_init(&o));
  CHECK(o.prefix_caching && o.prefix_hash == PKV_HASH_SHA256 && !o.prefix_verify_tokens);
  pkv_cache* c = NULL;
  o.prefix_hash = (pkv_hash_algorithm)7;
  FAILS(pkv_cache_create(16, 4, 2, 8, &o, &c), PKV_INVALID_ARGUMENT,
        "Invalid argument: unknown hash algorithm 7");
  CHECK(c == NULL);
  o.prefix_hash = PKV_HASH_XXH3_128;
  o.prefix_verify_tokens = true;
  OK(pkv_cache_create(16, 4, 2, 8, &o, &c));

  uint32_t prompt[10];
  for (int i = 0; i < 10; ++i) prompt[i] = (uint32_t)(100 + i);
  size_t cached = 99, n = 99;
  OK(pkv_cache_allocate_tokens(c, 1, prompt, 10, "t", 1, &cached));
  CHECK(cached == 0);
  OK(pkv_cache_match_prefix(c, prompt, 10, "t", 1, &n));
  CHECK(n == 0); /* nothing committed yet */
  size_t published = 99;
  FAILS(pkv_cache_commit(c, 1, 11, &published), PKV_INVALID_ARGUMENT, "Invalid argument:");
  CHECK(published == 99);
  OK(pkv_cache_commit(c, 1, 10, &published));
  CHECK(published == 2);
  OK(pkv_cache_cached_block_count(c, &n));
  CHECK(n == 2);
  OK(pkv_cache_match_prefix(c, prompt, 10, "t", 1, &n));
  CHECK(n == 8);
  OK(pkv_cache_match_prefix(c, prompt, 10, "other", 5, &n));
  CHECK(n == 0); /* another salt shares nothing */
  OK(pkv_cache_match_prefix(c, NULL, 0, NULL, 0, &n));
  CHECK(n == 0);

  /* a second request with the same prompt shares the two committed blocks */
  const size_t before = free_blocks(c);
  OK(pkv_cache_allocate_tokens(c, 2, prompt, 10, "t", 1, &cached));
  CHECK(cached == 8);
  CHECK(free_blocks(c) == before - 1); /* only the partial last block is new */
  uint32_t t1[3], t2[3];
  size_t req = 0;
  OK(pkv_cache_block_table(c, 1, t1, 3, &req));
  OK(pkv_cache_block_table(c, 2, t2, 3, &req));
  CHECK(t1[0] == t2[0] && t1[1] == t2[1] && t1[2] != t2[2]);
  OK(pkv_cache_block_ref_count(c, t1[0], &n));
  CHECK(n == 2);
  OK(pkv_cache_block_ref_count(c, PKV_NO_BLOCK, &n));
  CHECK(n == 0);

  /* append with ids, one at a time and as a decode step */
  pkv_copy_op op;
  const uint32_t more[2] = {110, 111};
  OK(pkv_cache_append_tokens(c, 1, more, 2, &op)); /* 12 tokens: 3 full blocks */
  CHECK(op.src == PKV_NO_BLOCK && op.dst == PKV_NO_BLOCK);
  OK(pkv_cache_append_tokens(c, 1, NULL, 0, &op));
  FAILS(pkv_cache_append_tokens(c, 1, NULL, 2, &op), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for tokens");
  FAILS(pkv_cache_append_tokens(c, 1, more, 2, NULL), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_append(c, 1, 1, &op), PKV_INVALID_OPERATION, "Invalid operation:"); /* by count */
  const uint64_t seqs[3] = {1, 2, 77};
  const uint32_t toks[3] = {112, 500, 1};
  pkv_item_copy copies[3];
  pkv_item_error errs[3];
  size_t nc = 99, ne = 99;
  OK(pkv_cache_append_batch_tokens(c, seqs, toks, 3, copies, &nc, errs, &ne));
  CHECK(nc == 0 && ne == 1 && errs[0].item == 2 && errs[0].status == PKV_SEQUENCE_NOT_FOUND);
  FAILS(pkv_cache_append_batch_tokens(c, seqs, NULL, 3, copies, &nc, errs, &ne),
        PKV_INVALID_ARGUMENT, "Invalid argument: NULL pointer for tokens");
  OK(pkv_cache_append_batch_tokens(c, NULL, NULL, 0, NULL, &nc, NULL, &ne));
  CHECK(nc == 0 && ne == 0);
  pkv_sequence_info info;
  OK(pkv_cache_get_sequence(c, 1, &info));
  CHECK(info.num_tokens == 13);
  OK(pkv_cache_get_sequence(c, 2, &info));
  CHECK(info.num_tokens == 11);

  /* bad input: empty prompt, NULLs, existing id; nothing changes */
  const size_t free_before = free_blocks(c);
  FAILS(pkv_cache_allocate_tokens(c, 3, prompt, 0, NULL, 0, &cached), PKV_INVALID_ARGUMENT,
        "Invalid argument:");
  FAILS(pkv_cache_allocate_tokens(c, 3, NULL, 4, NULL, 0, &cached), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for prompt");
  FAILS(pkv_cache_allocate_tokens(c, 3, prompt, 4, NULL, 2, &cached), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for salt");
  FAILS(pkv_cache_allocate_tokens(c, 3, prompt, 4, NULL, 0, NULL), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for cached");
  FAILS(pkv_cache_allocate_tokens(c, 1, prompt, 4, NULL, 0, &cached), PKV_INVALID_OPERATION,
        "Invalid operation:");
  uint32_t big[100] = {0};
  FAILS(pkv_cache_allocate_tokens(c, 3, big, 100, NULL, 0, &cached), PKV_OUT_OF_MEMORY,
        "Out of memory");
  FAILS(pkv_cache_commit(c, 99, 1, &published), PKV_SEQUENCE_NOT_FOUND, "Sequence not found: S99");
  FAILS(pkv_cache_commit(c, 1, 1, NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");
  FAILS(pkv_cache_match_prefix(c, NULL, 3, NULL, 0, &n), PKV_INVALID_ARGUMENT, "Invalid argument:");
  FAILS(pkv_cache_match_prefix(c, prompt, 3, NULL, 0, NULL), PKV_INVALID_ARGUMENT,
        "Invalid argument:");
  CHECK(free_blocks(c) == free_before);
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 2);

  /* stats, free into reclaimable, reset */
  pkv_prefix_stats ps;
  OK(pkv_cache_prefix_stats(c, &ps));
  CHECK(ps.requests == 2 && ps.queries == 20 && ps.hits == 8 && ps.verify_failures == 0);
  CHECK(ps.published >= 2);
  FAILS(pkv_cache_prefix_stats(c, NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");
  OK(pkv_cache_free(c, 1));
  OK(pkv_cache_free(c, 2));
  CHECK(free_blocks(c) == 16);
  OK(pkv_cache_reclaimable_block_count(c, &n));
  CHECK(n >= 2);
  OK(pkv_cache_match_prefix(c, prompt, 10, "t", 1, &n));
  CHECK(n == 8); /* still findable while reclaimable */
  OK(pkv_cache_reset_prefix_cache(c));
  OK(pkv_cache_match_prefix(c, prompt, 10, "t", 1, &n));
  CHECK(n == 0);
  OK(pkv_cache_cached_block_count(c, &n));
  CHECK(n == 0);
  FAILS(pkv_cache_reset_prefix_cache(NULL), PKV_INVALID_ARGUMENT, "Invalid argument: NULL");
  OK(pkv_cache_validate_unsafe(c));
  OK(pkv_cache_destroy(c));
  FAILS(pkv_cache_allocate_tokens(c, 1, prompt, 10, NULL, 0, &cached), PKV_INVALID_ARGUMENT,
        "Invalid argument: not a live pkv_cache handle");
  FAILS(pkv_cache_cached_block_count(c, &n), PKV_INVALID_ARGUMENT, "Invalid argument: not a live");

  /* prefix caching off: the token form is the count form and finds nothing */
  OK(pkv_cache_options_init(&o));
  o.prefix_caching = false;
  OK(pkv_cache_create(16, 4, 2, 8, &o, &c));
  OK(pkv_cache_allocate_tokens(c, 1, prompt, 10, NULL, 0, &cached));
  OK(pkv_cache_commit(c, 1, 10, &published));
  CHECK(published == 0);
  OK(pkv_cache_allocate_tokens(c, 2, prompt, 10, NULL, 0, &cached));
  CHECK(cached == 0);
  OK(pkv_cache_destroy(c));
  point("prefix caching: allocate/commit/match/append with token ids, stats, reset, bad input");
}

static void hex_of(const pkv_block_hash* h, size_t bytes, char* out) {
  for (size_t i = 0; i < bytes; ++i) sprintf(out + 2 * i, "%02x", h->bytes[i]);
}

static void test_block_hashes(void) {
  /* The known vectors of tests/test_block_hash.cpp: tokens 0..9, block size 4. */
  uint32_t t[10];
  for (uint32_t i = 0; i < 10; ++i) t[i] = i;
  pkv_block_hash hs[3];
  size_t req = 99;
  char hex[65];
  OK(pkv_block_hashes(t, 10, 4, NULL, 0, PKV_HASH_SHA256, NULL, 0, &req)); /* size query */
  CHECK(req == 2);
  FAILS(pkv_block_hashes(t, 10, 4, NULL, 0, PKV_HASH_SHA256, hs, 1, &req), PKV_BUFFER_TOO_SMALL,
        "Buffer too small");
  CHECK(req == 2);
  OK(pkv_block_hashes(t, 10, 4, NULL, 0, PKV_HASH_SHA256, hs, 3, &req));
  CHECK(req == 2);
  hex_of(&hs[0], 32, hex);
  CHECK(strcmp(hex, "0c47b210c9a57e664661f7ed102b192883b1368f854d43d07cadd79728a99167") == 0);
  hex_of(&hs[1], 32, hex);
  CHECK(strcmp(hex, "ceb321cb84e5f0e41624e807242967931200961a2a5965aa54451db28d6d86c2") == 0);
  OK(pkv_block_hashes(t, 10, 4, "tenant-a", 8, PKV_HASH_SHA256, hs, 3, &req));
  hex_of(&hs[1], 32, hex);
  CHECK(strcmp(hex, "9fbd8df54e8cdb1c6eedff515ce175105f35bbcc0b0e93aed1e9348977e08390") == 0);
  OK(pkv_block_hashes(t, 10, 4, "tenant-a", 8, PKV_HASH_XXH3_128, hs, 3, &req));
  hex_of(&hs[0], 16, hex);
  CHECK(strcmp(hex, "d94d032fdacc9824ff9e899c1d74acfc") == 0);
  int zero = 1;
  for (int i = 16; i < 32; ++i) zero &= hs[0].bytes[i] == 0;
  CHECK(zero);
  OK(pkv_block_hashes(NULL, 0, 4, NULL, 0, PKV_HASH_SHA256, NULL, 0, &req));
  CHECK(req == 0);
  req = 99;
  FAILS(pkv_block_hashes(t, 10, 0, NULL, 0, PKV_HASH_SHA256, hs, 3, &req), PKV_INVALID_ARGUMENT,
        "Invalid argument: block_hashes: block_size must be positive");
  CHECK(req == 99);
  FAILS(pkv_block_hashes(t, 10, 4, NULL, 0, (pkv_hash_algorithm)2, hs, 3, &req),
        PKV_INVALID_ARGUMENT, "Invalid argument: unknown hash algorithm 2");
  FAILS(pkv_block_hashes(NULL, 10, 4, NULL, 0, PKV_HASH_SHA256, hs, 3, &req), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for tokens");
  FAILS(pkv_block_hashes(t, 10, 4, NULL, 1, PKV_HASH_SHA256, hs, 3, &req), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for salt");
  FAILS(pkv_block_hashes(t, 10, 4, NULL, 0, PKV_HASH_SHA256, NULL, 3, &req), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for out");
  FAILS(pkv_block_hashes(t, 10, 4, NULL, 0, PKV_HASH_SHA256, hs, 3, NULL), PKV_INVALID_ARGUMENT,
        "Invalid argument: NULL pointer for required");
  point("block_hashes: the C++ known vectors, size query, bad input");
}

/* Threads allocating, committing and freeing one shared prompt (plus a private tail each): every
 * call succeeds, cached counts are block multiples, and the accounting is exact afterwards. */
typedef struct prefix_arg {
  pkv_cache* cache;
  int id;
  int failures;
  size_t hits;
} prefix_arg;

static void* prefix_worker(void* p) {
  prefix_arg* a = (prefix_arg*)p;
  uint32_t prompt[40];
  for (int i = 0; i < 40; ++i) prompt[i] = (uint32_t)(7000 + i);
  for (int step = 0; step < 300; ++step) {
    const uint64_t seq = ((uint64_t)a->id << 32) | (uint64_t)step;
    prompt[39] = (uint32_t)(a->id * 1000 + step); /* the last block differs per request */
    size_t cached = 0, published = 0;
    if (pkv_cache_allocate_tokens(a->cache, seq, prompt, 40, "s", 1, &cached) != PKV_OK ||
        cached % 8 != 0 || cached > 32) {
      ++a->failures;
      continue;
    }
    a->hits += cached;
    if (pkv_cache_commit(a->cache, seq, 40, &published) != PKV_OK) ++a->failures;
    if (pkv_cache_free(a->cache, seq) != PKV_OK) ++a->failures;
  }
  return NULL;
}

static void test_prefix_threads(void) {
  pkv_cache* c = make_cache(64, 8);
  enum { kThreads = 4 };
  pthread_t th[kThreads];
  prefix_arg args[kThreads];
  for (int t = 0; t < kThreads; ++t) {
    args[t] = (prefix_arg){c, t + 1, 0, 0};
    CHECK(pthread_create(&th[t], NULL, prefix_worker, &args[t]) == 0);
  }
  size_t hits = 0;
  for (int t = 0; t < kThreads; ++t) {
    CHECK(pthread_join(th[t], NULL) == 0);
    CHECK(args[t].failures == 0);
    hits += args[t].hits;
  }
  pkv_prefix_stats ps;
  OK(pkv_cache_prefix_stats(c, &ps));
  CHECK(ps.requests == kThreads * 300 && ps.hits == hits);
  CHECK(hits > 0); /* after the first commit, the four shared blocks are found */
  CHECK(free_blocks(c) == 64);
  size_t n = 99;
  OK(pkv_cache_num_sequences(c, &n));
  CHECK(n == 0);
  OK(pkv_cache_validate_unsafe(c));
  OK(pkv_cache_destroy(c));
  point("threads share a prompt's cached blocks through the C ABI; exact accounting afterwards");
}

int main(void) {
  printf("TAP version 13\n");
  test_status_names();
  test_create_destroy();
  test_figures();
  test_sequences();
  test_copy_hold();
  test_append_batch();
  test_eviction();
  test_streaming();
  test_pool();
  test_threads();
  test_many_truncate();
  test_prefix();
  test_block_hashes();
  test_prefix_threads();
  printf("1..%d\n", g_point);
  printf("# C ABI tests: %d passed, %d failed\n", g_point - g_failed_points, g_failed_points);
  return g_failed_points == 0 ? 0 : 1;
}
