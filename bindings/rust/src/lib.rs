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

// The crate's parts, private modules whose public items are re-exported below at the crate root
// (the public paths are pkv::PagedKvCache, pkv::SeqId, ...): ffi (the C ABI, declared by hand),
// error (errors and the status mapping), buffer (variable-length results), types (ids, strategies,
// snapshots, options), cache (PagedKvCache), batch (the many-item calls and their outcomes),
// prefix (prefix caching), pool (BlockPool).
mod batch;
mod buffer;
// `figure!` (a lock-free getter of the cache), used by prefix.rs too.
#[macro_use]
mod cache;
mod error;
mod ffi;
mod pool;
mod prefix;
mod types;

pub use batch::{BatchOutcome, FreeManyOutcome};
pub use cache::PagedKvCache;
pub use error::{ErrorKind, PagedKvError, PagedKvResult};
pub use pool::BlockPool;
pub use prefix::{block_hashes, BlockHash, HashAlgorithm, PrefixCacheStats, PrefixCachingOptions};
pub use types::{
    BlockId, CacheOptions, CacheStats, CopyOp, EvictionStrategy, SeqId, SequenceInfo, TokenRun,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_and_pool_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PagedKvCache>();
        assert_send_sync::<BlockPool>();
    }
}
