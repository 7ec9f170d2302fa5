//! Errors: `PagedKvError` (the seed's errors and messages), `ErrorKind` (a batch item's error),
//! and the mapping of a C ABI status and this thread's last error message to them.
use std::ffi::CStr;
use std::fmt;

use crate::ffi;
use crate::types::{BlockId, SeqId};

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

pub(crate) fn last_message() -> String {
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
pub(crate) fn error_of(status: ffi::pkv_status) -> PagedKvError {
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

pub(crate) fn kind_of(status: ffi::pkv_status) -> ErrorKind {
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

pub(crate) fn check(status: ffi::pkv_status) -> PagedKvResult<()> {
    if status == ffi::PKV_OK {
        Ok(())
    } else {
        Err(error_of(status))
    }
}

/// A call that cannot fail on a live handle with valid pointers (figures): a failure is a bug.
pub(crate) fn must(status: ffi::pkv_status) {
    if status != ffi::PKV_OK {
        panic!("pkv: {} ({})", status_name(status), last_message());
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
}
