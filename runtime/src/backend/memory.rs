//! Fallible allocation of tensor buffers: a request the allocator refuses is
//! an `Error::OutOfMemory` naming the op, the shape and the bytes, where
//! `Vec::with_capacity` and `vec![..]` would abort the whole process.
//!
//! Linux may over-commit memory, so a request larger than what is free can
//! still succeed here and fail later when its pages are touched (the OOM
//! killer, as for any program); requests past `isize::MAX` bytes, and those
//! the allocator refuses outright, always come back as errors.

use crate::error::{Error, OrPanic, Result};

/// The bytes of `n` elements of `T`, exactly (u128 holds any such product).
fn bytes_of<T>(n: usize) -> u128 {
    n as u128 * std::mem::size_of::<T>() as u128
}

/// `bytes` in words: `400000000000 bytes (372.5 GiB)`.
fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"];
    let mut v = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({v:.1} {unit})")
    }
}

/// The error of a buffer of `bytes` for a tensor of `shape` that `op` could
/// not allocate.
pub(crate) fn out_of_memory(op: &'static str, shape: &[usize], bytes: u128) -> Error {
    let why = if bytes > isize::MAX as u128 {
        "more than any allocation can hold (isize::MAX bytes)"
    } else {
        "the allocator refused it"
    };
    Error::OutOfMemory {
        op,
        msg: format!(
            "cannot allocate {} for a tensor of shape {shape:?}: {why}; use smaller sizes \
             (a smaller batch), or free tensors you no longer need",
            human_bytes(bytes)
        ),
    }
}

/// An empty vector with room for exactly `n` elements: the buffer of a
/// tensor of `shape` that `op` makes (`shape` is for the message).
pub(crate) fn try_alloc<T>(op: &'static str, shape: &[usize], n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| out_of_memory(op, shape, bytes_of::<T>(n)))?;
    Ok(v)
}

/// [`try_alloc`] for kernels that panic: the message names the op, the
/// shape and the bytes.
#[track_caller]
pub(crate) fn alloc<T>(op: &'static str, shape: &[usize], n: usize) -> Vec<T> {
    try_alloc(op, shape, n).or_panic()
}

/// Element types whose all-zero bit pattern is their zero (`0.0`, `0`,
/// `false`), so a zeroed allocation is a vector of zeros.
///
/// # Safety
/// Implementors must be valid, and zero, for all-zero bits.
pub(crate) unsafe trait ZeroBits: Copy {}
// SAFETY: IEEE +0.0, integer 0 and `false` are all-zero bits.
unsafe impl ZeroBits for f32 {}
// SAFETY: as above.
unsafe impl ZeroBits for f64 {}
// SAFETY: as above.
unsafe impl ZeroBits for i64 {}
// SAFETY: as above.
unsafe impl ZeroBits for bool {}

/// `n` zeros, from a zeroed allocation (as `vec![0.0; n]` does: the OS hands
/// out zeroed pages, so large buffers are not written twice), fallibly.
pub(crate) fn try_zeros<T: ZeroBits>(
    op: &'static str,
    shape: &[usize],
    n: usize,
) -> Result<Vec<T>> {
    let layout = match std::alloc::Layout::array::<T>(n) {
        Ok(l) => l,
        Err(_) => return Err(out_of_memory(op, shape, bytes_of::<T>(n))),
    };
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(out_of_memory(op, shape, bytes_of::<T>(n)));
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `n`
    // elements of `T` (what Vec deallocates with), and all-zero bits are
    // valid values of `T` (ZeroBits), so all `n` are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_requests_are_errors_naming_op_shape_and_bytes() {
        // 2^62 f32 elements are 2^64 bytes: past isize::MAX, refused up front.
        let n = 1usize << 62;
        let e = try_alloc::<f32>("randn", &[1 << 31, 1 << 31], n).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::OutOfMemory { op: "randn", .. }), "{e:?}");
        assert!(msg.starts_with("randn: cannot allocate 18446744073709551616 bytes (16.0 EiB)"));
        assert!(msg.contains("shape [2147483648, 2147483648]"), "{msg}");
        let e = try_zeros::<f64>("zeros", &[n], n).unwrap_err();
        assert!(e.to_string().contains("36893488147419103232 bytes"), "{e}");
        // usize::MAX bools: one byte each, still past isize::MAX.
        let e = try_zeros::<bool>("zeros", &[usize::MAX], usize::MAX).unwrap_err();
        assert!(e.to_string().contains("isize::MAX bytes"), "{e}");
    }

    #[test]
    fn zeroed_buffers_hold_zeros_of_each_type() {
        assert_eq!(try_zeros::<f32>("z", &[3], 3).unwrap(), vec![0.0; 3]);
        assert_eq!(try_zeros::<f64>("z", &[2], 2).unwrap(), vec![0.0; 2]);
        assert_eq!(try_zeros::<i64>("z", &[4], 4).unwrap(), vec![0; 4]);
        assert_eq!(try_zeros::<bool>("z", &[2], 2).unwrap(), vec![false; 2]);
        assert!(try_zeros::<f32>("z", &[0], 0).unwrap().is_empty());
        let v = try_alloc::<f32>("a", &[5], 5).unwrap();
        assert!(v.is_empty() && v.capacity() == 5);
        assert_eq!(human_bytes(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(
            human_bytes(400_000_000_000),
            "400000000000 bytes (372.5 GiB)"
        );
    }
}
