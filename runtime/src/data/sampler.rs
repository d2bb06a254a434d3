//! Samplers: which samples a [`DataLoader`](super::DataLoader) visits in an
//! epoch, and `DistributedSampler`, each process's share of a data set in
//! data-parallel training.

use crate::random::Generator;

/// The sample order of each epoch (`torch.utils.data.Sampler`), handed to
/// [`DataLoader::sampler`](super::DataLoader::sampler).
///
/// The epoch is passed in (the loader counts epochs and the `Trainer` sets
/// them), so an order depends only on the sampler's settings and the epoch.
pub trait Sampler: Send + Sync {
    /// The number of indices per epoch.
    fn len(&self) -> usize;

    /// Whether an epoch yields no index.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indices of epoch `epoch`, `len()` of them.
    fn indices(&self, epoch: u64) -> Vec<usize>;

    /// The length of the data set the indices are drawn from, when the
    /// sampler knows it: the loader refuses a sampler made for another size.
    fn dataset_len(&self) -> Option<usize> {
        None
    }
}

/// Each process's share of a data set in data-parallel training
/// (`torch.utils.data.distributed.DistributedSampler`, same rules).
///
/// Every epoch all ranks draw the same order (the identity, or with
/// `shuffle` a permutation seeded with `seed + epoch`); it is padded by
/// repeating indices from its start up to `total_size = num_samples ·
/// num_replicas`, so every rank gets the same number of samples (or, with
/// `drop_last`, cut down to a multiple of `num_replicas`), and rank `r` takes
/// `indices[r..total_size]` in steps of `num_replicas`. Across ranks an
/// epoch covers every sample exactly once, plus the padding.
///
/// Defaults as PyTorch: `shuffle` true, `seed` 0, `drop_last` false. Give
/// it to a loader with [`DataLoader::sampler`](super::DataLoader::sampler),
/// which passes its epoch (so `loader.set_epoch(e)` is PyTorch's
/// `sampler.set_epoch(e)`); on its own, [`set_epoch`](Self::set_epoch) and
/// [`iter`](Self::iter) do the same.
///
/// ```
/// use deriv_runtime::data::{DistributedSampler, Sampler};
/// // 10 samples on 3 processes: 4 each, the last two padded with 0 and 1.
/// let shards: Vec<Vec<usize>> = (0..3)
///     .map(|rank| DistributedSampler::new(10, 3, rank).shuffle(false).indices(0))
///     .collect();
/// assert_eq!(shards, [vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]);
/// ```
#[derive(Debug)]
pub struct DistributedSampler {
    dataset_len: usize,
    num_replicas: usize,
    rank: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    epoch: std::sync::atomic::AtomicU64,
}

impl Clone for DistributedSampler {
    fn clone(&self) -> Self {
        DistributedSampler {
            epoch: self.epoch().into(),
            ..*self
        }
    }
}

impl DistributedSampler {
    /// Rank `rank`'s share of a data set of `dataset_len` samples split
    /// over `num_replicas` processes.
    ///
    /// Panics when `num_replicas` is 0 or `rank` is not below it (PyTorch's
    /// `ValueError`).
    #[track_caller]
    pub fn new(dataset_len: usize, num_replicas: usize, rank: usize) -> Self {
        assert!(
            num_replicas > 0,
            "DistributedSampler: num_replicas should be a positive integer, got 0"
        );
        assert!(
            rank < num_replicas,
            "DistributedSampler: invalid rank {rank}, rank should be in the interval [0, {}]",
            num_replicas - 1
        );
        DistributedSampler {
            dataset_len,
            num_replicas,
            rank,
            shuffle: true,
            seed: 0,
            drop_last: false,
            epoch: 0.into(),
        }
    }

    /// This process's share: [`new`](Self::new) with the rank and world size
    /// of [`distributed`](crate::distributed) (rank 0 of 1 when no process
    /// group is running).
    pub fn for_this_process(dataset_len: usize) -> Self {
        Self::new(
            dataset_len,
            crate::distributed::world_size(),
            crate::distributed::rank(),
        )
    }

    /// Whether each epoch draws a fresh permutation (default true).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The seed of the permutations; epoch `e` uses `seed + e`. Must be the
    /// same on every rank (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether to drop the tail of the order so it divides evenly, instead
    /// of padding it (default false).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the epoch [`iter`](Self::iter) uses (PyTorch's `set_epoch`:
    /// call it at the start of each epoch so the shuffle changes).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    /// The epoch set by [`set_epoch`](Self::set_epoch).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes sharing the data set.
    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    /// Samples per rank per epoch (PyTorch's `num_samples`).
    pub fn num_samples(&self) -> usize {
        let (n, r) = (self.dataset_len, self.num_replicas);
        if self.drop_last && n % r != 0 {
            // The largest multiple of r not above n, split r ways.
            n / r
        } else {
            n.div_ceil(r)
        }
    }

    /// The padded (or cut) length of an epoch's order over all ranks.
    pub fn total_size(&self) -> usize {
        self.num_samples() * self.num_replicas
    }

    /// This rank's indices for the epoch set by [`set_epoch`](Self::set_epoch).
    pub fn iter(&self) -> std::vec::IntoIter<usize> {
        self.indices(self.epoch()).into_iter()
    }
}

impl Sampler for DistributedSampler {
    fn len(&self) -> usize {
        self.num_samples()
    }

    fn indices(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset_len;
        let mut order: Vec<usize> = if self.shuffle {
            Generator::new(self.seed.wrapping_add(epoch)).permutation(n)
        } else {
            (0..n).collect()
        };
        let total = self.total_size();
        if total <= n {
            order.truncate(total);
        } else if n > 0 {
            // Pad by repeating the order from its start (as often as needed).
            let mut i = 0;
            while order.len() < total {
                order.push(order[i]);
                i += 1;
            }
        }
        order
            .into_iter()
            .skip(self.rank)
            .step_by(self.num_replicas)
            .collect()
    }

    fn dataset_len(&self) -> Option<usize> {
        Some(self.dataset_len)
    }
}
