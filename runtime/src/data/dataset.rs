//! Map-style and iterable datasets, collation, `TensorDataset`, `Subset` and
//! `random_split`.

use std::sync::Arc;

use crate::random::Generator;
use crate::tensor::Tensor;

/// Turns a list of samples into one batch (PyTorch's `default_collate`).
///
/// Tensors are stacked along a new dimension 0; tuples and `Vec`s are collated
/// position by position, so a sample `(x, y)` of shapes `[d]` and `[]` gives a
/// batch `(X, Y)` of shapes `[n, d]` and `[n]`. Numbers (`f32`, `f64`, `i64`)
/// become a 1-D tensor of that dtype.
///
/// ```
/// use deriv_runtime::data::Collate;
/// use deriv_runtime::tensor;
/// let batch = <(_, _)>::collate(vec![
///     (tensor![1., 2.], tensor![0]),
///     (tensor![3., 4.], tensor![1]),
/// ]);
/// assert_eq!(batch.0.shape(), &[2, 2]);
/// assert_eq!(batch.1.to_vec::<i64>(), vec![0, 1]);
/// ```
pub trait Collate: Sized {
    /// What a batch of these samples is.
    type Batch: Send;
    /// Collates `items` (at least one) into a batch.
    fn collate(items: Vec<Self>) -> Self::Batch;
}

impl Collate for Tensor {
    type Batch = Tensor;
    #[track_caller]
    fn collate(items: Vec<Tensor>) -> Tensor {
        assert!(
            !items.is_empty(),
            "collate: cannot make a batch of zero samples; pass at least one"
        );
        match Tensor::try_stack(&items, 0) {
            Ok(t) => t,
            Err(e) => panic!(
                "collate: the samples of a batch must have one shape to be stacked ({e}); \
                 pad or resize them in the dataset's get, or collate them yourself"
            ),
        }
    }
}

macro_rules! collate_numbers {
    ($($t:ty),*) => {$(
        impl Collate for $t {
            type Batch = Tensor;
            fn collate(items: Vec<$t>) -> Tensor {
                let n = items.len();
                Tensor::from_vec(items, [n])
            }
        }
    )*};
}
collate_numbers!(f32, f64, i64);

macro_rules! collate_tuples {
    ($(($($name:ident $idx:tt),+))*) => {$(
        impl<$($name: Collate),+> Collate for ($($name,)+) {
            type Batch = ($($name::Batch,)+);
            #[allow(non_snake_case)]
            fn collate(items: Vec<Self>) -> Self::Batch {
                $(let mut $name = Vec::with_capacity(items.len());)+
                for item in items {
                    $($name.push(item.$idx);)+
                }
                ($($name::collate($name),)+)
            }
        }
    )*};
}
collate_tuples! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
}

impl<T: Collate> Collate for Vec<T> {
    type Batch = Vec<T::Batch>;
    #[track_caller]
    fn collate(items: Vec<Vec<T>>) -> Vec<T::Batch> {
        let width = items.first().map_or(0, Vec::len);
        if let Some((i, bad)) = items.iter().enumerate().find(|(_, v)| v.len() != width) {
            panic!(
                "collate: every sample of a batch must be a Vec of the same length, but \
                 sample 0 has {width} entries and sample {i} has {}",
                bad.len()
            );
        }
        let mut columns: Vec<Vec<T>> = (0..width)
            .map(|_| Vec::with_capacity(items.len()))
            .collect();
        for item in items {
            for (col, x) in columns.iter_mut().zip(item) {
                col.push(x);
            }
        }
        columns.into_iter().map(T::collate).collect()
    }
}

/// A map-style dataset: `len()` samples, fetched by index
/// (`torch.utils.data.Dataset` with `__len__` and `__getitem__`).
///
/// Only `len` and `get` are required. [`get_batch`](Self::get_batch) collates
/// the samples of a batch; datasets stored as whole tensors override it to
/// gather a batch in one operation (see [`TensorDataset`]).
///
/// ```
/// use deriv_runtime::data::{DataLoader, Dataset};
/// use deriv_runtime::Tensor;
///
/// /// The pairs (i, i²).
/// struct Squares(usize);
/// impl Dataset for Squares {
///     type Item = (Tensor, Tensor);
///     fn len(&self) -> usize { self.0 }
///     fn get(&self, i: usize) -> (Tensor, Tensor) {
///         (Tensor::scalar(i as f32), Tensor::scalar((i * i) as f32))
///     }
/// }
///
/// let loader = DataLoader::new(Squares(5), 2);
/// let batches: Vec<_> = loader.iter().collect();
/// assert_eq!(batches.len(), 3);
/// assert_eq!(batches[1].1.to_vec::<f32>(), vec![4., 9.]);
/// ```
pub trait Dataset: Send + Sync {
    /// One sample.
    type Item: Collate + Send;
    /// The number of samples.
    fn len(&self) -> usize;
    /// The sample at `index` (`0 <= index < len()`).
    fn get(&self, index: usize) -> Self::Item;
    /// Whether the dataset has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The samples at `indices`, collated into one batch. The default collates
    /// `get` of each index; override it when a batch can be gathered at once.
    fn get_batch(&self, indices: &[usize]) -> <Self::Item as Collate>::Batch {
        Self::Item::collate(indices.iter().map(|&i| self.get(i)).collect())
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> D::Item {
        (**self).get(index)
    }
    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
    fn get_batch(&self, indices: &[usize]) -> <D::Item as Collate>::Batch {
        (**self).get_batch(indices)
    }
}

/// A dataset that is read as a stream, in its own order
/// (`torch.utils.data.IterableDataset`): a file read line by line, a
/// generator of synthetic samples. Batch it with
/// [`IterableLoader`](super::IterableLoader).
///
/// Each call to `iter` starts a new pass (one epoch).
///
/// ```
/// use deriv_runtime::data::{IterableDataset, IterableLoader};
/// use deriv_runtime::Tensor;
///
/// struct Countdown(i64);
/// impl IterableDataset for Countdown {
///     type Item = Tensor;
///     fn iter(&self) -> Box<dyn Iterator<Item = Tensor> + Send + '_> {
///         Box::new((0..self.0).rev().map(|i| Tensor::scalar(i)))
///     }
/// }
///
/// let loader = IterableLoader::new(Countdown(5), 2);
/// let batches: Vec<Tensor> = loader.iter().collect();
/// assert_eq!(batches[0].to_vec::<i64>(), vec![4, 3]);
/// assert_eq!(batches[2].to_vec::<i64>(), vec![0]);
/// ```
pub trait IterableDataset: Send + Sync {
    /// One sample.
    type Item;
    /// A fresh pass over the samples.
    fn iter(&self) -> Box<dyn Iterator<Item = Self::Item> + Send + '_>;
}

impl<D: IterableDataset + ?Sized> IterableDataset for Arc<D> {
    type Item = D::Item;
    fn iter(&self) -> Box<dyn Iterator<Item = D::Item> + Send + '_> {
        (**self).iter()
    }
}

/// Tensors that share dimension 0 and are indexed together: a tuple of one to
/// four tensors, a single `Tensor`, or a `Vec<Tensor>`. Used by
/// [`TensorDataset`].
pub trait TensorTuple: Collate<Batch = Self> + Clone + Send + Sync {
    /// The tensors, in order.
    fn tensors(&self) -> Vec<&Tensor>;
    /// Rebuilds the same kind of value from tensors given in order.
    fn map(&self, f: impl FnMut(&Tensor) -> Tensor) -> Self;
}

impl TensorTuple for Tensor {
    fn tensors(&self) -> Vec<&Tensor> {
        vec![self]
    }
    fn map(&self, mut f: impl FnMut(&Tensor) -> Tensor) -> Self {
        f(self)
    }
}

impl TensorTuple for Vec<Tensor> {
    fn tensors(&self) -> Vec<&Tensor> {
        self.iter().collect()
    }
    fn map(&self, f: impl FnMut(&Tensor) -> Tensor) -> Self {
        self.iter().map(f).collect()
    }
}

macro_rules! tensor_tuples {
    ($(($($idx:tt),+))*) => {$(
        impl TensorTuple for ($(tensor_tuples!(@t $idx),)+) {
            fn tensors(&self) -> Vec<&Tensor> {
                vec![$(&self.$idx),+]
            }
            fn map(&self, mut f: impl FnMut(&Tensor) -> Tensor) -> Self {
                ($(f(&self.$idx),)+)
            }
        }
    )*};
    (@t $idx:tt) => { Tensor };
}
tensor_tuples! {
    (0)
    (0, 1)
    (0, 1, 2)
    (0, 1, 2, 3)
}

/// A dataset held as tensors whose dimension 0 indexes the samples
/// (`torch.utils.data.TensorDataset`).
///
/// A sample is the tuple of rows `(features[i], labels[i])`; a batch is
/// gathered with one `index_select` per tensor rather than by stacking rows.
///
/// ```
/// use deriv_runtime::data::{DataLoader, Dataset, TensorDataset};
/// use deriv_runtime::{tensor, Tensor};
/// let x = Tensor::arange(0.0f32, 6.0, 1.0).reshape([3, 2]);
/// let y = tensor![0, 1, 0];
/// let ds = TensorDataset::new((x, y));
/// assert_eq!(ds.len(), 3);
/// let (xi, yi) = ds.get(1);
/// assert_eq!((xi.to_vec::<f32>(), yi.item()), (vec![2., 3.], 1.0));
/// let (xb, yb) = ds.get_batch(&[2, 0]);
/// assert_eq!(xb.to_vec::<f32>(), vec![4., 5., 0., 1.]);
/// assert_eq!(yb.to_vec::<i64>(), vec![0, 0]);
/// ```
#[derive(Clone, Debug)]
pub struct TensorDataset<T: TensorTuple> {
    tensors: T,
    len: usize,
}

impl<T: TensorTuple> TensorDataset<T> {
    /// A dataset over `tensors`, which must all have the same size in
    /// dimension 0 (panics naming the sizes otherwise).
    #[track_caller]
    pub fn new(tensors: T) -> Self {
        let ts = tensors.tensors();
        assert!(
            !ts.is_empty(),
            "TensorDataset::new: pass at least one tensor"
        );
        for (i, t) in ts.iter().enumerate() {
            assert!(
                t.ndim() >= 1,
                "TensorDataset::new: tensor {i} is 0-dimensional; every tensor needs a \
                 dimension 0 that indexes the samples (unsqueeze(0) a single value)"
            );
        }
        let len = ts[0].shape()[0];
        for (i, t) in ts.iter().enumerate().skip(1) {
            assert!(
                t.shape()[0] == len,
                "TensorDataset::new: size mismatch between tensors: tensor 0 has {len} \
                 samples (shape {:?}) but tensor {i} has {} (shape {:?}); every tensor \
                 must have the same size in dimension 0",
                ts[0].shape(),
                t.shape()[0],
                t.shape()
            );
        }
        TensorDataset { tensors, len }
    }

    /// The tensors this dataset indexes.
    pub fn tensors(&self) -> &T {
        &self.tensors
    }
}

impl<T: TensorTuple> Dataset for TensorDataset<T> {
    type Item = T;
    fn len(&self) -> usize {
        self.len
    }
    #[track_caller]
    fn get(&self, index: usize) -> T {
        check_index("TensorDataset", index, self.len);
        self.tensors.map(|t| t.select(0, index as isize))
    }
    #[track_caller]
    fn get_batch(&self, indices: &[usize]) -> T {
        gather_rows(&self.tensors, indices, self.len)
    }
}

/// Gathers `indices` of every tensor along dimension 0, one `index_select`
/// each (the index tensor is built once per device).
#[track_caller]
pub(crate) fn gather_rows<T: TensorTuple>(tensors: &T, indices: &[usize], len: usize) -> T {
    for &i in indices {
        check_index("get_batch", i, len);
    }
    let idx = Tensor::from_vec(
        indices.iter().map(|&i| i as i64).collect::<Vec<_>>(),
        [indices.len()],
    );
    let mut on_device: Vec<(crate::Device, Tensor)> = Vec::new();
    tensors.map(|t| {
        let dev = t.device();
        let index = match on_device.iter().find(|(d, _)| *d == dev) {
            Some((_, ix)) => ix.clone(),
            None => {
                let ix = idx.to(&dev);
                on_device.push((dev, ix.clone()));
                ix
            }
        };
        t.index_select(0, &index)
    })
}

#[track_caller]
pub(crate) fn check_index(what: &str, index: usize, len: usize) {
    assert!(
        index < len,
        "{what}: index {index} is out of range for a dataset of {len} samples"
    );
}

/// The samples of `dataset` at `indices`, in that order (`torch.utils.data.Subset`).
///
/// ```
/// use deriv_runtime::data::{Dataset, Subset, TensorDataset};
/// use deriv_runtime::Tensor;
/// use std::sync::Arc;
/// let ds = Arc::new(TensorDataset::new(Tensor::arange(0i64, 10, 1)));
/// let odd = Subset::new(ds, vec![1, 3, 5]);
/// assert_eq!(odd.len(), 3);
/// assert_eq!(odd.get(2).item(), 5.0);
/// ```
pub struct Subset<D: Dataset> {
    /// The whole dataset.
    pub dataset: Arc<D>,
    /// The positions in `dataset` of this subset's samples.
    pub indices: Vec<usize>,
}

impl<D: Dataset> Clone for Subset<D> {
    fn clone(&self) -> Self {
        Subset {
            dataset: self.dataset.clone(),
            indices: self.indices.clone(),
        }
    }
}

impl<D: Dataset + std::fmt::Debug> std::fmt::Debug for Subset<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("dataset", &self.dataset)
            .field("indices", &self.indices)
            .finish()
    }
}

impl<D: Dataset> Subset<D> {
    /// The samples of `dataset` at `indices` (each below `dataset.len()`,
    /// panics otherwise).
    #[track_caller]
    pub fn new(dataset: Arc<D>, indices: Vec<usize>) -> Self {
        let n = dataset.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            panic!("Subset::new: index {bad} is out of range for a dataset of {n} samples");
        }
        Subset { dataset, indices }
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        self.indices.len()
    }
    #[track_caller]
    fn get(&self, index: usize) -> D::Item {
        check_index("Subset", index, self.indices.len());
        self.dataset.get(self.indices[index])
    }
    #[track_caller]
    fn get_batch(&self, indices: &[usize]) -> <D::Item as Collate>::Batch {
        let mapped: Vec<usize> = indices
            .iter()
            .map(|&i| {
                check_index("Subset", i, self.indices.len());
                self.indices[i]
            })
            .collect();
        self.dataset.get_batch(&mapped)
    }
}

/// How [`random_split`] sizes its parts: sample counts (`&[120, 30]`) that sum
/// to the dataset's length, or fractions (`&[0.8, 0.2]`) that sum to 1.
pub trait SplitLengths {
    /// The sample count of each part for a dataset of `n` samples (panics
    /// when the lengths do not fit `n`).
    fn resolve(&self, n: usize) -> Vec<usize>;
}

impl SplitLengths for [usize] {
    #[track_caller]
    fn resolve(&self, n: usize) -> Vec<usize> {
        let total: usize = self.iter().sum();
        assert!(
            total == n,
            "random_split: the lengths {self:?} sum to {total}, but the dataset has {n} \
             samples; pass lengths that sum to {n}, or fractions that sum to 1"
        );
        self.to_vec()
    }
}

impl SplitLengths for [f64] {
    /// PyTorch's rule: `floor(n * fraction)` each, then the samples left over
    /// are handed out one at a time to the parts in order.
    #[track_caller]
    fn resolve(&self, n: usize) -> Vec<usize> {
        for (i, &f) in self.iter().enumerate() {
            assert!(
                (0.0..=1.0).contains(&f),
                "random_split: fraction at index {i} is {f}, which is not between 0 and 1"
            );
        }
        let total: f64 = self.iter().sum();
        assert!(
            (total - 1.0).abs() <= 1e-9 && !self.is_empty(),
            "random_split: the fractions {self:?} sum to {total}, not 1; pass fractions \
             that sum to 1, or sample counts that sum to the dataset's length ({n})"
        );
        let mut lengths: Vec<usize> = self
            .iter()
            .map(|&f| (n as f64 * f).floor() as usize)
            .collect();
        let assigned: usize = lengths.iter().sum();
        let parts = lengths.len();
        for i in 0..n.saturating_sub(assigned) {
            lengths[i % parts] += 1;
        }
        lengths
    }
}

impl<const N: usize> SplitLengths for [usize; N] {
    fn resolve(&self, n: usize) -> Vec<usize> {
        self[..].resolve(n)
    }
}

impl<const N: usize> SplitLengths for [f64; N] {
    fn resolve(&self, n: usize) -> Vec<usize> {
        self[..].resolve(n)
    }
}

impl SplitLengths for Vec<usize> {
    fn resolve(&self, n: usize) -> Vec<usize> {
        self[..].resolve(n)
    }
}

impl SplitLengths for Vec<f64> {
    fn resolve(&self, n: usize) -> Vec<usize> {
        self[..].resolve(n)
    }
}

/// Splits `dataset` into non-overlapping random subsets
/// (`torch.utils.data.random_split`).
///
/// `lengths` are sample counts summing to `dataset.len()`, or fractions
/// summing to 1 (each part gets `floor(n * fraction)` samples and the
/// remainder is dealt one at a time to the parts in order, as in PyTorch). The
/// order is a permutation drawn from a [`Generator`] seeded with `seed`, so the
/// same seed gives the same split.
///
/// ```
/// use deriv_runtime::data::{random_split, Dataset, TensorDataset};
/// use deriv_runtime::Tensor;
/// let ds = TensorDataset::new(Tensor::arange(0i64, 10, 1));
/// let parts = random_split(ds, &[0.7, 0.3], 42);
/// assert_eq!((parts[0].len(), parts[1].len()), (7, 3));
/// ```
#[track_caller]
pub fn random_split<D: Dataset, L: SplitLengths + ?Sized>(
    dataset: D,
    lengths: &L,
    seed: u64,
) -> Vec<Subset<D>> {
    let n = dataset.len();
    let lengths = lengths.resolve(n);
    let perm = Generator::new(seed).permutation(n);
    let dataset = Arc::new(dataset);
    let mut start = 0;
    lengths
        .into_iter()
        .map(|len| {
            let indices = perm[start..start + len].to_vec();
            start += len;
            Subset {
                dataset: dataset.clone(),
                indices,
            }
        })
        .collect()
}
