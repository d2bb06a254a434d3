//! Data-parallel training across processes and hosts on MPI
//! (`torch.distributed` and `DistributedDataParallel`).
//!
//! With the `mpi` cargo feature, a program started by `mpirun -np N` calls
//! [`init`] and gets N processes ("ranks") that can exchange tensors:
//! [`all_reduce`] (sum, average, product, min, max), [`broadcast`],
//! [`all_gather`], [`reduce_scatter`], [`barrier`], each blocking or
//! non-blocking (`*_async`, returning a [`Work`] to `wait()` on). On top of
//! them, [`DistributedDataParallel`] trains one model replica per rank on
//! different data and averages gradients during backward, and the
//! `Trainer`'s [`Strategy::Ddp`](crate::train::Strategy) does all of it for
//! a `TrainingModule`. docs/distributed.md has the design, the set-up
//! (Open MPI on Debian, hostfiles) and the measurements.
//!
//! Without the feature, only [`rank`] (0), [`world_size`] (1),
//! [`is_available`] (false) and [`is_initialized`] (false) are here, so
//! code that asks "am I rank 0?" builds either way.
//!
//! ```no_run
//! # #[cfg(feature = "mpi")] {
//! use deriv_runtime::distributed::{self, ReduceOp};
//! use deriv_runtime::Tensor;
//! distributed::init()?; // under `mpirun -np 2 ...`
//! let t = Tensor::full([3], distributed::rank() as f64 + 1.0);
//! distributed::all_reduce(&t, ReduceOp::Sum)?;
//! assert_eq!(t.to_vec::<f32>(), vec![3.0; 3]); // 1 + 2 on two ranks
//! # }
//! # Ok::<(), deriv_runtime::Error>(())
//! ```

// Without the `mpi` feature only rank/world_size exist here; the links above
// name the rest (docs.rs and `cargo doc --features mpi` resolve them).
#![cfg_attr(not(feature = "mpi"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "mpi")]
mod collectives;
#[cfg(feature = "mpi")]
mod ddp;
#[cfg(feature = "mpi")]
mod env;
#[cfg(feature = "mpi")]
mod reducer;
#[cfg(feature = "mpi")]
mod work;

#[cfg(feature = "mpi")]
pub use collectives::{
    all_gather, all_gather_async, all_reduce, all_reduce_async, broadcast, broadcast_async,
    empty_cache, reduce_scatter, reduce_scatter_async, ReduceOp,
};
#[cfg(feature = "mpi")]
pub use ddp::{DdpOptions, DistributedDataParallel};
#[cfg(feature = "mpi")]
pub use env::{abort, barrier, finalize, init, init_with, set_abort_on_panic, InitOptions};
#[cfg(feature = "mpi")]
pub(crate) use reducer::Reducer;
#[cfg(feature = "mpi")]
pub use work::Work;

use crate::error::Result;

/// Whether this build can run distributed (the `mpi` feature;
/// `torch.distributed.is_available()`).
pub fn is_available() -> bool {
    cfg!(feature = "mpi")
}

/// Whether [`init`] has run and [`finalize`] has not
/// (`torch.distributed.is_initialized()`).
pub fn is_initialized() -> bool {
    #[cfg(feature = "mpi")]
    {
        env::group().is_some()
    }
    #[cfg(not(feature = "mpi"))]
    {
        false
    }
}

/// This process's rank, `0..world_size()`; 0 when no process group is
/// running (a plain single-process run).
pub fn rank() -> usize {
    #[cfg(feature = "mpi")]
    {
        env::group().map_or(0, |g| g.rank)
    }
    #[cfg(not(feature = "mpi"))]
    {
        0
    }
}

/// The number of processes; 1 when no process group is running.
pub fn world_size() -> usize {
    #[cfg(feature = "mpi")]
    {
        env::group().map_or(1, |g| g.size)
    }
    #[cfg(not(feature = "mpi"))]
    {
        1
    }
}

// ----- small agreements the Trainer needs, identities on one process.

/// Sums `values` element-wise over all ranks, in place (a no-op on one process).
pub(crate) fn sum_f64s(values: &mut [f64]) {
    #[cfg(feature = "mpi")]
    if world_size() > 1 {
        collectives::all_reduce_f64s(values);
    }
    #[cfg(not(feature = "mpi"))]
    let _ = values;
}

/// Rank 0's `value` on every rank.
pub(crate) fn broadcast_u64(value: u64) -> u64 {
    #[cfg(feature = "mpi")]
    if world_size() > 1 {
        return collectives::broadcast_u64(value);
    }
    value
}

/// Turns one rank's failure into every rank's: each rank passes its own
/// outcome of the same step, and all get `Err` when any failed (the failing
/// rank its own error, the others one naming it), so no rank goes on to wait
/// in a collective for a rank that has returned.
pub(crate) fn agree(outcome: Result<()>, what: &str) -> Result<()> {
    #[cfg(feature = "mpi")]
    if world_size() > 1 {
        // The lowest failing rank, or MAX when none failed.
        let mut first = [if outcome.is_err() {
            rank() as f64
        } else {
            f64::MAX
        }];
        collectives::all_reduce_min_f64s(&mut first);
        outcome?;
        if first[0] != f64::MAX {
            return Err(crate::Error::Distributed(format!(
                "{what} failed on rank {}, so every rank stops here (that rank prints its \
                 own error)",
                first[0] as usize
            )));
        }
        return Ok(());
    }
    let _ = what;
    outcome
}
