//! How the Trainer spreads training over processes: one process, or
//! data-parallel over the ranks of an MPI job (Lightning's `strategy`).

use super::trainer::Batches;
use crate::error::Result;
use crate::nn::Module;

/// Where [`Trainer::fit`](super::Trainer::fit) runs (Lightning's `strategy`).
///
/// ```
/// use deriv_runtime::train::{Strategy, Trainer};
/// let trainer = Trainer::new().strategy(Strategy::Ddp); // under `mpirun -np N`
/// assert_eq!(trainer.strategy_of(), Strategy::Ddp);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// This process alone (the default).
    #[default]
    Single,
    /// Data-parallel over the processes `mpirun` started (the `mpi`
    /// feature; Lightning's `"ddp"`): the process group is started if
    /// needed, every rank's model starts from rank 0's parameters, each
    /// rank trains on its share of every epoch (a
    /// [`DistributedSampler`](crate::data::DistributedSampler) for a
    /// `DataLoader`: with batch size `B` on `N` ranks a step sees `N·B`
    /// samples), gradients are averaged during backward
    /// ([`DistributedDataParallel`](crate::distributed)'s reducer), the
    /// epoch's metrics are averaged over all ranks' samples, and only rank 0
    /// prints, shows progress bars, writes checkpoints and plots. Every rank
    /// returns the same history; `resume_from` is read by every rank. A
    /// rank's file error stops every rank with an `Err`.
    Ddp,
}

/// This rank's share of a [`Batches`] source that cannot shard its
/// samples: whole batches `rank, rank + world, ...`, padded by repeating
/// the epoch's first batches so every rank gets the same number (as
/// `DistributedSampler` pads samples).
pub(crate) struct ShardedBatches<'a, L: ?Sized> {
    pub(crate) inner: &'a L,
    pub(crate) rank: usize,
    pub(crate) world: usize,
}

impl<L: Batches + ?Sized> Batches for ShardedBatches<'_, L> {
    type Batch = L::Batch;

    fn num_batches(&self) -> usize {
        self.inner.num_batches().div_ceil(self.world)
    }

    fn epoch_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = L::Batch> + '_> {
        let n = self.inner.num_batches();
        if n == 0 {
            return Box::new(std::iter::empty());
        }
        let inner = self.inner;
        Box::new(
            (0..)
                .flat_map(move |_| inner.epoch_batches(epoch))
                .skip(self.rank)
                .step_by(self.world)
                .take(self.num_batches()),
        )
    }
}

/// The Trainer's view of the processes: whether this one is rank 0, and
/// the gradient reducer when training data-parallel.
pub(crate) struct Replicas {
    pub(crate) rank: usize,
    pub(crate) world: usize,
    /// Whether training is data-parallel (`Strategy::Ddp`, even on one rank).
    #[cfg(feature = "mpi")]
    parallel: bool,
    #[cfg(feature = "mpi")]
    reducer: Option<crate::distributed::Reducer>,
}

impl Replicas {
    /// Starts the process group for [`Strategy::Ddp`] (without a model:
    /// evaluation only).
    pub(crate) fn start(strategy: Strategy) -> Result<Replicas> {
        match strategy {
            Strategy::Single => Ok(Replicas {
                rank: 0,
                world: 1,
                #[cfg(feature = "mpi")]
                parallel: false,
                #[cfg(feature = "mpi")]
                reducer: None,
            }),
            Strategy::Ddp => {
                #[cfg(feature = "mpi")]
                {
                    crate::distributed::init()?;
                    Ok(Replicas {
                        rank: crate::distributed::rank(),
                        world: crate::distributed::world_size(),
                        parallel: true,
                        reducer: None,
                    })
                }
                #[cfg(not(feature = "mpi"))]
                Err(crate::Error::Distributed(
                    "Trainer: Strategy::Ddp needs the `mpi` feature: build with \
                     `--features mpi` and launch with `mpirun -np N` (docs/distributed.md)"
                        .into(),
                ))
            }
        }
    }

    /// Hooks `model`'s parameters for gradient averaging (after rank 0's
    /// values are copied everywhere and the models checked to match).
    pub(crate) fn attach<M: Module + ?Sized>(&mut self, model: &M) -> Result<()> {
        let _ = model;
        #[cfg(feature = "mpi")]
        if self.parallel {
            let opts = crate::distributed::DdpOptions::default();
            self.reducer = Some(crate::distributed::Reducer::new(
                model.named_parameters(),
                opts.bucket_cap_bytes(),
                opts.first_bucket_bytes(),
            )?);
        }
        Ok(())
    }

    /// Whether this process prints and writes files.
    pub(crate) fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Before a training step.
    pub(crate) fn prepare(&self) {
        #[cfg(feature = "mpi")]
        if let Some(r) = &self.reducer {
            r.prepare();
        }
    }

    /// After a training step's backward: the gradients are averaged.
    pub(crate) fn finish(&self) {
        #[cfg(feature = "mpi")]
        if let Some(r) = &self.reducer {
            r.finish();
        }
    }

    /// Turns a failure on any rank into an `Err` on every rank.
    pub(crate) fn agree(&self, outcome: Result<()>, what: &str) -> Result<()> {
        if self.world == 1 {
            return outcome;
        }
        crate::distributed::agree(outcome, what)
    }

    /// Sums `values` over the ranks (in place).
    pub(crate) fn sum(&self, values: &mut [f64]) {
        if self.world > 1 {
            crate::distributed::sum_f64s(values);
        }
    }
}
