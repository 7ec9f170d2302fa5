//! The calls over many items: `append_batch` (one count or one count per item), `fork_many`,
//! `free_many`, and the outcomes they return (`BatchOutcome`, `FreeManyOutcome`).
use crate::cache::PagedKvCache;
use crate::error::{check, error_of, kind_of, must, ErrorKind, PagedKvError, PagedKvResult};
use crate::ffi;
use crate::types::{BlockId, CopyOp, SeqId};

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

/// One append-batch call of the C ABI over `ids` (one entry per item): `call(copies, &mut nc,
/// errors, &mut ne)` gets room for one copy and one error per item, as `pkv_cache_append_batch`
/// and `pkv_cache_append_batch_tokens` take them; a failed call is its error, else the outcome.
pub(crate) fn run_batch(
    ids: &[u64],
    call: impl FnOnce(
        *mut ffi::pkv_item_copy,
        &mut usize,
        *mut ffi::pkv_item_error,
        &mut usize,
    ) -> ffi::pkv_status,
) -> PagedKvResult<BatchOutcome> {
    let n = ids.len();
    let mut copies = vec![ffi::pkv_item_copy::default(); n];
    let mut errors = vec![ffi::pkv_item_error::default(); n];
    let (mut nc, mut ne) = (0usize, 0usize);
    check(call(
        copies.as_mut_ptr(),
        &mut nc,
        errors.as_mut_ptr(),
        &mut ne,
    ))?;
    Ok(outcome_of(n, &copies[..nc], &errors[..ne]))
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

impl PagedKvCache {
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
        // SeqId is a plain u64 newtype, but its layout is not #[repr(transparent)]: copy.
        let ids: Vec<u64> = seqs.iter().map(|s| s.0).collect();
        run_batch(&ids, |copies, nc, errors, ne| {
            // SAFETY: live handle; ids / counts hold ids.len() entries, copies / errors room for
            // as many.
            unsafe {
                ffi::pkv_cache_append_batch(
                    self.p(),
                    ids.as_ptr(),
                    counts.map_or(std::ptr::null(), |c| c.as_ptr()),
                    uniform,
                    ids.len(),
                    copies,
                    nc,
                    errors,
                    ne,
                )
            }
        })
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
}
