//! Datasets, the DataLoader, CSV loading and the bundled data sets
//! (`torch.utils.data`, plus a little of scikit-learn's data handling).
//!
//! - [`Dataset`] (map-style: `len` + `get`) and [`IterableDataset`] (a
//!   stream); [`Collate`] turns samples into a batch (tensors are stacked along
//!   a new dimension 0, tuples position by position).
//! - [`TensorDataset`] over tensors that share dimension 0; [`Subset`] and
//!   [`random_split`].
//! - [`DataLoader`]: batches, per-epoch seeded shuffling, `drop_last`,
//!   background workers with prefetching, an optional [`Sampler`];
//!   [`IterableLoader`] for streams.
//! - [`DistributedSampler`]: each process's share of a data set in
//!   data-parallel training (PyTorch's sharding, shuffling and padding).
//! - [`read_csv`] / [`read_csv_xy`] (and [`read_csv_from`] /
//!   [`read_csv_xy_from`] for any reader): numeric CSV files into tensors,
//!   with errors that name the file, line and column; [`CsvOptions`].
//! - [`datasets`]: `breast_cancer()`, `digits()`, `iris()` as
//!   [`TabularDataset`]s (and [`TabularDataset::from_csv`] for a file in
//!   their format), with train/test splits and [`StandardScaler`].
//! - [`train_test_split`] / [`stratified_split`]: seeded splits of any
//!   `(features, targets)` pair, as scikit-learn's `train_test_split`.
//!
//! ```
//! use deriv_runtime::data::{DataLoader, TensorDataset};
//! use deriv_runtime::Tensor;
//! let x = Tensor::randn([100, 3]);
//! let y = Tensor::randint(0, 2, [100]);
//! let loader = DataLoader::new(TensorDataset::new((x, y)), 32).shuffle(true).seed(1);
//! assert_eq!(loader.len(), 4); // 32 + 32 + 32 + 4
//! for _epoch in 0..2 {
//!     for (xb, yb) in &loader {
//!         assert_eq!(xb.shape()[0], yb.shape()[0]);
//!     }
//! }
//! ```

mod csv_read;
mod dataset;
pub mod datasets;
mod loader;
mod sampler;
mod scaler;
mod split;

pub use csv_read::{
    read_csv, read_csv_bytes, read_csv_from, read_csv_xy, read_csv_xy_bytes, read_csv_xy_from,
    Column, CsvOptions,
};
pub use dataset::{
    random_split, Collate, Dataset, IterableDataset, SplitLengths, Subset, TensorDataset,
    TensorTuple,
};
pub use datasets::TabularDataset;
pub use loader::{
    Batch, DataLoader, DataLoaderIter, IterBatch, IterableLoader, IterableLoaderIter,
};
pub use sampler::{DistributedSampler, Sampler};
pub use scaler::StandardScaler;
pub use split::{stratified_split, train_test_split, Split};
