//! A caching allocator: freed blocks go to a free list keyed by their
//! (rounded) size and are handed out again, so a training loop whose steps
//! allocate the same sizes calls `cuMemAlloc` only in its first step.

use std::collections::HashMap;

use cust::sys;

/// Per-device allocation state (behind the context's mutex).
#[derive(Default)]
pub(crate) struct Allocator {
    free: HashMap<usize, Vec<sys::CUdeviceptr>>,
    /// Bytes in blocks handed out.
    pub(crate) in_use: usize,
    /// Bytes in blocks on the free lists.
    pub(crate) cached: usize,
    /// Calls to cuMemAlloc so far.
    pub(crate) mallocs: u64,
}

/// Rounds a request up to its size class: 512 B steps up to 1 MiB, then
/// 1 MiB steps (at most 1/1024 extra above 1 GiB, a few % in between).
/// `None` when the rounded size overflows (no device has that much).
pub(crate) fn round(bytes: usize) -> Option<usize> {
    const SMALL: usize = 512;
    const BIG: usize = 1 << 20;
    if bytes <= BIG {
        Some(bytes.div_ceil(SMALL).max(1) * SMALL)
    } else {
        bytes.div_ceil(BIG).checked_mul(BIG)
    }
}

impl Allocator {
    /// A block of `bytes` (already rounded), from the cache or the driver.
    /// The caller has bound the context. Out of memory is an `Err` naming
    /// the sizes, after the cache has been returned to the driver and the
    /// request retried once.
    pub(crate) fn alloc(
        &mut self,
        bytes: usize,
        ordinal: usize,
    ) -> Result<sys::CUdeviceptr, String> {
        if let Some(p) = self.free.get_mut(&bytes).and_then(|v| v.pop()) {
            self.cached -= bytes;
            self.in_use += bytes;
            return Ok(p);
        }
        let mut p: sys::CUdeviceptr = 0;
        // SAFETY: cuMemAlloc writes a device pointer into `p`.
        let mut r = unsafe { sys::cuMemAlloc_v2(&mut p, bytes) };
        if r == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            self.release_cache();
            // SAFETY: as above.
            r = unsafe { sys::cuMemAlloc_v2(&mut p, bytes) };
        }
        if r != sys::CUresult::CUDA_SUCCESS {
            let (mut free, mut total) = (0usize, 0usize);
            // SAFETY: writes two sizes.
            unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) };
            return Err(format!(
                "CUDA out of memory on cuda:{ordinal}: tried to allocate {bytes} bytes \
                 ({:.1} MiB); {:.1} MiB in use by deriv tensors, {:.1} MiB free of {:.1} MiB \
                 ({r:?}); use a smaller batch, or free tensors you no longer need",
                bytes as f64 / 1048576.0,
                self.in_use as f64 / 1048576.0,
                free as f64 / 1048576.0,
                total as f64 / 1048576.0,
            ));
        }
        self.mallocs += 1;
        self.in_use += bytes;
        Ok(p)
    }

    /// Puts a block back on its free list.
    pub(crate) fn free(&mut self, ptr: sys::CUdeviceptr, bytes: usize) {
        self.in_use -= bytes;
        self.cached += bytes;
        self.free.entry(bytes).or_default().push(ptr);
    }

    /// Returns every cached block to the driver (the caller has bound the context).
    pub(crate) fn release_cache(&mut self) {
        for (_, v) in self.free.drain() {
            for p in v {
                // SAFETY: `p` came from cuMemAlloc and is not in use.
                unsafe { sys::cuMemFree_v2(p) };
            }
        }
        self.cached = 0;
    }
}
