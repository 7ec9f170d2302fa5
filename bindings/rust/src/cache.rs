//! `PagedKvCache`: construction, configuration, figures, the calls on one sequence, eviction,
//! truncation, the structural check and Display. The many-item calls are in batch.rs, the
//! token-id calls of prefix caching in prefix.rs (further `impl PagedKvCache` blocks).
use std::fmt;
use std::ptr::NonNull;

use crate::buffer::read_vec;
use crate::error::{check, error_of, last_message, must, PagedKvResult};
use crate::ffi;
use crate::prefix::PrefixCachingOptions;
use crate::types::{
    copy_from_c, strategy_from_c, strategy_to_c, BlockId, CacheOptions, CacheStats, CopyOp,
    EvictionStrategy, SeqId, SequenceInfo, TokenRun,
};

/// A paged KV cache shared by many threads: every method takes `&self`.
pub struct PagedKvCache {
    raw: NonNull<ffi::pkv_cache>,
}

// SAFETY: libpkv's PagedKvCache is thread-safe: every function of the C ABI except destroy may be
// called from any thread at once on one handle (include/pkv/pkv.h, "Thread safety"), and destroy
// runs only in Drop, which has the cache exclusively.
unsafe impl Send for PagedKvCache {}
unsafe impl Sync for PagedKvCache {}

// A lock-free figure of the cache as a getter; prefix.rs uses it too (lib.rs: #[macro_use]).
macro_rules! figure {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $cfn:ident) => {
        $(#[$doc])*
        pub fn $name(&self) -> $ty {
            let mut v = <$ty>::default();
            // SAFETY: live handle, `v` writable.
            $crate::error::must(unsafe { $crate::ffi::$cfn(self.p(), &mut v) });
            v
        }
    };
}

impl PagedKvCache {
    /// The seed's constructor. Panics on a configuration pkv rejects (a zero size, more than
    /// 2^32 - 2 blocks, a memory size that overflows); `try_new` returns the error instead.
    pub fn new(num_blocks: usize, block_size: usize, num_heads: usize, head_dim: usize) -> Self {
        Self::try_new(num_blocks, block_size, num_heads, head_dim)
            .unwrap_or_else(|e| panic!("PagedKvCache::new: {e}"))
    }

    pub fn try_new(
        num_blocks: usize,
        block_size: usize,
        num_heads: usize,
        head_dim: usize,
    ) -> PagedKvResult<Self> {
        Self::with_options(
            num_blocks,
            block_size,
            num_heads,
            head_dim,
            CacheOptions::default(),
        )
    }

    pub fn with_options(
        num_blocks: usize,
        block_size: usize,
        num_heads: usize,
        head_dim: usize,
        options: CacheOptions,
    ) -> PagedKvResult<Self> {
        let o = ffi::pkv_cache_options {
            magazine_size: options.magazine_size,
            hold_copy_sources: options.hold_copy_sources,
            affinity_shift: options.affinity_shift,
            prefix_caching: options.prefix.enabled,
            prefix_hash: options.prefix.hash.to_c(),
            prefix_verify_tokens: options.prefix.verify_tokens,
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: `o` and `raw` are valid for the call.
        check(unsafe {
            ffi::pkv_cache_create(num_blocks, block_size, num_heads, head_dim, &o, &mut raw)
        })?;
        Ok(PagedKvCache {
            raw: NonNull::new(raw).expect("pkv_cache_create returned NULL"),
        })
    }

    /// A cache with these prefix-caching options (the others default).
    pub fn with_prefix_caching(
        num_blocks: usize,
        block_size: usize,
        num_heads: usize,
        head_dim: usize,
        prefix: PrefixCachingOptions,
    ) -> PagedKvResult<Self> {
        let o = CacheOptions {
            prefix,
            ..CacheOptions::default()
        };
        Self::with_options(num_blocks, block_size, num_heads, head_dim, o)
    }

    /// Builder form of `set_eviction_strategy`. Panics if pkv rejects the strategy
    /// (`Priority { levels: 0 }`, `StreamingLLM` with sink + window == 0).
    pub fn with_eviction_strategy(self, strategy: EvictionStrategy) -> Self {
        self.set_eviction_strategy(strategy)
            .unwrap_or_else(|e| panic!("with_eviction_strategy: {e}"));
        self
    }

    /// Builder form of `set_eviction_threshold` (clamped to 0..1). Panics on NaN.
    pub fn with_eviction_threshold(self, threshold: f64) -> Self {
        self.set_eviction_threshold(threshold)
            .unwrap_or_else(|e| panic!("with_eviction_threshold: {e}"));
        self
    }

    pub(crate) fn p(&self) -> *mut ffi::pkv_cache {
        self.raw.as_ptr()
    }

    // ---- configuration ----
    pub fn set_eviction_strategy(&self, strategy: EvictionStrategy) -> PagedKvResult<()> {
        let c = strategy_to_c(&strategy);
        // SAFETY: live handle; `c` valid for the call.
        check(unsafe { ffi::pkv_cache_set_eviction_strategy(self.p(), &c) })
    }
    pub fn eviction_strategy(&self) -> EvictionStrategy {
        let mut c = ffi::pkv_eviction_strategy::default();
        // SAFETY: live handle; `c` writable.
        must(unsafe { ffi::pkv_cache_eviction_strategy(self.p(), &mut c) });
        strategy_from_c(&c)
    }
    pub fn set_eviction_threshold(&self, threshold: f64) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_set_eviction_threshold(self.p(), threshold) })
    }
    figure!(eviction_threshold, f64, pkv_cache_eviction_threshold);
    pub fn set_priority(&self, seq_id: SeqId, priority: u32) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_set_priority(self.p(), seq_id.0, priority) })
    }
    pub fn pin(&self, seq_id: SeqId) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_pin(self.p(), seq_id.0) })
    }
    pub fn unpin(&self, seq_id: SeqId) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_unpin(self.p(), seq_id.0) })
    }
    pub fn copy_done(&self, seq_id: SeqId) -> PagedKvResult<usize> {
        let mut n = 0;
        // SAFETY: live handle; `n` writable.
        check(unsafe { ffi::pkv_cache_copy_done(self.p(), seq_id.0, &mut n) })?;
        Ok(n)
    }

    // ---- figures (lock-free) ----
    figure!(block_size, usize, pkv_cache_block_size);
    figure!(total_blocks, usize, pkv_cache_total_blocks);
    figure!(free_block_count, usize, pkv_cache_free_block_count);
    figure!(used_block_count, usize, pkv_cache_used_block_count);
    figure!(
        /// Used blocks / total blocks (0.0-1.0).
        utilization, f64, pkv_cache_utilization
    );
    figure!(block_memory_bytes, usize, pkv_cache_block_memory_bytes);
    figure!(total_memory_bytes, usize, pkv_cache_total_memory_bytes);
    figure!(used_memory_bytes, usize, pkv_cache_used_memory_bytes);
    figure!(
        /// utilization() >= eviction_threshold().
        needs_eviction, bool, pkv_cache_needs_eviction
    );
    figure!(num_sequences, usize, pkv_cache_num_sequences);

    pub fn stats(&self) -> CacheStats {
        let mut s = ffi::pkv_cache_stats::default();
        // SAFETY: live handle; `s` writable.
        must(unsafe { ffi::pkv_cache_stats_get(self.p(), &mut s) });
        CacheStats {
            total_allocations: s.total_allocations,
            total_frees: s.total_frees,
            total_evictions: s.total_evictions,
            total_forks: s.total_forks,
            peak_blocks_used: s.peak_blocks_used,
        }
    }

    // ---- sequences ----
    pub fn allocate(&self, seq_id: SeqId, num_tokens: usize) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_allocate(self.p(), seq_id.0, num_tokens) })
    }

    /// Adds tokens; returns the copy-on-write copy to perform first, if any.
    pub fn append(&self, seq_id: SeqId, num_new_tokens: usize) -> PagedKvResult<Option<CopyOp>> {
        let mut op = ffi::pkv_copy_op::default();
        // SAFETY: live handle; `op` writable.
        check(unsafe { ffi::pkv_cache_append(self.p(), seq_id.0, num_new_tokens, &mut op) })?;
        Ok(copy_from_c(op))
    }

    pub fn free(&self, seq_id: SeqId) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_free(self.p(), seq_id.0) })
    }

    /// Copy-on-write fork: `dst_seq` shares every block of `src_seq`.
    pub fn fork(&self, src_seq: SeqId, dst_seq: SeqId) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_fork(self.p(), src_seq.0, dst_seq.0) })
    }

    /// A snapshot of the sequence, or None. The scalars, the block table and the token runs are
    /// read by three calls: under concurrent appends to this sequence they may differ by those
    /// appends (a sequence a single thread owns reads consistently).
    pub fn get_sequence(&self, seq_id: SeqId) -> Option<SequenceInfo> {
        let mut info = ffi::pkv_sequence_info::default();
        // SAFETY: live handle; `info` writable.
        let s = unsafe { ffi::pkv_cache_get_sequence(self.p(), seq_id.0, &mut info) };
        if s == ffi::PKV_SEQUENCE_NOT_FOUND {
            return None;
        }
        must(s);
        let blocks = read_vec(|buf: *mut u32, cap, req| {
            // SAFETY: buf holds cap entries (or is NULL with cap 0).
            unsafe { ffi::pkv_cache_block_table(self.p(), seq_id.0, buf, cap, req) }
        })
        .ok()?;
        let runs = read_vec(|buf: *mut ffi::pkv_token_run, cap, req| {
            // SAFETY: as above.
            unsafe { ffi::pkv_cache_token_runs(self.p(), seq_id.0, buf, cap, req) }
        })
        .ok()?;
        Some(SequenceInfo {
            seq_id: SeqId(info.seq_id),
            num_tokens: info.num_tokens,
            block_ids: blocks.into_iter().map(BlockId).collect(),
            last_access: info.last_access,
            access_count: info.access_count,
            priority: info.priority,
            token_runs: runs
                .into_iter()
                .map(|r| TokenRun {
                    first_token: r.first_token,
                    slot: r.slot,
                    length: r.length,
                })
                .collect(),
        })
    }

    /// The block table alone (one call).
    pub fn block_table(&self, seq_id: SeqId) -> PagedKvResult<Vec<BlockId>> {
        let ids = read_vec(|buf: *mut u32, cap, req| {
            // SAFETY: buf holds cap entries (or is NULL with cap 0).
            unsafe { ffi::pkv_cache_block_table(self.p(), seq_id.0, buf, cap, req) }
        })?;
        Ok(ids.into_iter().map(BlockId).collect())
    }

    pub fn sequence_ids(&self) -> Vec<SeqId> {
        read_vec(|buf: *mut u64, cap, req| {
            // SAFETY: buf holds cap entries (or is NULL with cap 0).
            unsafe { ffi::pkv_cache_sequence_ids(self.p(), buf, cap, req) }
        })
        .expect("sequence_ids cannot fail")
        .into_iter()
        .map(SeqId)
        .collect()
    }

    // ---- eviction ----
    pub fn select_eviction_target(&self) -> Option<SeqId> {
        let (mut seq, mut found) = (0u64, false);
        // SAFETY: live handle; outputs writable.
        must(unsafe { ffi::pkv_cache_select_eviction_target(self.p(), &mut seq, &mut found) });
        found.then_some(SeqId(seq))
    }

    pub fn evict(&self) -> PagedKvResult<SeqId> {
        let mut v = 0u64;
        // SAFETY: live handle; `v` writable.
        check(unsafe { ffi::pkv_cache_evict(self.p(), &mut v) })?;
        Ok(SeqId(v))
    }

    /// Evicts until utilization <= target_util or no sequence is left (target in 0..1).
    pub fn evict_to_threshold(&self, target_util: f64) -> PagedKvResult<Vec<SeqId>> {
        let mut evicted = Vec::new();
        let mut upper = 0usize;
        // SAFETY: live handle; NULL buffer with capacity 0 is the size query.
        check(unsafe {
            ffi::pkv_cache_evict_to_threshold(
                self.p(),
                target_util,
                std::ptr::null_mut(),
                0,
                &mut upper,
            )
        })?;
        loop {
            let mut buf = vec![0u64; upper.max(16)];
            let mut n = 0usize;
            // SAFETY: buf holds buf.len() entries.
            let s = unsafe {
                ffi::pkv_cache_evict_to_threshold(
                    self.p(),
                    target_util,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut n,
                )
            };
            evicted.extend(buf[..n].iter().copied().map(SeqId));
            match s {
                ffi::PKV_OK => return Ok(evicted),
                ffi::PKV_BUFFER_TOO_SMALL => upper = buf.len() * 2,
                s => return Err(error_of(s)),
            }
        }
    }

    /// Keeps the first `sink_tokens` and the last `window_tokens` tokens; returns how many were
    /// dropped.
    pub fn apply_streaming_llm(
        &self,
        seq_id: SeqId,
        sink_tokens: usize,
        window_tokens: usize,
    ) -> PagedKvResult<usize> {
        let mut dropped = 0;
        // SAFETY: live handle; `dropped` writable.
        check(unsafe {
            ffi::pkv_cache_apply_streaming_llm(
                self.p(),
                seq_id.0,
                sink_tokens,
                window_tokens,
                &mut dropped,
            )
        })?;
        Ok(dropped)
    }

    /// Drops the last `num_tokens` tokens (rejected drafts); returns how many blocks left the
    /// table. `InvalidArgument` when `num_tokens` exceeds the sequence's length.
    pub fn truncate(&self, seq_id: SeqId, num_tokens: usize) -> PagedKvResult<usize> {
        let mut released = 0;
        // SAFETY: live handle; `released` writable.
        check(unsafe { ffi::pkv_cache_truncate(self.p(), seq_id.0, num_tokens, &mut released) })?;
        Ok(released)
    }

    /// Full structural check; NOT thread-safe: call only while no other call is in flight.
    pub fn validate_unsafe(&self) -> Result<(), String> {
        // SAFETY: live handle.
        match unsafe { ffi::pkv_cache_validate_unsafe(self.p()) } {
            ffi::PKV_OK => Ok(()),
            _ => Err(last_message()),
        }
    }
}

impl Drop for PagedKvCache {
    fn drop(&mut self) {
        // SAFETY: the handle is live and, in Drop, no other call on it is in flight.
        must(unsafe { ffi::pkv_cache_destroy(self.p()) });
    }
}

impl fmt::Display for PagedKvCache {
    /// The seed's Display form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = read_vec(|buf: *mut u8, cap, req| {
            // SAFETY: buf holds cap bytes (or is NULL with cap 0).
            unsafe { ffi::pkv_cache_display(self.p(), buf.cast(), cap, req) }
        })
        .map_err(|_| fmt::Error)?;
        // (CStr::from_bytes_until_nul needs Rust 1.69; Debian 12's rustc is 1.63.)
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        f.write_str(&String::from_utf8_lossy(&bytes[..end]))
    }
}

impl fmt::Debug for PagedKvCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
