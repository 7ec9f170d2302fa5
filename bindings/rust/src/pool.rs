//! `BlockPool`: the fixed pool of reference-counted blocks (the C++ BlockPool), on its own.
use std::ptr::NonNull;

use crate::error::{check, last_message, must, PagedKvResult};
use crate::ffi;
use crate::types::BlockId;

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
