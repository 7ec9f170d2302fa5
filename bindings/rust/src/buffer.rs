//! The C ABI's protocol for a variable-length result: the caller's buffer and capacity, and the
//! size the result needs (`required`), queried first and retried while the result grows.
use crate::error::{check, error_of, PagedKvResult};
use crate::ffi;

/// Reads a variable-length result: `call(buf, capacity, &mut required)` per the C contract,
/// retried while the result grows between the size query and the call.
pub(crate) fn read_vec<T: Default + Clone>(
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
