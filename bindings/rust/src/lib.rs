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
    /// Automatic prefix caching (on by default; used by `allocate_tokens`).
    pub prefix: PrefixCachingOptions,
}

/// The digest naming a cached block (C++ `pkv::HashAlgorithm`, `pkv/block_hash.hpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashAlgorithm {
    /// SHA-256: all 32 bytes of a `BlockHash`.
    #[default]
    Sha256,
    /// XXH3_128 (seed 0), canonical byte order in bytes 0..16; bytes 16..32 are zero.
    Xxh3_128,
}

impl HashAlgorithm {
    fn to_c(self) -> ffi::pkv_hash_algorithm {
        match self {
            HashAlgorithm::Sha256 => ffi::PKV_HASH_SHA256,
            HashAlgorithm::Xxh3_128 => ffi::PKV_HASH_XXH3_128,
        }
    }
    fn from_c(a: ffi::pkv_hash_algorithm) -> Self {
        if a == ffi::PKV_HASH_XXH3_128 {
            HashAlgorithm::Xxh3_128
        } else {
            HashAlgorithm::Sha256
        }
    }
}

/// `CacheOptions::prefix` (C++ `PrefixCachingOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCachingOptions {
    /// Default true.
    pub enabled: bool,
    /// Default `Sha256`.
    pub hash: HashAlgorithm,
    /// Keep each cached block's token ids and compare them on a hit. Default false.
    pub verify_tokens: bool,
}

impl Default for PrefixCachingOptions {
    fn default() -> Self {
        CacheOptions::default().prefix
    }
}

/// The prefix cache's counters (a snapshot; C++ `PrefixCacheStats`, `pkv/prefix_types.hpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixCacheStats {
    /// `allocate_tokens` calls that succeeded.
    pub requests: u64,
    /// Prompt tokens of those calls.
    pub queries: u64,
    /// Leading prompt tokens those calls found cached.
    pub hits: u64,
    /// Blocks that became findable.
    pub published: u64,
    /// Findable blocks held by no sequence that were taken for other data.
    pub reclaimed: u64,
    /// Digest matches whose stored token ids differed (with `verify_tokens`).
    pub verify_failures: u64,
}

impl PrefixCacheStats {
    /// hits / queries (0 when queries == 0).
    pub fn hit_rate(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.hits as f64 / self.queries as f64
        }
    }
}

/// A block's chain hash (C++ `pkv::BlockHash`): 32 bytes, printed as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// 64 lowercase hex digits, byte 0 first (C++ `to_hex`).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The chain hashes of the `tokens.len() / block_size` full blocks of `tokens` under `salt`
/// (C++ `pkv::block_hashes`). `block_size == 0` is `InvalidArgument`.
pub fn block_hashes(
    tokens: &[u32],
    block_size: usize,
    salt: impl AsRef<[u8]>,
    algorithm: HashAlgorithm,
) -> PagedKvResult<Vec<BlockHash>> {
    let salt = salt.as_ref();
    let v = read_vec(|buf: *mut ffi::pkv_block_hash, cap, req| {
        // SAFETY: tokens / salt are valid for their lengths; buf holds cap entries (or is NULL
        // with cap 0).
        unsafe {
            ffi::pkv_block_hashes(
                tokens.as_ptr(),
                tokens.len(),
                block_size,
                salt.as_ptr().cast(),
                salt.len(),
                algorithm.to_c(),
                buf,
                cap,
                req,
            )
        }
    })?;
    Ok(v.into_iter().map(|h| BlockHash(h.bytes)).collect())
}

/// What one `free_many` did: every item freed except those in `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FreeManyOutcome {
    pub items: usize,
    /// (item, kind) in item order; `first_error` is the first one in full.
    pub errors: Vec<(usize, ErrorKind)>,
    pub first_error: Option<PagedKvError>,
}

impl FreeManyOutcome {
    pub fn all_freed(&self) -> bool {
        self.errors.is_empty()
    }
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
            prefix: PrefixCachingOptions {
                enabled: o.prefix_caching,
                hash: HashAlgorithm::from_c(o.prefix_hash),
                verify_tokens: o.prefix_verify_tokens,
            },
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

/// A batch's outcome from the C arrays. Call right after the batch: the first error's message is
/// this thread's last error message.
fn outcome_of(
    n: usize,
    copies: &[ffi::pkv_item_copy],
    errors: &[ffi::pkv_item_error],
) -> BatchOutcome {
    BatchOutcome {
        items: n,
        first_error: errors.first().map(|e| error_of(e.status)),
        copies: copies
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
        errors: errors.iter().map(|e| (e.item, kind_of(e.status))).collect(),
    }
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
        Ok(outcome_of(n, &copies[..nc], &errors[..ne]))
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

    /// `fork(src_seq, d)` for every `d` of `dst_seqs` in one step, all or nothing.
    pub fn fork_many(&self, src_seq: SeqId, dst_seqs: &[SeqId]) -> PagedKvResult<()> {
        let ids: Vec<u64> = dst_seqs.iter().map(|s| s.0).collect();
        // SAFETY: live handle; ids holds ids.len() entries.
        check(unsafe { ffi::pkv_cache_fork_many(self.p(), src_seq.0, ids.as_ptr(), ids.len()) })
    }

    /// `free(seqs[i])` for each item, in order; a failed item does not stop the others.
    pub fn free_many(&self, seqs: &[SeqId]) -> FreeManyOutcome {
        let ids: Vec<u64> = seqs.iter().map(|s| s.0).collect();
        let mut errors = vec![ffi::pkv_item_error::default(); ids.len()];
        let mut ne = 0usize;
        // SAFETY: live handle; ids holds n entries, errors room for n.
        must(unsafe {
            ffi::pkv_cache_free_many(
                self.p(),
                ids.as_ptr(),
                ids.len(),
                errors.as_mut_ptr(),
                &mut ne,
            )
        });
        FreeManyOutcome {
            items: ids.len(),
            first_error: (ne > 0).then(|| error_of(errors[0].status)),
            errors: errors[..ne]
                .iter()
                .map(|e| (e.item, kind_of(e.status)))
                .collect(),
        }
    }

    /// Drops the last `num_tokens` tokens (rejected drafts); returns how many blocks left the
    /// table. `InvalidArgument` when `num_tokens` exceeds the sequence's length.
    pub fn truncate(&self, seq_id: SeqId, num_tokens: usize) -> PagedKvResult<usize> {
        let mut released = 0;
        // SAFETY: live handle; `released` writable.
        check(unsafe { ffi::pkv_cache_truncate(self.p(), seq_id.0, num_tokens, &mut released) })?;
        Ok(released)
    }

    // ---- prefix caching ----

    /// Registers `seq_id` with the blocks of `prompt`, sharing its longest cached prefix under
    /// `salt`; returns how many leading tokens were found cached. An empty prompt is
    /// `InvalidArgument`.
    pub fn allocate_tokens(
        &self,
        seq_id: SeqId,
        prompt: &[u32],
        salt: impl AsRef<[u8]>,
    ) -> PagedKvResult<usize> {
        let salt = salt.as_ref();
        let mut cached = 0;
        // SAFETY: live handle; prompt / salt valid for their lengths; `cached` writable.
        check(unsafe {
            ffi::pkv_cache_allocate_tokens(
                self.p(),
                seq_id.0,
                prompt.as_ptr(),
                prompt.len(),
                salt.as_ptr().cast(),
                salt.len(),
                &mut cached,
            )
        })?;
        Ok(cached)
    }

    /// `append` that records the token ids (and first commits what the sequence held).
    pub fn append_tokens(&self, seq_id: SeqId, tokens: &[u32]) -> PagedKvResult<Option<CopyOp>> {
        let mut op = ffi::pkv_copy_op::default();
        // SAFETY: live handle; tokens valid for its length; `op` writable.
        check(unsafe {
            ffi::pkv_cache_append_tokens(self.p(), seq_id.0, tokens.as_ptr(), tokens.len(), &mut op)
        })?;
        Ok(copy_from_c(op))
    }

    /// One decode step with token ids: `append_tokens(seqs[i], &[tokens[i]])` for each item, in
    /// order. `InvalidArgument` if the lengths differ.
    pub fn append_batch_tokens(
        &self,
        seqs: &[SeqId],
        tokens: &[u32],
    ) -> PagedKvResult<BatchOutcome> {
        if tokens.len() != seqs.len() {
            return Err(PagedKvError::InvalidArgument(format!(
                "append_batch: {} sequences but {} tokens",
                seqs.len(),
                tokens.len()
            )));
        }
        let n = seqs.len();
        let ids: Vec<u64> = seqs.iter().map(|s| s.0).collect();
        let mut copies = vec![ffi::pkv_item_copy::default(); n];
        let mut errors = vec![ffi::pkv_item_error::default(); n];
        let (mut nc, mut ne) = (0usize, 0usize);
        // SAFETY: live handle; ids / tokens hold n entries, copies / errors room for n.
        check(unsafe {
            ffi::pkv_cache_append_batch_tokens(
                self.p(),
                ids.as_ptr(),
                tokens.as_ptr(),
                n,
                copies.as_mut_ptr(),
                &mut nc,
                errors.as_mut_ptr(),
                &mut ne,
            )
        })?;
        Ok(outcome_of(n, &copies[..nc], &errors[..ne]))
    }

    /// The KV of the first `num_tokens` tokens is written: their full blocks become findable.
    /// Returns how many blocks were newly published. `InvalidArgument` when `num_tokens` exceeds
    /// the sequence's length.
    pub fn commit(&self, seq_id: SeqId, num_tokens: usize) -> PagedKvResult<usize> {
        let mut published = 0;
        // SAFETY: live handle; `published` writable.
        check(unsafe { ffi::pkv_cache_commit(self.p(), seq_id.0, num_tokens, &mut published) })?;
        Ok(published)
    }

    /// How many leading tokens `allocate_tokens(.., tokens, salt)` would find cached now.
    pub fn match_prefix(&self, tokens: &[u32], salt: impl AsRef<[u8]>) -> usize {
        let salt = salt.as_ref();
        let mut n = 0;
        // SAFETY: live handle; tokens / salt valid for their lengths; `n` writable.
        must(unsafe {
            ffi::pkv_cache_match_prefix(
                self.p(),
                tokens.as_ptr(),
                tokens.len(),
                salt.as_ptr().cast(),
                salt.len(),
                &mut n,
            )
        });
        n
    }

    figure!(
        /// Findable blocks, held or not.
        cached_block_count, usize, pkv_cache_cached_block_count
    );
    figure!(
        /// Findable blocks held by no sequence (counted in `free_block_count`).
        reclaimable_block_count, usize, pkv_cache_reclaimable_block_count
    );

    pub fn prefix_stats(&self) -> PrefixCacheStats {
        let mut s = ffi::pkv_prefix_stats::default();
        // SAFETY: live handle; `s` writable.
        must(unsafe { ffi::pkv_cache_prefix_stats(self.p(), &mut s) });
        PrefixCacheStats {
            requests: s.requests,
            queries: s.queries,
            hits: s.hits,
            published: s.published,
            reclaimed: s.reclaimed,
            verify_failures: s.verify_failures,
        }
    }

    /// Forgets every hash; held blocks stay with their sequences.
    pub fn reset_prefix_cache(&self) -> PagedKvResult<()> {
        // SAFETY: live handle.
        check(unsafe { ffi::pkv_cache_reset_prefix_cache(self.p()) })
    }

    /// How many sequences hold `block` (0 for a free block or an id out of range).
    pub fn block_ref_count(&self, block: BlockId) -> usize {
        let mut n = 0;
        // SAFETY: live handle; `n` writable.
        must(unsafe { ffi::pkv_cache_block_ref_count(self.p(), block.0, &mut n) });
        n
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
