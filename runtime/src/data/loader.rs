//! `DataLoader` (map-style datasets, optional worker threads) and
//! `IterableLoader` (streams).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use super::dataset::{Collate, Dataset, IterableDataset};
use super::sampler::Sampler;
use crate::random::{with_global_generator, Generator};

/// The batch type of dataset `D`.
pub type Batch<D> = <<D as Dataset>::Item as Collate>::Batch;

/// Batches a map-style [`Dataset`] (`torch.utils.data.DataLoader`).
///
/// Each call to [`iter`](Self::iter) is one epoch. Without shuffling, batches
/// take the samples in order. With `shuffle(true)`, epoch `e` visits the
/// samples in a permutation drawn from a [`Generator`] seeded with
/// `seed + e` (as `DistributedSampler` does); the loader counts epochs itself,
/// one per `iter()` call, and [`set_epoch`](Self::set_epoch) sets the counter,
/// so a training run resumed at epoch `e` sees the same batches as one that
/// never stopped. Without [`seed`](Self::seed), the seed is drawn from the
/// global generator (see [`manual_seed`](crate::manual_seed)) the first time
/// a shuffled epoch starts.
///
/// With [`num_workers(n)`](Self::num_workers), `n > 0`, batches are built on
/// `n` background threads (batch `k` by worker `k % n`), each running up to
/// [`prefetch`](Self::prefetch) batches ahead, and handed out in order: the
/// batches are exactly those of `num_workers(0)`, which builds them on the
/// caller's thread. Dropping the iterator stops and joins the workers (after
/// the batches they are building, if any); a panic in a worker is re-raised
/// on the caller's thread.
///
/// With [`sampler`](Self::sampler) the order comes from a [`Sampler`] (such
/// as [`DistributedSampler`](super::DistributedSampler), each process's
/// share in data-parallel training), which gets the loader's epoch.
///
/// ```
/// use deriv_runtime::data::{DataLoader, TensorDataset};
/// use deriv_runtime::Tensor;
/// let x = Tensor::randn([10, 3]);
/// let y = Tensor::arange(0i64, 10, 1);
/// let loader = DataLoader::new(TensorDataset::new((x, y)), 4)
///     .shuffle(true)
///     .seed(0)
///     .drop_last(true);
/// assert_eq!(loader.len(), 2);
/// for (xb, yb) in &loader {
///     assert_eq!((xb.shape(), yb.shape()), (&[4, 3][..], &[4][..]));
/// }
/// ```
pub struct DataLoader<D: Dataset> {
    dataset: Arc<D>,
    batch_size: usize,
    shuffle: bool,
    seed: OnceLock<u64>,
    drop_last: bool,
    num_workers: usize,
    prefetch: usize,
    epoch: AtomicU64,
    sampler: Option<Arc<dyn Sampler>>,
}

impl<D: Dataset> std::fmt::Debug for DataLoader<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("samples", &self.dataset.len())
            .field("batch_size", &self.batch_size)
            .field("shuffle", &self.shuffle)
            .field("seed", &self.seed.get())
            .field("drop_last", &self.drop_last)
            .field("num_workers", &self.num_workers)
            .field("prefetch", &self.prefetch)
            .field("epoch", &self.epoch.load(Ordering::SeqCst))
            .field("sampler", &self.sampler.as_ref().map(|s| s.len()))
            .finish()
    }
}

impl<D: Dataset + 'static> DataLoader<D> {
    /// A loader of `batch_size` samples per batch, in order, on the caller's
    /// thread. Pass the dataset by value or as an `Arc` to share it.
    #[track_caller]
    pub fn new(dataset: D, batch_size: usize) -> Self {
        assert!(
            batch_size > 0,
            "DataLoader::new: batch_size should be a positive integer, got 0"
        );
        DataLoader {
            dataset: Arc::new(dataset),
            batch_size,
            shuffle: false,
            seed: OnceLock::new(),
            drop_last: false,
            num_workers: 0,
            prefetch: 2,
            epoch: AtomicU64::new(0),
            sampler: None,
        }
    }

    /// A loader over the same dataset (shared, not copied) with the same
    /// batch size and `drop_last`, its order from `sampler`: what the
    /// `Trainer` uses to give each process its share.
    pub(crate) fn with_sampler_of(&self, sampler: impl Sampler + 'static) -> Self {
        DataLoader {
            dataset: self.dataset.clone(),
            batch_size: self.batch_size,
            shuffle: false,
            seed: OnceLock::new(),
            drop_last: self.drop_last,
            num_workers: self.num_workers,
            prefetch: self.prefetch,
            epoch: AtomicU64::new(self.epoch()),
            sampler: None,
        }
        .sampler(sampler)
    }

    /// Whether each epoch visits the samples in a fresh random order
    /// (default `false`).
    ///
    /// Panics when a [`sampler`](Self::sampler) is set (it decides the
    /// order; PyTorch refuses the pair the same way).
    #[track_caller]
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        assert!(
            !(shuffle && self.sampler.is_some()),
            "DataLoader: the sampler option is mutually exclusive with shuffle; shuffle in \
             the sampler instead (DistributedSampler shuffles by default)"
        );
        self.shuffle = shuffle;
        self
    }

    /// Takes each epoch's sample order from `sampler`
    /// (`DataLoader(sampler=...)`), which is given the loader's epoch.
    ///
    /// Panics when `shuffle(true)` was set, or when the sampler was made for
    /// a dataset of another length.
    ///
    /// ```
    /// use deriv_runtime::data::{DataLoader, DistributedSampler, TensorDataset};
    /// use deriv_runtime::Tensor;
    /// let data = TensorDataset::new((Tensor::arange(0i64, 10, 1),));
    /// // Rank 1 of 2: samples 1, 3, 5, 7, 9 in batches of 2.
    /// let loader = DataLoader::new(data, 2)
    ///     .sampler(DistributedSampler::new(10, 2, 1).shuffle(false));
    /// let batches: Vec<Vec<i64>> = loader.iter().map(|(x,)| x.to_vec()).collect();
    /// assert_eq!(batches, [vec![1, 3], vec![5, 7], vec![9]]);
    /// ```
    #[track_caller]
    pub fn sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        assert!(
            !self.shuffle,
            "DataLoader: the sampler option is mutually exclusive with shuffle; shuffle in \
             the sampler instead (DistributedSampler shuffles by default)"
        );
        if let Some(n) = sampler.dataset_len() {
            assert!(
                n == self.dataset.len(),
                "DataLoader: the sampler was made for {n} samples but the dataset has {}; \
                 build it with the dataset's len()",
                self.dataset.len()
            );
        }
        self.sampler = Some(Arc::new(sampler));
        self
    }

    /// The seed of the shuffling order; epoch `e` uses `seed + e`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = OnceLock::from(seed);
        self
    }

    /// Whether to leave out the last batch when it is smaller than
    /// `batch_size` (default `false`).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The number of background threads building batches (default 0: the
    /// caller's thread builds them).
    pub fn num_workers(mut self, num_workers: usize) -> Self {
        self.num_workers = num_workers;
        self
    }

    /// How many batches each worker may build ahead of the consumer (default
    /// 2, PyTorch's `prefetch_factor`; used only with workers).
    #[track_caller]
    pub fn prefetch(mut self, batches: usize) -> Self {
        assert!(
            batches > 0,
            "DataLoader::prefetch: each worker must be allowed at least 1 batch ahead, got 0"
        );
        self.prefetch = batches;
        self
    }

    /// Sets the epoch the next [`iter`](Self::iter) runs (the shuffling
    /// order of epoch `e` is seeded with `seed + e`); later calls count on
    /// from there (`DistributedSampler.set_epoch`).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The epoch the next [`iter`](Self::iter) runs.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// The number of samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether batches are drawn in a fresh order each epoch.
    pub(crate) fn is_shuffled(&self) -> bool {
        self.shuffle
    }

    /// The shuffling seed, drawn from the global generator on first use when
    /// none was set.
    pub(crate) fn resolved_seed(&self) -> u64 {
        *self
            .seed
            .get_or_init(|| with_global_generator(|g| g.int_range(0, i64::MAX) as u64))
    }

    /// Whether a sampler decides the order.
    pub(crate) fn has_sampler(&self) -> bool {
        self.sampler.is_some()
    }

    /// The number of batches per epoch (`len(loader)`).
    pub fn len(&self) -> usize {
        let n = match &self.sampler {
            Some(s) => s.len(),
            None => self.dataset.len(),
        };
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample order of epoch `epoch` (the identity without shuffling).
    fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        if let Some(s) = &self.sampler {
            let order = s.indices(epoch);
            debug_assert_eq!(order.len(), s.len());
            if let Some(&bad) = order.iter().find(|&&i| i >= n) {
                panic!("DataLoader: the sampler gave index {bad}, but the dataset has {n} samples");
            }
            order
        } else if self.shuffle {
            Generator::new(self.resolved_seed().wrapping_add(epoch)).permutation(n)
        } else {
            (0..n).collect()
        }
    }

    /// One epoch of batches; advances the epoch counter.
    pub fn iter(&self) -> DataLoaderIter<D> {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst);
        let plan = Arc::new(BatchPlan {
            order: self.order(epoch),
            batch_size: self.batch_size,
            batches: self.len(),
        });
        let workers = if self.num_workers == 0 || plan.batches == 0 {
            None
        } else {
            Some(Workers::spawn(
                &self.dataset,
                &plan,
                self.num_workers.min(plan.batches),
                self.prefetch,
            ))
        };
        DataLoaderIter {
            dataset: self.dataset.clone(),
            plan,
            next: 0,
            workers,
        }
    }
}

impl<D: Dataset + 'static> IntoIterator for &DataLoader<D> {
    type Item = Batch<D>;
    type IntoIter = DataLoaderIter<D>;
    fn into_iter(self) -> DataLoaderIter<D> {
        self.iter()
    }
}

/// Which samples make up each batch of one epoch.
struct BatchPlan {
    order: Vec<usize>,
    batch_size: usize,
    batches: usize,
}

impl BatchPlan {
    fn indices(&self, k: usize) -> &[usize] {
        let start = k * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        &self.order[start..end]
    }
}

/// Background threads, worker `w` building batches `w, w + n, w + 2n, ...`.
struct Workers<B> {
    receivers: Vec<Receiver<B>>,
    handles: Vec<Option<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
}

impl<B: Send + 'static> Workers<B> {
    fn spawn<D>(dataset: &Arc<D>, plan: &Arc<BatchPlan>, n: usize, prefetch: usize) -> Self
    where
        D: Dataset + 'static,
        D::Item: Collate<Batch = B>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for w in 0..n {
            let (tx, rx): (SyncSender<B>, Receiver<B>) = sync_channel(prefetch);
            let (dataset, plan, stop) = (dataset.clone(), plan.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("deriv-dataloader-{w}"))
                .spawn(move || {
                    for k in (w..plan.batches).step_by(n) {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let batch = dataset.get_batch(plan.indices(k));
                        if tx.send(batch).is_err() {
                            return; // the iterator was dropped
                        }
                    }
                })
                .expect("DataLoader: could not start a worker thread");
            receivers.push(rx);
            handles.push(Some(handle));
        }
        Workers {
            receivers,
            handles,
            stop,
        }
    }

    /// Batch `k`, from worker `k % n`; re-raises that worker's panic.
    fn recv(&mut self, k: usize) -> B {
        let w = k % self.receivers.len();
        match self.receivers[w].recv() {
            Ok(b) => b,
            Err(_) => {
                // The worker ended without sending batch k: it panicked.
                let handle = self.handles[w].take();
                if let Some(Err(payload)) = handle.map(JoinHandle::join) {
                    std::panic::resume_unwind(payload);
                }
                panic!("DataLoader: worker {w} stopped before producing batch {k}");
            }
        }
    }
}

impl<B> Drop for Workers<B> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers wakes any worker blocked on a full channel.
        self.receivers.clear();
        for h in self.handles.iter_mut().filter_map(Option::take) {
            // A worker's panic was already reported through `recv`, or is
            // irrelevant once the epoch is abandoned.
            let _ = h.join();
        }
    }
}

/// One epoch of a [`DataLoader`]: yields its batches in order.
pub struct DataLoaderIter<D: Dataset> {
    dataset: Arc<D>,
    plan: Arc<BatchPlan>,
    next: usize,
    workers: Option<Workers<Batch<D>>>,
}

impl<D: Dataset + 'static> Iterator for DataLoaderIter<D> {
    type Item = Batch<D>;
    fn next(&mut self) -> Option<Batch<D>> {
        if self.next >= self.plan.batches {
            self.workers = None; // join the finished workers now
            return None;
        }
        let k = self.next;
        self.next += 1;
        Some(match &mut self.workers {
            Some(w) => w.recv(k),
            None => self.dataset.get_batch(self.plan.indices(k)),
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.plan.batches - self.next;
        (left, Some(left))
    }
}

impl<D: Dataset + 'static> ExactSizeIterator for DataLoaderIter<D> {}

/// Batches an [`IterableDataset`]: consecutive samples of the stream,
/// `batch_size` at a time, collated with [`Collate`].
///
/// With [`prefetch(k)`](Self::prefetch), `k > 0`, the stream is read and
/// batched on one background thread that runs up to `k` batches ahead;
/// dropping the iterator stops it. By default (`k = 0`) the caller's thread
/// reads the stream.
///
/// ```
/// use deriv_runtime::data::{IterableDataset, IterableLoader};
/// use deriv_runtime::Tensor;
///
/// struct Ramp;
/// impl IterableDataset for Ramp {
///     type Item = (Tensor, f32);
///     fn iter(&self) -> Box<dyn Iterator<Item = (Tensor, f32)> + Send + '_> {
///         Box::new((0..5).map(|i| (Tensor::full([2], i as f64), 2.0 * i as f32)))
///     }
/// }
///
/// let loader = IterableLoader::new(Ramp, 2).drop_last(true).prefetch(1);
/// let batches: Vec<(Tensor, Tensor)> = loader.iter().collect();
/// assert_eq!(batches.len(), 2);
/// assert_eq!(batches[1].1.to_vec::<f32>(), vec![4., 6.]);
/// ```
pub struct IterableLoader<D: IterableDataset> {
    dataset: Arc<D>,
    batch_size: usize,
    drop_last: bool,
    prefetch: usize,
}

/// The batch type of iterable dataset `D`.
pub type IterBatch<D> = <<D as IterableDataset>::Item as Collate>::Batch;

impl<D: IterableDataset> std::fmt::Debug for IterableLoader<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IterableLoader")
            .field("batch_size", &self.batch_size)
            .field("drop_last", &self.drop_last)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl<D> IterableLoader<D>
where
    D: IterableDataset + 'static,
    D::Item: Collate + Send,
{
    /// A loader of `batch_size` consecutive samples per batch.
    #[track_caller]
    pub fn new(dataset: D, batch_size: usize) -> Self {
        assert!(
            batch_size > 0,
            "IterableLoader::new: batch_size should be a positive integer, got 0"
        );
        IterableLoader {
            dataset: Arc::new(dataset),
            batch_size,
            drop_last: false,
            prefetch: 0,
        }
    }

    /// Whether to leave out a last batch smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Reads the stream on a background thread up to `batches` batches ahead
    /// (0, the default: on the caller's thread).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// One pass over the stream, in batches.
    pub fn iter(&self) -> IterableLoaderIter<'_, D> {
        let (batch_size, drop_last) = (self.batch_size, self.drop_last);
        if self.prefetch == 0 {
            return IterableLoaderIter {
                source: Source::Inline(Some(self.dataset.iter())),
                batch_size,
                drop_last,
            };
        }
        let (tx, rx) = sync_channel(self.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let (dataset, stop2) = (self.dataset.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("deriv-iterable-loader".into())
            .spawn(move || {
                let mut items = dataset.iter();
                while !stop2.load(Ordering::Relaxed) {
                    let Some(batch) = next_batch(&mut *items, batch_size, drop_last) else {
                        return;
                    };
                    if tx.send(batch).is_err() {
                        return; // the iterator was dropped
                    }
                }
            })
            .expect("IterableLoader: could not start the loading thread");
        IterableLoaderIter {
            source: Source::Thread(Workers {
                receivers: vec![rx],
                handles: vec![Some(handle)],
                stop,
            }),
            batch_size,
            drop_last,
        }
    }
}

impl<'a, D> IntoIterator for &'a IterableLoader<D>
where
    D: IterableDataset + 'static,
    D::Item: Collate + Send,
{
    type Item = IterBatch<D>;
    type IntoIter = IterableLoaderIter<'a, D>;
    fn into_iter(self) -> IterableLoaderIter<'a, D> {
        self.iter()
    }
}

/// The next batch of `items`, or `None` at the end (or before a short last
/// batch with `drop_last`).
fn next_batch<T: Collate>(
    items: &mut dyn Iterator<Item = T>,
    batch_size: usize,
    drop_last: bool,
) -> Option<T::Batch> {
    let chunk: Vec<T> = items.take(batch_size).collect();
    if chunk.is_empty() || (drop_last && chunk.len() < batch_size) {
        None
    } else {
        Some(T::collate(chunk))
    }
}

type Stream<'a, T> = Box<dyn Iterator<Item = T> + Send + 'a>;

enum Source<'a, D: IterableDataset>
where
    D::Item: Collate,
{
    /// The stream, read on the caller's thread (`None` once it has ended).
    Inline(Option<Stream<'a, D::Item>>),
    /// Batches from the loading thread.
    Thread(Workers<IterBatch<D>>),
}

/// One pass of an [`IterableLoader`].
pub struct IterableLoaderIter<'a, D: IterableDataset>
where
    D::Item: Collate,
{
    source: Source<'a, D>,
    batch_size: usize,
    drop_last: bool,
}

impl<D> Iterator for IterableLoaderIter<'_, D>
where
    D: IterableDataset + 'static,
    D::Item: Collate + Send,
{
    type Item = IterBatch<D>;
    fn next(&mut self) -> Option<IterBatch<D>> {
        match &mut self.source {
            Source::Inline(stream) => {
                let items = stream.as_mut()?;
                let batch = next_batch(&mut **items, self.batch_size, self.drop_last);
                if batch.is_none() {
                    *stream = None;
                }
                batch
            }
            Source::Thread(w) => match w.receivers.first().map(Receiver::recv) {
                Some(Ok(b)) => Some(b),
                Some(Err(_)) => {
                    // The thread ended: the stream is over, or it panicked.
                    if let Some(Err(payload)) = w.handles[0].take().map(JoinHandle::join) {
                        std::panic::resume_unwind(payload);
                    }
                    w.receivers.clear();
                    None
                }
                None => None,
            },
        }
    }
}
