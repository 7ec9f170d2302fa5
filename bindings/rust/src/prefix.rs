//! Automatic prefix caching: its options, counters and block hashes (`HashAlgorithm`,
//! `PrefixCachingOptions`, `PrefixCacheStats`, `BlockHash`, `block_hashes`) and the cache's
//! token-id calls (`allocate_tokens`, `append_tokens`, `append_batch_tokens`, `commit`,
//! `match_prefix`), its figures, statistics and reset, and `block_ref_count`.
use std::fmt;

use crate::batch::{run_batch, BatchOutcome};
use crate::buffer::read_vec;
use crate::cache::PagedKvCache;
use crate::error::{check, must, PagedKvError, PagedKvResult};
use crate::ffi;
use crate::types::{copy_from_c, BlockId, CacheOptions, CopyOp, SeqId};

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
    pub(crate) fn to_c(self) -> ffi::pkv_hash_algorithm {
        match self {
            HashAlgorithm::Sha256 => ffi::PKV_HASH_SHA256,
            HashAlgorithm::Xxh3_128 => ffi::PKV_HASH_XXH3_128,
        }
    }
    pub(crate) fn from_c(a: ffi::pkv_hash_algorithm) -> Self {
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

impl PagedKvCache {
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
        let ids: Vec<u64> = seqs.iter().map(|s| s.0).collect();
        run_batch(&ids, |copies, nc, errors, ne| {
            // SAFETY: live handle; ids / tokens hold ids.len() entries, copies / errors room for
            // as many.
            unsafe {
                ffi::pkv_cache_append_batch_tokens(
                    self.p(),
                    ids.as_ptr(),
                    tokens.as_ptr(),
                    ids.len(),
                    copies,
                    nc,
                    errors,
                    ne,
                )
            }
        })
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
}
