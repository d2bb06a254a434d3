//! The CPU backend's helper threads: a small persistent pool (one thread per
//! core but the caller's) that runs the parts of a split kernel. Handing a
//! part over writes a pointer into a fixed mailbox and unparks a spinning or
//! parked helper, so it allocates nothing and costs a few microseconds, less
//! than a rayon spawn and its wake-up; the buffer-reusing training step's
//! steady state (no heap allocation) depends on it.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// How long a helper spins for the next part before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// One helper thread's mailbox.
struct Helper {
    state: AtomicU8,
    /// The job (a lifetime-erased `&dyn Fn(usize)`), written before `state`
    /// becomes PENDING and read after the helper claims it.
    job: UnsafeCell<Option<*const (dyn Fn(usize) + Sync)>>,
    /// The payload of a part that panicked here, re-raised by the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    thread: OnceLock<Thread>,
}

// SAFETY: `job` is written only by the thread holding `Pool::busy` while the
// helper is IDLE, and read only by the helper after it claimed PENDING
// (Release/Acquire on `state` order the two).
unsafe impl Sync for Helper {}
// SAFETY: as above; the pointer is only dereferenced under that protocol.
unsafe impl Send for Helper {}

struct Pool {
    helpers: Vec<Helper>,
    busy: Mutex<()>,
}

thread_local! {
    /// Set on helper threads: a part that splits again runs its parts inline.
    static IS_HELPER: Cell<bool> = const { Cell::new(false) };
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let n = rayon::current_num_threads().saturating_sub(1).min(15);
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            helpers: (0..n)
                .map(|_| Helper {
                    state: AtomicU8::new(IDLE),
                    job: UnsafeCell::new(None),
                    panic: Mutex::new(None),
                    thread: OnceLock::new(),
                })
                .collect(),
            busy: Mutex::new(()),
        }));
        for (i, h) in pool.helpers.iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("deriv-into-{i}"))
                .spawn(move || helper_loop(h));
            match spawned {
                Ok(handle) => {
                    let _ = h.thread.set(handle.thread().clone());
                }
                // No thread: the caller runs every part (see `par_run`).
                Err(_) => h.state.store(DONE + 1, Ordering::Release),
            }
        }
        pool
    })
}

fn helper_loop(h: &'static Helper) {
    IS_HELPER.with(|f| f.set(true));
    loop {
        // Wait for work: spin a little, then yield the core (a loaded
        // machine needs it more than this thread), then park.
        let start = Instant::now();
        let mut spins = 0u32;
        while h.state.load(Ordering::Acquire) != PENDING {
            spins += 1;
            if spins < 256 {
                std::hint::spin_loop();
            } else if start.elapsed() < SPIN {
                std::thread::yield_now();
            } else {
                std::thread::park();
            }
        }
        if h.state
            .compare_exchange(PENDING, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the caller wrote the job before PENDING and waits for
            // DONE before its borrow ends.
            let job = unsafe { (*h.job.get()).expect("a pending part has a job") };
            // SAFETY: see above: the closure outlives this call.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(0) })) {
                *h.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
            }
            h.state.store(DONE, Ordering::Release);
        }
    }
}

/// The number of parts [`par_run`] runs at once (1 without helpers).
pub(crate) fn par_width() -> usize {
    pool().helpers.len() + 1
}

/// Runs `f(i)` for every `i` in `0..parts`, on the calling thread and the
/// helpers: each participant claims the next unclaimed part until none is
/// left, so a helper that is slow to wake (or descheduled on a busy machine)
/// costs at most the part it is in. Allocates nothing once the pool exists.
/// From a helper thread, or while another thread uses the pool, every part
/// runs on the calling thread.
pub(crate) fn par_run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    let inline = parts <= 1 || pool.helpers.is_empty() || IS_HELPER.with(|h| h.get());
    let guard = if inline {
        None
    } else {
        match pool.busy.try_lock() {
            Ok(guard) => Some(guard),
            // A part panicked while this was held; `Join` left every helper
            // IDLE on the way out, so the pool is sound (a poisoned lock
            // must not send every later split inline).
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    };
    let Some(_guard) = guard else {
        (0..parts).for_each(f);
        return;
    };
    let next = AtomicUsize::new(0);
    let claim = |_: usize| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= parts {
            break;
        }
        f(i);
    };
    let claim: &(dyn Fn(usize) + Sync) = &claim;
    // SAFETY: the lifetime is erased only while the helpers may call
    // `claim`: `Join` withdraws the jobs no helper has started and waits for
    // the started ones before this function returns or unwinds.
    let erased: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(claim) };
    let used = &pool.helpers[..pool.helpers.len().min(parts - 1)];
    let mut handed = 0;
    for h in used {
        if h.state.load(Ordering::Acquire) != IDLE {
            break; // a helper that could not start
        }
        // SAFETY: the helper is IDLE and we hold `busy`: nobody reads `job`.
        unsafe { *h.job.get() = Some(erased) };
        h.state.store(PENDING, Ordering::Release);
        if let Some(t) = h.thread.get() {
            t.unpark();
        }
        handed += 1;
    }
    let join = Join(&used[..handed]);
    claim(0);
    drop(join);
    // Take every payload (none may linger into the next call), raise the first.
    let mut first = None;
    for h in &used[..handed] {
        let payload = h.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        first = first.or(payload);
    }
    if let Some(payload) = first {
        resume_unwind(payload);
    }
}

/// Withdraws the parts no helper has started and waits for the started ones,
/// also when the caller's own part unwinds; leaves every helper IDLE.
struct Join<'a>(&'a [Helper]);

impl Drop for Join<'_> {
    fn drop(&mut self) {
        for h in self.0 {
            let _ = h
                .state
                .compare_exchange(PENDING, DONE, Ordering::Acquire, Ordering::Relaxed);
            let mut spins = 0u32;
            while h.state.load(Ordering::Acquire) == RUNNING {
                if spins < 1 << 12 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            // SAFETY: the helper is done with the job.
            unsafe { *h.job.get() = None };
            if std::thread::panicking() {
                // The caller's own part is unwinding: a helper's payload
                // would otherwise surface in the next, unrelated call.
                h.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
            h.state.store(IDLE, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicBool;

    /// Part 1 marks that it runs; part 0 waits for that (up to a second, in
    /// case no helper takes part 1), so the two overlap when both run.
    fn meet(p: usize, started: &AtomicBool) {
        if p == 1 {
            started.store(true, Ordering::Release);
        } else {
            let t = Instant::now();
            while !started.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(1) {
                std::hint::spin_loop();
            }
        }
    }

    #[test]
    fn par_run_covers_every_part_once_and_propagates_panics() {
        use std::sync::atomic::AtomicU64;
        for parts in [1, 2, 3, 5] {
            let hits: Vec<AtomicU64> = (0..parts).map(|_| AtomicU64::new(0)).collect();
            for _ in 0..50 {
                par_run(parts, &|p| {
                    hits[p].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 50),
                "{parts} parts"
            );
        }
        for bad in [0, 1] {
            let r = catch_unwind(|| {
                par_run(2, &|p| {
                    if p == bad {
                        panic!("boom");
                    }
                })
            });
            assert!(r.is_err(), "part {bad} panicked");
        }
        // Both parts panic: one payload is raised, and none lingers into the
        // next call (which would panic from a part that did not).
        for _ in 0..5 {
            // Both parts run at once (`meet`), then both panic.
            let started = AtomicBool::new(false);
            let r = catch_unwind(|| {
                par_run(2, &|p| {
                    meet(p, &started);
                    panic!("both");
                })
            });
            assert!(r.is_err());
            par_run(2, &|_| {});
        }
        // The pool still works afterwards, in parallel: the panics poisoned
        // its lock, which must not send every later split inline. Part 0
        // waits for part 1, so both run at once, on two threads. (Another
        // test's split may hold the pool for a moment, which also runs this
        // inline: a few tries.)
        let on_two_threads = || {
            let threads = Mutex::new(Vec::new());
            let started = AtomicBool::new(false);
            par_run(2, &|p| {
                meet(p, &started);
                threads.lock().unwrap().push(std::thread::current().id());
            });
            let threads = threads.into_inner().unwrap();
            assert_eq!(threads.len(), 2);
            threads[0] != threads[1]
        };
        if par_width() > 1 {
            assert!(
                (0..5).any(|_| on_two_threads()),
                "both parts ran on one thread"
            );
        }
    }
}
