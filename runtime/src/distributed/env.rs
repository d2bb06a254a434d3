//! The process group: MPI's start and end, the communicator deriv uses, the
//! watchdog that ends a job stuck in a collective, and the panic hook that
//! ends it when a rank panics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use crate::error::{Error, Result};

/// What [`init_with`] sets up.
///
/// ```
/// use deriv_runtime::distributed::InitOptions;
/// use std::time::Duration;
/// let opts = InitOptions::new().timeout(Duration::from_secs(600)).abort_on_panic(true);
/// assert_eq!(opts.timeout_secs(), 600.0);
/// ```
#[derive(Clone, Debug)]
pub struct InitOptions {
    timeout: Duration,
    abort_on_panic: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            timeout: Duration::from_secs(30 * 60),
            abort_on_panic: true,
        }
    }
}

impl InitOptions {
    /// A 30-minute collective timeout (PyTorch's default), abort on panic.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long any collective may wait for the other ranks before this
    /// rank aborts the job with a message naming the collective (default 30
    /// minutes, as `init_process_group(timeout=...)`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The timeout in seconds.
    pub fn timeout_secs(&self) -> f64 {
        self.timeout.as_secs_f64()
    }

    /// Whether a panic on any rank aborts the whole job (default true; see
    /// [`set_abort_on_panic`]).
    pub fn abort_on_panic(mut self, on: bool) -> Self {
        self.abort_on_panic = on;
        self
    }
}

/// The running process group: deriv's own duplicate of `MPI_COMM_WORLD`
/// (so its collectives never mix with a program's own MPI traffic), this
/// rank and the size.
pub(crate) struct Group {
    pub(crate) comm: SimpleCommunicator,
    pub(crate) rank: usize,
    pub(crate) size: usize,
}

// SAFETY: `init` only starts a group when MPI provides MPI_THREAD_MULTIPLE,
// under which any thread may call MPI with any handle. What MPI still asks
// of threads — no two collectives on one communicator at once — is kept by
// `issue_lock`, which every collective holds while it is started.
unsafe impl Send for Group {}
// SAFETY: as for Send: MPI_THREAD_MULTIPLE, and collectives serialised by `issue_lock`.
unsafe impl Sync for Group {}

static GROUP: OnceLock<Group> = OnceLock::new();
/// The universe deriv initialised (finalised at exit); `None` when the
/// program initialised MPI itself or after `finalize`.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);
static FINALIZED: AtomicBool = AtomicBool::new(false);
static ABORT_ON_PANIC: AtomicBool = AtomicBool::new(true);
static INIT_LOCK: Mutex<()> = Mutex::new(());
static ISSUE: Mutex<()> = Mutex::new(());

/// The running group, `None` before `init` and after `finalize`.
pub(crate) fn group() -> Option<&'static Group> {
    if FINALIZED.load(Ordering::Acquire) {
        return None;
    }
    GROUP.get()
}

/// The running group, or an error that says how to start one.
pub(crate) fn require(op: &str) -> Result<&'static Group> {
    group().ok_or_else(|| {
        Error::Distributed(if FINALIZED.load(Ordering::Acquire) {
            format!("{op}: the process group was finalized; collectives are over for this process")
        } else {
            format!(
                "{op}: no process group: call deriv::distributed::init() first (in every \
                 process started by mpirun)"
            )
        })
    })
}

/// Held while a collective is started (and, for a blocking one, until it
/// ends), so threads never issue two collectives on one communicator at once.
pub(crate) fn issue_lock() -> MutexGuard<'static, ()> {
    ISSUE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the process group from the environment `mpirun` (or `srun`) set
/// up (`torch.distributed.init_process_group`), with the default
/// [`InitOptions`]: every process of the job must call it. Calling it again
/// is a no-op.
///
/// A program started without `mpirun` becomes a group of one (MPI's
/// singleton start). After `init`, the group ends by itself when the
/// program exits (`MPI_Finalize` at exit), a panic on any rank aborts the
/// whole job with the panic's message ([`set_abort_on_panic`]), and a
/// collective that waits longer than the timeout (30 minutes) aborts it
/// naming the collective — so a job never hangs silently on a rank that is
/// gone.
pub fn init() -> Result<()> {
    init_with(InitOptions::default())
}

/// [`init`] with options: the collective timeout and abort-on-panic.
pub fn init_with(options: InitOptions) -> Result<()> {
    let _once = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if FINALIZED.load(Ordering::Acquire) {
        return Err(Error::Distributed(
            "init: the process group was finalized; MPI cannot start twice in one process".into(),
        ));
    }
    if GROUP.get().is_some() {
        return Ok(());
    }
    let universe = if mpi::environment::is_initialized() {
        // The program started MPI itself: use it, and leave its end to the program.
        None
    } else {
        mpi::initialize_with_threading(Threading::Multiple).map(|(u, _)| u)
    };
    let provided = mpi::environment::threading_support();
    if provided < Threading::Multiple {
        return Err(Error::Distributed(format!(
            "init: the MPI library provides thread level {provided:?}; deriv needs \
             MPI_THREAD_MULTIPLE (Open MPI and MPICH builds provide it: check `ompi_info | grep \
             'Thread support'`)"
        )));
    }
    let world = SimpleCommunicator::world();
    let group = Group {
        comm: world.duplicate(),
        rank: world.rank() as usize,
        size: world.size() as usize,
    };
    if GROUP.set(group).is_err() {
        unreachable!("init runs once, under INIT_LOCK");
    }
    *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = universe;
    ABORT_ON_PANIC.store(options.abort_on_panic, Ordering::Release);
    install_panic_hook();
    start_watchdog(options.timeout);
    register_finalize_at_exit();
    Ok(())
}

/// Ends the process group now (`destroy_process_group`, `MPI_Finalize`);
/// collectives refuse afterwards, and MPI cannot start again. Optional:
/// [`init`] arranges for it to run when the program exits. Every rank must
/// call it, after its last collective.
pub fn finalize() {
    let _once = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if GROUP.get().is_none() || FINALIZED.swap(true, Ordering::AcqRel) {
        return;
    }
    // Dropping rsmpi's universe calls MPI_Finalize (when deriv started MPI).
    drop(UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// At exit: a rank leaving with an error status aborts the job (the others
/// may be waiting for it in a collective, and `MPI_Finalize` would wait for
/// them: a hang); a clean exit finalizes.
fn at_exit(status: i32) {
    if status != 0 && super::world_size() > 1 {
        abort(&format!(
            "this rank is exiting with status {status}; aborting the job so that the other \
             ranks do not wait for it"
        ));
    }
    finalize();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn register_finalize_at_exit() {
    extern "C" fn on_exit_callback(status: std::os::raw::c_int, _: *mut std::os::raw::c_void) {
        at_exit(status);
    }
    unsafe extern "C" {
        fn on_exit(
            callback: extern "C" fn(std::os::raw::c_int, *mut std::os::raw::c_void),
            arg: *mut std::os::raw::c_void,
        ) -> std::os::raw::c_int;
    }
    // SAFETY: glibc's `on_exit`, declared with its C signature; the callback
    // is a plain `extern "C" fn` that lives for the whole program and never
    // reads its (null) argument.
    let _ = unsafe { on_exit(on_exit_callback, std::ptr::null_mut()) };
}

/// Without glibc's `on_exit` the exit status is unknown: every exit finalizes.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn register_finalize_at_exit() {
    extern "C" fn atexit_callback() {
        at_exit(0);
    }
    extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
    }
    // SAFETY: the C library's `atexit`, declared with its C signature; the
    // callback is a plain `extern "C" fn` that lives for the whole program.
    let _ = unsafe { atexit(atexit_callback) };
}

/// Blocks until every rank has called it (`torch.distributed.barrier`).
pub fn barrier() -> Result<()> {
    let g = require("barrier")?;
    let _issue = issue_lock();
    watched("barrier", || g.comm.barrier());
    Ok(())
}

/// Prints `message` as this rank's and aborts every process of the job
/// (`MPI_Abort`); `mpirun` exits with an error. For a failure one rank
/// cannot recover from while the others may be waiting for it. Without a
/// process group, prints and exits the process with status 1.
pub fn abort(message: &str) -> ! {
    eprintln!("[rank {}] deriv.distributed: {message}", super::rank());
    if GROUP.get().is_some() && !FINALIZED.load(Ordering::Acquire) {
        SimpleCommunicator::world().abort(1)
    }
    std::process::exit(1)
}

/// Whether a panic on this rank aborts the whole job (default true after
/// [`init`]). The hook runs where the panic starts, before any unwinding,
/// so a panic that would later be caught aborts too; turn it off around
/// code that catches panics on purpose. With one rank it never aborts.
///
/// Why: a rank that panics and exits leaves the others blocked in their
/// next collective, waiting for it; aborting ends the job at once, with the
/// panic's message printed above Open MPI's report.
pub fn set_abort_on_panic(on: bool) {
    ABORT_ON_PANIC.store(on, Ordering::Release);
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if ABORT_ON_PANIC.load(Ordering::Acquire) && super::world_size() > 1 {
            abort(
                "this rank panicked (message above); aborting the job so that the other ranks \
                 do not wait for it in their next collective",
            );
        }
    }));
}

// ----- the watchdog: no collective waits forever.

/// Collectives in progress on this rank: an id, when it started, its name.
static IN_PROGRESS: Mutex<Vec<(u64, Instant, &'static str)>> = Mutex::new(Vec::new());
static NEXT_WATCH: AtomicU64 = AtomicU64::new(0);

/// Runs `f` (a collective, or the wait for one) under the watchdog.
pub(crate) fn watched<R>(what: &'static str, f: impl FnOnce() -> R) -> R {
    let id = NEXT_WATCH.fetch_add(1, Ordering::Relaxed);
    lock_in_progress().push((id, Instant::now(), what));
    struct Done(u64);
    impl Drop for Done {
        fn drop(&mut self) {
            lock_in_progress().retain(|(i, _, _)| *i != self.0);
        }
    }
    let _done = Done(id);
    f()
}

fn lock_in_progress() -> MutexGuard<'static, Vec<(u64, Instant, &'static str)>> {
    IN_PROGRESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A thread that aborts the job when a collective has waited longer than
/// `timeout`: the other ranks crashed, hung or never called it.
fn start_watchdog(timeout: Duration) {
    let tick = (timeout / 8).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let spawned = std::thread::Builder::new()
        .name("deriv-distributed-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(tick);
            if FINALIZED.load(Ordering::Acquire) {
                return;
            }
            let stuck = lock_in_progress()
                .iter()
                .find(|(_, start, _)| start.elapsed() > timeout)
                .map(|&(_, start, what)| (what, start.elapsed()));
            if let Some((what, waited)) = stuck {
                abort(&format!(
                    "{what} has waited {:.1} s for the other ranks (the timeout is {:.1} s): \
                     a rank has crashed, hung or skipped it; aborting the job",
                    waited.as_secs_f64(),
                    timeout.as_secs_f64()
                ));
            }
        });
    if let Err(e) = spawned {
        eprintln!(
            "deriv.distributed: could not start the collective watchdog ({e}); a stuck collective will not time out"
        );
    }
}
