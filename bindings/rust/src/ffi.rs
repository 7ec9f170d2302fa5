//! The C ABI of include/pkv/pkv.h, declared by hand (std only: no bindgen). build.rs checks the
//! status codes against the header.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_uint};

pub type pkv_status = c_int;
pub const PKV_OK: pkv_status = 0;
pub const PKV_OUT_OF_MEMORY: pkv_status = 1;
pub const PKV_SEQUENCE_NOT_FOUND: pkv_status = 2;
pub const PKV_BLOCK_NOT_FOUND: pkv_status = 3;
pub const PKV_INVALID_OPERATION: pkv_status = 4;
pub const PKV_INVALID_ARGUMENT: pkv_status = 5;
pub const PKV_BUFFER_TOO_SMALL: pkv_status = 6;
pub const PKV_HOST_OUT_OF_MEMORY: pkv_status = 7;
pub const PKV_INTERNAL_ERROR: pkv_status = 8;

pub const PKV_NO_BLOCK: u32 = u32::MAX;

#[repr(C)]
pub struct pkv_cache {
    _private: [u8; 0],
}
#[repr(C)]
pub struct pkv_pool {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_cache_options {
    pub magazine_size: u32,
    pub hold_copy_sources: bool,
    pub affinity_shift: c_uint,
    pub prefix_caching: bool,
    pub prefix_hash: pkv_hash_algorithm,
    pub prefix_verify_tokens: bool,
}

pub type pkv_hash_algorithm = c_int;
pub const PKV_HASH_SHA256: pkv_hash_algorithm = 0;
pub const PKV_HASH_XXH3_128: pkv_hash_algorithm = 1;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_prefix_stats {
    pub requests: u64,
    pub queries: u64,
    pub hits: u64,
    pub published: u64,
    pub reclaimed: u64,
    pub verify_failures: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_block_hash {
    pub bytes: [u8; 32],
}

pub type pkv_strategy_kind = c_int;
pub const PKV_STRATEGY_LRU: pkv_strategy_kind = 0;
pub const PKV_STRATEGY_LFU: pkv_strategy_kind = 1;
pub const PKV_STRATEGY_LONGEST_FIRST: pkv_strategy_kind = 2;
pub const PKV_STRATEGY_PRIORITY: pkv_strategy_kind = 3;
pub const PKV_STRATEGY_STREAMING_LLM: pkv_strategy_kind = 4;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_eviction_strategy {
    pub kind: pkv_strategy_kind,
    pub levels: u32,
    pub sink_tokens: usize,
    pub window_tokens: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_copy_op {
    pub src: u32,
    pub dst: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_item_copy {
    pub item: usize,
    pub copy: pkv_copy_op,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_item_error {
    pub item: usize,
    pub status: pkv_status,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_sequence_info {
    pub seq_id: u64,
    pub num_tokens: usize,
    pub num_blocks: usize,
    pub last_access: u64,
    pub access_count: u64,
    pub priority: u32,
    pub num_token_runs: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_token_run {
    pub first_token: u64,
    pub slot: u64,
    pub length: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct pkv_cache_stats {
    pub total_allocations: u64,
    pub total_frees: u64,
    pub total_evictions: u64,
    pub total_forks: u64,
    pub peak_blocks_used: u64,
}

extern "C" {
    pub fn pkv_status_name(status: pkv_status) -> *const c_char;
    pub fn pkv_last_error_message() -> *const c_char;

    pub fn pkv_cache_options_init(options: *mut pkv_cache_options) -> pkv_status;
    pub fn pkv_cache_create(
        num_blocks: usize,
        block_size: usize,
        num_heads: usize,
        head_dim: usize,
        options: *const pkv_cache_options,
        out: *mut *mut pkv_cache,
    ) -> pkv_status;
    pub fn pkv_cache_destroy(cache: *mut pkv_cache) -> pkv_status;

    pub fn pkv_cache_set_eviction_strategy(
        cache: *mut pkv_cache,
        strategy: *const pkv_eviction_strategy,
    ) -> pkv_status;
    pub fn pkv_cache_eviction_strategy(
        cache: *const pkv_cache,
        out: *mut pkv_eviction_strategy,
    ) -> pkv_status;
    pub fn pkv_cache_set_eviction_threshold(cache: *mut pkv_cache, threshold: f64) -> pkv_status;
    pub fn pkv_cache_eviction_threshold(cache: *const pkv_cache, out: *mut f64) -> pkv_status;
    pub fn pkv_cache_set_priority(cache: *mut pkv_cache, seq: u64, priority: u32) -> pkv_status;

    pub fn pkv_cache_allocate(cache: *mut pkv_cache, seq: u64, num_tokens: usize) -> pkv_status;
    pub fn pkv_cache_append(
        cache: *mut pkv_cache,
        seq: u64,
        num_tokens: usize,
        copy: *mut pkv_copy_op,
    ) -> pkv_status;
    pub fn pkv_cache_append_batch(
        cache: *mut pkv_cache,
        seqs: *const u64,
        num_tokens: *const usize,
        uniform_tokens: usize,
        n: usize,
        copies: *mut pkv_item_copy,
        num_copies: *mut usize,
        errors: *mut pkv_item_error,
        num_errors: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_free(cache: *mut pkv_cache, seq: u64) -> pkv_status;
    pub fn pkv_cache_fork(cache: *mut pkv_cache, src: u64, dst: u64) -> pkv_status;
    pub fn pkv_cache_fork_many(
        cache: *mut pkv_cache,
        src: u64,
        dsts: *const u64,
        n: usize,
    ) -> pkv_status;
    pub fn pkv_cache_free_many(
        cache: *mut pkv_cache,
        seqs: *const u64,
        n: usize,
        errors: *mut pkv_item_error,
        num_errors: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_truncate(
        cache: *mut pkv_cache,
        seq: u64,
        num_tokens: usize,
        blocks_released: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_allocate_tokens(
        cache: *mut pkv_cache,
        seq: u64,
        prompt: *const u32,
        n: usize,
        salt: *const c_char,
        salt_len: usize,
        cached: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_append_tokens(
        cache: *mut pkv_cache,
        seq: u64,
        tokens: *const u32,
        n: usize,
        copy: *mut pkv_copy_op,
    ) -> pkv_status;
    pub fn pkv_cache_append_batch_tokens(
        cache: *mut pkv_cache,
        seqs: *const u64,
        tokens: *const u32,
        n: usize,
        copies: *mut pkv_item_copy,
        num_copies: *mut usize,
        errors: *mut pkv_item_error,
        num_errors: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_commit(
        cache: *mut pkv_cache,
        seq: u64,
        num_tokens: usize,
        published: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_match_prefix(
        cache: *const pkv_cache,
        tokens: *const u32,
        n: usize,
        salt: *const c_char,
        salt_len: usize,
        out: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_prefix_stats(
        cache: *const pkv_cache,
        out: *mut pkv_prefix_stats,
    ) -> pkv_status;
    pub fn pkv_cache_cached_block_count(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_reclaimable_block_count(
        cache: *const pkv_cache,
        out: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_reset_prefix_cache(cache: *mut pkv_cache) -> pkv_status;
    pub fn pkv_cache_block_ref_count(
        cache: *const pkv_cache,
        block: u32,
        out: *mut usize,
    ) -> pkv_status;
    pub fn pkv_block_hashes(
        tokens: *const u32,
        n: usize,
        block_size: usize,
        salt: *const c_char,
        salt_len: usize,
        algorithm: pkv_hash_algorithm,
        out: *mut pkv_block_hash,
        capacity: usize,
        required: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_pin(cache: *mut pkv_cache, seq: u64) -> pkv_status;
    pub fn pkv_cache_unpin(cache: *mut pkv_cache, seq: u64) -> pkv_status;
    pub fn pkv_cache_copy_done(cache: *mut pkv_cache, seq: u64, released: *mut usize)
        -> pkv_status;
    pub fn pkv_cache_apply_streaming_llm(
        cache: *mut pkv_cache,
        seq: u64,
        sink_tokens: usize,
        window_tokens: usize,
        dropped: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_get_sequence(
        cache: *const pkv_cache,
        seq: u64,
        out: *mut pkv_sequence_info,
    ) -> pkv_status;
    pub fn pkv_cache_block_table(
        cache: *const pkv_cache,
        seq: u64,
        out: *mut u32,
        capacity: usize,
        required: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_token_runs(
        cache: *const pkv_cache,
        seq: u64,
        out: *mut pkv_token_run,
        capacity: usize,
        required: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_sequence_ids(
        cache: *const pkv_cache,
        out: *mut u64,
        capacity: usize,
        required: *mut usize,
    ) -> pkv_status;

    pub fn pkv_cache_select_eviction_target(
        cache: *const pkv_cache,
        seq: *mut u64,
        found: *mut bool,
    ) -> pkv_status;
    pub fn pkv_cache_evict(cache: *mut pkv_cache, victim: *mut u64) -> pkv_status;
    pub fn pkv_cache_evict_to_threshold(
        cache: *mut pkv_cache,
        target: f64,
        victims: *mut u64,
        capacity: usize,
        num_victims: *mut usize,
    ) -> pkv_status;

    pub fn pkv_cache_block_size(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_total_blocks(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_free_block_count(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_used_block_count(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_utilization(cache: *const pkv_cache, out: *mut f64) -> pkv_status;
    pub fn pkv_cache_block_memory_bytes(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_total_memory_bytes(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_used_memory_bytes(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_needs_eviction(cache: *const pkv_cache, out: *mut bool) -> pkv_status;
    pub fn pkv_cache_num_sequences(cache: *const pkv_cache, out: *mut usize) -> pkv_status;
    pub fn pkv_cache_stats_get(cache: *const pkv_cache, out: *mut pkv_cache_stats) -> pkv_status;
    pub fn pkv_cache_display(
        cache: *const pkv_cache,
        out: *mut c_char,
        capacity: usize,
        required: *mut usize,
    ) -> pkv_status;
    pub fn pkv_cache_validate_unsafe(cache: *const pkv_cache) -> pkv_status;

    pub fn pkv_pool_create(
        num_blocks: usize,
        magazine_size: u32,
        out: *mut *mut pkv_pool,
    ) -> pkv_status;
    pub fn pkv_pool_destroy(pool: *mut pkv_pool) -> pkv_status;
    pub fn pkv_pool_capacity(pool: *const pkv_pool, out: *mut usize) -> pkv_status;
    pub fn pkv_pool_free_count(pool: *const pkv_pool, out: *mut usize) -> pkv_status;
    pub fn pkv_pool_used_count(pool: *const pkv_pool, out: *mut usize) -> pkv_status;
    pub fn pkv_pool_acquire(pool: *mut pkv_pool, block: *mut u32) -> pkv_status;
    pub fn pkv_pool_acquire_n(pool: *mut pkv_pool, k: usize, out: *mut u32) -> pkv_status;
    pub fn pkv_pool_retain(pool: *mut pkv_pool, block: u32) -> pkv_status;
    pub fn pkv_pool_retain_n(pool: *mut pkv_pool, blocks: *const u32, n: usize) -> pkv_status;
    pub fn pkv_pool_release(pool: *mut pkv_pool, block: u32, freed: *mut bool) -> pkv_status;
    pub fn pkv_pool_release_n(
        pool: *mut pkv_pool,
        blocks: *const u32,
        n: usize,
        freed: *mut usize,
    ) -> pkv_status;
    pub fn pkv_pool_ref_count(pool: *const pkv_pool, block: u32, out: *mut u32) -> pkv_status;
    pub fn pkv_pool_total_acquired(pool: *const pkv_pool, out: *mut u64) -> pkv_status;
    pub fn pkv_pool_total_released(pool: *const pkv_pool, out: *mut u64) -> pkv_status;
    pub fn pkv_pool_validate_unsafe(pool: *const pkv_pool) -> pkv_status;
}
