//! The crate's plain values: ids, the eviction strategy, copy operations, sequence snapshots, the
//! cache's counters and options, and their conversions to and from the C ABI's structs.
use std::fmt;

use crate::ffi;
use crate::prefix::{HashAlgorithm, PrefixCachingOptions};

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

pub(crate) fn strategy_to_c(s: &EvictionStrategy) -> ffi::pkv_eviction_strategy {
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

pub(crate) fn strategy_from_c(c: &ffi::pkv_eviction_strategy) -> EvictionStrategy {
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

pub(crate) fn copy_from_c(c: ffi::pkv_copy_op) -> Option<CopyOp> {
    (c.src != ffi::PKV_NO_BLOCK).then_some(CopyOp {
        src: BlockId(c.src),
        dst: BlockId(c.dst),
    })
}
