//! The fuzz targets' shared parts: the checks (`checks.rs`, also replayed by
//! tests/fuzz_regressions.rs) and an allocator that measures what parsing
//! an input allocates, so an input that makes a parser allocate more than
//! its size justifies (a header claiming 2^40 elements) is a finding too.

pub mod checks;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting: bytes live now, the most live since the
/// last reset, and the largest single request since then.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize, request: usize) {
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
    LARGEST.fetch_max(request, Relaxed);
}

// SAFETY: every call forwards to `System` with the caller's arguments, so
// `System`'s guarantees carry over; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size(), layout.size());
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size(), layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grew(new_size - layout.size(), new_size);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What an input of `len` bytes may make a parser allocate: a value or a
/// shape entry of one or two bytes becomes an 8-byte element or size (a
/// `Vec` may hold twice that while it grows), a one-character CSV header
/// name a `String`, plus fixed buffers.
pub fn allowance(len: usize) -> (usize, usize) {
    let largest = 64 * len + (1 << 20);
    (largest, 2 * largest)
}

/// Runs `f` on `data` and panics when one allocation, or the bytes live at
/// once, went over [`allowance`].
pub fn within_allowance(data: &[u8], f: impl FnOnce(&[u8])) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    LARGEST.store(0, Relaxed);
    f(data);
    let (largest, peak) = (
        LARGEST.load(Relaxed),
        PEAK.load(Relaxed).saturating_sub(base),
    );
    let (max_largest, max_peak) = allowance(data.len());
    assert!(
        largest <= max_largest && peak <= max_peak,
        "an input of {} bytes made one allocation of {largest} bytes and {peak} bytes live at \
         once (allowed: {max_largest} and {max_peak})",
        data.len()
    );
}
