//! pkv: a thread-safe paged KV-cache block manager (PagedAttention), with the seed's API.
//!
//! This crate wraps libpkv's C ABI (`include/pkv/pkv.h`). Its names are the seed's
//! (`../shared/seed/cache.rs`), so code written against the seed compiles with few changes; the
//! differences are what thread safety needs:
//!
//! * every method takes `&self`, and `PagedKvCache: Send + Sync`: share one cache between threads
//!   with `&cache` in `std::thread::scope` or an `Arc` (the C++ contract: every call is
//!   thread-safe and linearizable; see `include/pkv/paged_kv_cache.hpp`);
//! * `get_sequence` and `stats` return snapshots (owned values), not references;
//! * `append` returns `Option<CopyOp>`: the copy-on-write copy the caller must perform before
//!   writing (the seed's copy-on-write existed only in name);
//! * bad input the seed accepted is rejected: zero sizes make `new` panic (`try_new` returns the
//!   error), `PagedKvError::InvalidArgument` is new;
//! * `last_access` is a logical clock (`u64`), not an `Instant`.
//!
//! ```
//! use pkv::{PagedKvCache, SeqId};
//! let cache = PagedKvCache::new(1024, 16, 32, 128);
//! cache.allocate(SeqId(1), 40).unwrap();
//! cache.fork(SeqId(1), SeqId(2)).unwrap();
//! let copy = cache.append(SeqId(2), 1).unwrap().expect("the shared last block is copied");
//! println!("copy {} -> {}\n{}", copy.src, copy.dst, cache);
//! ```
use std::ffi::CStr;
use std::fmt;
use std::ptr::NonNull;

mod ffi;

/// Physical block index, printed `B<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockId(pub u32);

/// Sequence (request) id, printed `S<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeqId(pub u64);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B{}", self.0)
    }
}
impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}", self.0)
    }
}

/// How the cache picks a whole sequence to evict (the seed's enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EvictionStrategy {
    #[default]
    LRU,
    LFU,
    LongestFirst,
    /// Lowest priority is evicted first (`set_priority`); `levels` is informational.
    Priority {
        levels: u32,
    },
    /// `apply_streaming_llm` drops tokens; whole-sequence eviction uses LRU.
    StreamingLLM {
        sink_tokens: usize,
        window_tokens: usize,
    },
}

impl fmt::Display for EvictionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvictionStrategy::LRU => write!(f, "LRU"),
            EvictionStrategy::LFU => write!(f, "LFU"),
            EvictionStrategy::LongestFirst => write!(f, "LongestFirst"),
            EvictionStrategy::Priority { levels } => write!(f, "Priority({levels})"),
            EvictionStrategy::StreamingLLM {
                sink_tokens,
                window_tokens,
            } => {
                write!(
                    f,
                    "StreamingLLM(sink={sink_tokens}, window={window_tokens})"
                )
            }
        }
    }
}

/// The seed's errors, with its messages; `InvalidArgument` is new (input the seed accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagedKvError {
    OutOfMemory { requested: usize, available: usize },
    SequenceNotFound(SeqId),
    BlockNotFound(BlockId),
    InvalidOperation(String),
    InvalidArgument(String),
}

impl fmt::Display for PagedKvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagedKvError::OutOfMemory {
                requested,
                available,
            } => {
                write!(
                    f,
                    "Out of memory: requested {requested} blocks, {available} available"
                )
            }
            PagedKvError::SequenceNotFound(s) => write!(f, "Sequence not found: {s}"),
            PagedKvError::BlockNotFound(b) => write!(f, "Block not found: {b}"),
            PagedKvError::InvalidOperation(m) => write!(f, "Invalid operation: {m}"),
            PagedKvError::InvalidArgument(m) => write!(f, "Invalid argument: {m}"),
        }
    }
}

impl std::error::Error for PagedKvError {}

pub type PagedKvResult<T> = Result<T, PagedKvError>;

/// The kind of a `PagedKvError`, as one batch item reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    OutOfMemory,
    SequenceNotFound,
    BlockNotFound,
    InvalidOperation,
    InvalidArgument,
}

/// Copy the KV data of block `src` into block `dst` before writing (copy-on-write after fork).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyOp {
    pub src: BlockId,
    pub dst: BlockId,
}

/// Tokens `[first_token, first_token + length)` of the kept tokens sit in slots
/// `[slot, slot + length)` of the block table (slot s is offset s % block_size of block s / block_size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenRun {
    pub first_token: u64,
    pub slot: u64,
    pub length: u64,
}

/// A snapshot of one sequence (later calls do not change it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SequenceInfo {
    pub seq_id: SeqId,
    pub num_tokens: usize,
    pub block_ids: Vec<BlockId>,
    /// Logical clock: larger is more recent (exact order).
    pub last_access: u64,
    pub access_count: u64,
    pub priority: u32,
    pub token_runs: Vec<TokenRun>,
}

impl SequenceInfo {
    pub fn num_blocks(&self) -> usize {
        self.block_ids.len()
    }
}

/// The seed's counters (a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub total_allocations: u64,
    pub total_frees: u64,
    pub total_evictions: u64,
    pub total_forks: u64,
    pub peak_blocks_used: u64,
}

/// What one `append_batch` did: every item appended except those in `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    pub items: usize,
    /// (item, copy) in item order: perform these before the step's writes.
    pub copies: Vec<(usize, CopyOp)>,
    /// (item, kind) in item order; `first_error` is the first one in full.
    pub errors: Vec<(usize, ErrorKind)>,
    pub first_error: Option<PagedKvError>,
}

impl BatchOutcome {
    pub fn all_appended(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Options of `PagedKvCache::with_options` (the C++ `PagedKvCache::Options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Blocks per thread magazine (at most 64; 0 turns magazines off). Default 32.
    pub magazine_size: u32,
    /// Keep copy-on-write sources until `copy_done`. Default false.
    pub hold_copy_sources: bool,
    /// Thread-affine placement (0 = off, at most 63). Default 0.
    pub affinity_shift: u32,
}

impl Default for CacheOptions {
    fn default() -> Self {
        let mut o = ffi::pkv_cache_options::default();
        // SAFETY: `o` is a valid, writable pkv_cache_options.
        unsafe { ffi::pkv_cache_options_init(&mut o) };
        CacheOptions {
            magazine_size: o.magazine_size,
            hold_copy_sources: o.hold_copy_sources,
            affinity_shift: o.affinity_shift,
        }
    }
}

// ---- status -> error ------------------------------------------------------------------------

fn last_message() -> String {
    // SAFETY: pkv_last_error_message never returns NULL; the text is NUL-terminated and stays
    // valid until the next failing pkv call on this thread (we copy it at once).
    unsafe { CStr::from_ptr(ffi::pkv_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

fn parse_oom(msg: &str) -> Option<(usize, usize)> {
    // "Out of memory: requested {r} blocks, {a} available"
    let rest = msg.strip_prefix("Out of memory: requested ")?;
    let (r, rest) = rest.split_once(" blocks, ")?;
    let a = rest.strip_suffix(" available")?;
    Some((r.parse().ok()?, a.parse().ok()?))
}

/// The error of a failed call, from its status and this thread's last error message. The C++
/// messages are the seed's texts, so the variants' fields are read back from them.
fn error_of(status: ffi::pkv_status) -> PagedKvError {
    let msg = last_message();
    let strip = |prefix: &str| msg.strip_prefix(prefix).unwrap_or(&msg).to_string();
    match status {
        ffi::PKV_OUT_OF_MEMORY => {
            let (requested, available) = parse_oom(&msg).unwrap_or((0, 0));
            PagedKvError::OutOfMemory {
                requested,
                available,
            }
        }
        ffi::PKV_SEQUENCE_NOT_FOUND => match msg
            .strip_prefix("Sequence not found: S")
            .and_then(|n| n.parse().ok())
        {
            Some(n) => PagedKvError::SequenceNotFound(SeqId(n)),
            None => PagedKvError::InvalidOperation(msg),
        },
        ffi::PKV_BLOCK_NOT_FOUND => match msg
            .strip_prefix("Block not found: B")
            .and_then(|n| n.parse().ok())
        {
            Some(n) => PagedKvError::BlockNotFound(BlockId(n)),
            None => PagedKvError::InvalidOperation(msg),
        },
        ffi::PKV_INVALID_OPERATION => PagedKvError::InvalidOperation(strip("Invalid operation: ")),
        ffi::PKV_INVALID_ARGUMENT => PagedKvError::InvalidArgument(strip("Invalid argument: ")),
        // Host allocation failure and internal errors are not outcomes of the API: as Rust's
        // own allocation failures, they stop the program.
        ffi::PKV_HOST_OUT_OF_MEMORY => panic!("pkv: host out of memory ({msg})"),
        ffi::PKV_INTERNAL_ERROR => panic!("pkv: internal error ({msg})"),
        _ => panic!("pkv: {} ({msg})", status_name(status)),
    }
}

fn kind_of(status: ffi::pkv_status) -> ErrorKind {
    match status {
        ffi::PKV_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
        ffi::PKV_SEQUENCE_NOT_FOUND => ErrorKind::SequenceNotFound,
        ffi::PKV_BLOCK_NOT_FOUND => ErrorKind::BlockNotFound,
        ffi::PKV_INVALID_OPERATION => ErrorKind::InvalidOperation,
        ffi::PKV_INVALID_ARGUMENT => ErrorKind::InvalidArgument,
        _ => panic!("pkv: unexpected item status {}", status_name(status)),
    }
}

fn status_name(status: ffi::pkv_status) -> String {
    // SAFETY: pkv_status_name returns a static NUL-terminated string for any value.
    unsafe { CStr::from_ptr(ffi::pkv_status_name(status)) }
        .to_string_lossy()
        .into_owned()
}

fn check(status: ffi::pkv_status) -> PagedKvResult<()> {
    if status == ffi::PKV_OK {
        Ok(())
    } else {
        Err(error_of(status))
    }
}

/// A call that cannot fail on a live handle with valid pointers (figures): a failure is a bug.
fn must(status: ffi::pkv_status) {
    if status != ffi::PKV_OK {
        panic!("pkv: {} ({})", status_name(status), last_message());
    }
}

/// Reads a variable-length result: `call(buf, capacity, &mut required)` per the C contract,
/// retried while the result grows between the size query and the call.
fn read_vec<T: Default + Clone>(
    mut call: impl FnMut(*mut T, usize, &mut usize) -> ffi::pkv_status,
) -> PagedKvResult<Vec<T>> {
    let mut required = 0usize;
    check(call(std::ptr::null_mut(), 0, &mut required))?;
    loop {
        let mut buf = vec![T::default(); required.max(1)];
        let cap = buf.len();
        match call(buf.as_mut_ptr(), cap, &mut required) {
            ffi::PKV_OK => {
                buf.truncate(required);
                return Ok(buf);
            }
            ffi::PKV_BUFFER_TOO_SMALL => continue,
            s => return Err(error_of(s)),
        }
    }
}

fn strategy_to_c(s: &EvictionStrategy) -> ffi::pkv_eviction_strategy {
    let mut c = ffi::pkv_eviction_strategy::default();
    match *s {
        EvictionStrategy::LRU => c.kind = ffi::PKV_STRATEGY_LRU,
        EvictionStrategy::LFU => c.kind = ffi::PKV_STRATEGY_LFU,
        EvictionStrategy::LongestFirst => c.kind = ffi::PKV_STRATEGY_LONGEST_FIRST,
        EvictionStrategy::Priority { levels } => {
            c.kind = ffi::PKV_STRATEGY_PRIORITY;
            c.levels = levels;
        }
        EvictionStrategy::StreamingLLM {
            sink_tokens,
            window_tokens,
        } => {
            c.kind = ffi::PKV_STRATEGY_STREAMING_LLM;
            c.sink_tokens = sink_tokens;
            c.window_tokens = window_tokens;
        }
    }
    c
}

fn strategy_from_c(c: &ffi::pkv_eviction_strategy) -> EvictionStrategy {
    match c.kind {
        ffi::PKV_STRATEGY_LFU => EvictionStrategy::LFU,
        ffi::PKV_STRATEGY_LONGEST_FIRST => EvictionStrategy::LongestFirst,
        ffi::PKV_STRATEGY_PRIORITY => EvictionStrategy::Priority { levels: c.levels },
        ffi::PKV_STRATEGY_STREAMING_LLM => EvictionStrategy::StreamingLLM {
            sink_tokens: c.sink_tokens,
            window_tokens: c.window_tokens,
        },
        _ => EvictionStrategy::LRU,
    }
}

fn copy_from_c(c: ffi::pkv_copy_op) -> Option<CopyOp> {
    (c.src != ffi::PKV_NO_BLOCK).then_some(CopyOp {
        src: BlockId(c.src),
        dst: BlockId(c.dst),
    })
}

// ---- the cache ------------------------------------------------------------------------------

/// A paged KV cache shared by many threads: every method takes `&self`.
pub struct PagedKvCache {
    raw: NonNull<ffi::pkv_cache>,
}

// SAFETY: libpkv's PagedKvCache is thread-safe: every function of the C ABI except destroy may be
// called from any thread at once on one handle (include/pkv/pkv.h, "Thread safety"), and destroy
// runs only in Drop, which has the cache exclusively.
unsafe impl Send for PagedKvCache {}
unsafe impl Sync for PagedKvCache {}

macro_rules! figure {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $cfn:ident) => {
        $(#[$doc])*
        pub fn $name(&self) -> $ty {
            let mut v = <$ty>::default();
            // SAFETY: live handle, `v` writable.
            must(unsafe { ffi::$cfn(self.raw.as_ptr(), &mut v) });
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

    fn p(&self) -> *mut ffi::pkv_cache {
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

    /// One decode step: `append(seqs[i], num_new_tokens)` for each item, in order.
    pub fn append_batch(&self, seqs: &[SeqId], num_new_tokens: usize) -> BatchOutcome {
        self.batch(seqs, None, num_new_tokens)
            .expect("append_batch with one count cannot fail")
    }

    /// The same with one token count per item; `InvalidArgument` if the lengths differ.
    pub fn append_batch_counts(
        &self,
        seqs: &[SeqId],
        num_new_tokens: &[usize],
    ) -> PagedKvResult<BatchOutcome> {
        self.batch(seqs, Some(num_new_tokens), 0)
    }

    fn batch(
        &self,
        seqs: &[SeqId],
        counts: Option<&[usize]>,
        uniform: usize,
    ) -> PagedKvResult<BatchOutcome> {
        if let Some(c) = counts {
            if c.len() != seqs.len() {
                return Err(PagedKvError::InvalidArgument(format!(
                    "append_batch: {} sequences but {} token counts",
                    seqs.len(),
                    c.len()
                )));
            }
        }
        let n = seqs.len();
        // SeqId is a plain u64 newtype, but its layout is not #[repr(transparent)]: copy.
        let ids: Vec<u64> = seqs.iter().map(|s| s.0).collect();
        let mut copies = vec![ffi::pkv_item_copy::default(); n];
        let mut errors = vec![ffi::pkv_item_error::default(); n];
        let (mut nc, mut ne) = (0usize, 0usize);
        // SAFETY: live handle; ids / counts hold n entries, copies / errors room for n.
        let status = unsafe {
            ffi::pkv_cache_append_batch(
                self.p(),
                ids.as_ptr(),
                counts.map_or(std::ptr::null(), |c| c.as_ptr()),
                uniform,
                n,
                copies.as_mut_ptr(),
                &mut nc,
                errors.as_mut_ptr(),
                &mut ne,
            )
        };
        check(status)?;
        let first_error = (ne > 0).then(|| error_of(errors[0].status));
        Ok(BatchOutcome {
            items: n,
            copies: copies[..nc]
                .iter()
                .map(|c| {
                    (
                        c.item,
                        CopyOp {
                            src: BlockId(c.copy.src),
                            dst: BlockId(c.copy.dst),
                        },
                    )
                })
                .collect(),
            errors: errors[..ne]
                .iter()
                .map(|e| (e.item, kind_of(e.status)))
                .collect(),
            first_error,
        })
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

// ---- the block pool -------------------------------------------------------------------------

/// A fixed pool of blocks with atomic reference counts (the C++ BlockPool); Send + Sync.
pub struct BlockPool {
    raw: NonNull<ffi::pkv_pool>,
}

// SAFETY: as PagedKvCache: every pool function but destroy is thread-safe (pkv.h).
unsafe impl Send for BlockPool {}
unsafe impl Sync for BlockPool {}

impl BlockPool {
    /// `num_blocks` in 1..2^32-2, `magazine_size` <= 64 (0: no per-thread magazines).
    pub fn new(num_blocks: usize, magazine_size: u32) -> PagedKvResult<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` writable.
        check(unsafe { ffi::pkv_pool_create(num_blocks, magazine_size, &mut raw) })?;
        Ok(BlockPool {
            raw: NonNull::new(raw).expect("pkv_pool_create returned NULL"),
        })
    }
    fn p(&self) -> *mut ffi::pkv_pool {
        self.raw.as_ptr()
    }
    fn figure<T: Default>(
        &self,
        f: unsafe extern "C" fn(*const ffi::pkv_pool, *mut T) -> i32,
    ) -> T {
        let mut v = T::default();
        // SAFETY: live handle; `v` writable.
        must(unsafe { f(self.p(), &mut v) });
        v
    }
    pub fn capacity(&self) -> usize {
        self.figure(ffi::pkv_pool_capacity)
    }
    pub fn free_count(&self) -> usize {
        self.figure(ffi::pkv_pool_free_count)
    }
    pub fn used_count(&self) -> usize {
        self.figure(ffi::pkv_pool_used_count)
    }
    pub fn total_acquired(&self) -> u64 {
        self.figure(ffi::pkv_pool_total_acquired)
    }
    pub fn total_released(&self) -> u64 {
        self.figure(ffi::pkv_pool_total_released)
    }
    pub fn acquire(&self) -> PagedKvResult<BlockId> {
        let mut b = 0u32;
        // SAFETY: live handle; `b` writable.
        check(unsafe { ffi::pkv_pool_acquire(self.p(), &mut b) })?;
        Ok(BlockId(b))
    }
    /// Exactly k blocks, or none (OutOfMemory).
    pub fn acquire_n(&self, k: usize) -> PagedKvResult<Vec<BlockId>> {
        let mut out = vec![0u32; k];
        // SAFETY: out holds k entries.
        check(unsafe { ffi::pkv_pool_acquire_n(self.p(), k, out.as_mut_ptr()) })?;
        Ok(out.into_iter().map(BlockId).collect())
    }
    pub fn retain(&self, block: BlockId) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_pool_retain(self.p(), block.0) })
    }
    /// Returns true when the block went back to the free list.
    pub fn release(&self, block: BlockId) -> PagedKvResult<bool> {
        let mut freed = false;
        // SAFETY: live handle; `freed` writable.
        check(unsafe { ffi::pkv_pool_release(self.p(), block.0, &mut freed) })?;
        Ok(freed)
    }
    pub fn retain_n(&self, blocks: &[BlockId]) -> PagedKvResult<()> {
        let ids: Vec<u32> = blocks.iter().map(|b| b.0).collect();
        // SAFETY: ids holds ids.len() entries.
        check(unsafe { ffi::pkv_pool_retain_n(self.p(), ids.as_ptr(), ids.len()) })
    }
    pub fn release_n(&self, blocks: &[BlockId]) -> PagedKvResult<usize> {
        let ids: Vec<u32> = blocks.iter().map(|b| b.0).collect();
        let mut freed = 0;
        // SAFETY: ids holds ids.len() entries; `freed` writable.
        check(unsafe { ffi::pkv_pool_release_n(self.p(), ids.as_ptr(), ids.len(), &mut freed) })?;
        Ok(freed)
    }
    pub fn ref_count(&self, block: BlockId) -> u32 {
        let mut v = 0;
        // SAFETY: live handle; `v` writable.
        must(unsafe { ffi::pkv_pool_ref_count(self.p(), block.0, &mut v) });
        v
    }
    pub fn validate_unsafe(&self) -> Result<(), String> {
        // SAFETY: live handle.
        match unsafe { ffi::pkv_pool_validate_unsafe(self.p()) } {
            ffi::PKV_OK => Ok(()),
            _ => Err(last_message()),
        }
    }
}

impl Drop for BlockPool {
    fn drop(&mut self) {
        // SAFETY: live handle, exclusively held in Drop.
        must(unsafe { ffi::pkv_pool_destroy(self.p()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_message_parses_back() {
        assert_eq!(
            parse_oom("Out of memory: requested 63 blocks, 8 available"),
            Some((63, 8))
        );
        assert_eq!(
            parse_oom("Out of memory: requested x blocks, 8 available"),
            None
        );
        assert_eq!(parse_oom("Sequence not found: S1"), None);
    }

    #[test]
    fn cache_and_pool_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PagedKvCache>();
        assert_send_sync::<BlockPool>();
    }
}
