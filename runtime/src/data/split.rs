//! Seeded train/test splits of any `(features, targets)` pair
//! (scikit-learn's `train_test_split`), shared with
//! [`TabularDataset`](super::TabularDataset)'s methods.

use super::dataset::gather_rows;
use crate::random::Generator;
use crate::tensor::{DType, Tensor};

/// Four tensors: `(x_train, x_test, y_train, y_test)`, scikit-learn's order.
pub type Split = (Tensor, Tensor, Tensor, Tensor);

/// Splits `features` and `targets` (any tensors sharing dimension 0: a
/// regression target `[n]` or `[n, k]`, class labels, ...) into a shuffled
/// train set and test set, like scikit-learn's
/// `train_test_split(X, y, test_size=test_fraction, shuffle=True)`: the test
/// set has `ceil(test_fraction * n)` samples and the train set the rest; the
/// order is a permutation drawn from a [`Generator`] seeded with `seed`, the
/// test set taking its first samples. Returns
/// `(x_train, x_test, y_train, y_test)`.
///
/// Panics unless `0 < test_fraction < 1` leaves both sets non-empty, or
/// when dimension 0 differs.
///
/// ```
/// use deriv_runtime::data::{train_test_split, StandardScaler};
/// use deriv_runtime::Tensor;
/// let x = Tensor::randn([50, 3]);
/// let y = Tensor::randn([50]); // a regression target
/// let (x_train, x_test, y_train, y_test) = train_test_split(&x, &y, 0.2, 42);
/// assert_eq!((x_train.shape(), x_test.shape()), (&[40, 3][..], &[10, 3][..]));
/// assert_eq!((y_train.shape(), y_test.shape()), (&[40][..], &[10][..]));
/// // The splits are tensors: fit a scaler on the train set only.
/// let scaler = StandardScaler::fit(&x_train);
/// let (x_train, x_test) = (scaler.transform(&x_train), scaler.transform(&x_test));
/// ```
#[track_caller]
pub fn train_test_split(
    features: &Tensor,
    targets: &Tensor,
    test_fraction: f64,
    seed: u64,
) -> Split {
    let n = paired_len("train_test_split", features, targets);
    let (train, test) = shuffled_indices("train_test_split", n, test_fraction, seed);
    take(features, targets, &train, &test)
}

/// Like [`train_test_split`], but each class of `labels` (1-D, i64) keeps
/// its share in both sets as nearly as whole samples allow, like
/// scikit-learn's `train_test_split(..., stratify=y)`: for each class
/// (in increasing label order), the train set gets
/// `floor(n_train * count / n)` samples plus one for the classes with the
/// largest remainders (the smaller label on ties), the test set the rest;
/// both are shuffled. Returns `(x_train, x_test, y_train, y_test)`.
///
/// Panics when the labels are not a 1-D i64 tensor as long as `features`,
/// or when a set would be smaller than the number of classes.
///
/// ```
/// use deriv_runtime::data::stratified_split;
/// use deriv_runtime::Tensor;
/// let x = Tensor::randn([10, 2]);
/// let y = Tensor::from_vec(vec![0i64, 0, 0, 0, 0, 0, 0, 0, 1, 1], [10]);
/// let (_, _, y_train, y_test) = stratified_split(&x, &y, 0.5, 0);
/// let ones = |t: &Tensor| t.to_vec::<i64>().iter().filter(|&&c| c == 1).count();
/// assert_eq!((ones(&y_train), ones(&y_test)), (1, 1));
/// ```
#[track_caller]
pub fn stratified_split(
    features: &Tensor,
    labels: &Tensor,
    test_fraction: f64,
    seed: u64,
) -> Split {
    let n = paired_len("stratified_split", features, labels);
    assert!(
        labels.ndim() == 1 && labels.dtype() == DType::I64,
        "stratified_split: the labels must be a 1-D i64 tensor of class labels, got shape {:?} \
         and dtype {}; for a float target use train_test_split",
        labels.shape(),
        labels.dtype()
    );
    let (train, test) = stratified_indices(
        "stratified_split",
        &labels.to_vec::<i64>(),
        n,
        test_fraction,
        seed,
    );
    take(features, labels, &train, &test)
}

fn take(features: &Tensor, targets: &Tensor, train: &[usize], test: &[usize]) -> Split {
    let pair = (features.clone(), targets.clone());
    let n = features.shape()[0];
    let (x_train, y_train) = gather_rows(&pair, train, n);
    let (x_test, y_test) = gather_rows(&pair, test, n);
    (x_train, x_test, y_train, y_test)
}

#[track_caller]
fn paired_len(op: &str, features: &Tensor, targets: &Tensor) -> usize {
    let (f, t) = (features.shape().first(), targets.shape().first());
    assert!(
        f.is_some() && f == t,
        "{op}: features and targets must have the same size in dimension 0 (one row per \
         sample), got shapes {:?} and {:?}",
        features.shape(),
        targets.shape()
    );
    features.shape()[0]
}

/// The test set's size: `ceil(test_fraction * n)`, checked to leave both
/// sets non-empty.
#[track_caller]
pub(crate) fn test_size(op: &str, n: usize, test_fraction: f64) -> usize {
    assert!(
        test_fraction > 0.0 && test_fraction < 1.0,
        "{op}: test_fraction must be between 0 and 1 (exclusive), got {test_fraction}"
    );
    let n_test = (test_fraction * n as f64).ceil() as usize;
    assert!(
        n_test < n,
        "{op}: with {n} samples and test_fraction {test_fraction} the train set would be \
         empty; use a smaller test_fraction"
    );
    n_test
}

/// `(train, test)` indices of a shuffled split: the test set takes the
/// first `ceil(test_fraction * n)` positions of a seeded permutation.
#[track_caller]
pub(crate) fn shuffled_indices(
    op: &str,
    n: usize,
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let n_test = test_size(op, n, test_fraction);
    let mut perm = Generator::new(seed).permutation(n);
    let train = perm.split_off(n_test);
    (train, perm)
}

/// `(train, test)` indices of a stratified split of `labels` (see
/// [`stratified_split`]).
#[track_caller]
pub(crate) fn stratified_indices(
    op: &str,
    labels: &[i64],
    n: usize,
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let n_test = test_size(op, n, test_fraction);
    let n_train = n - n_test;
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let members: Vec<Vec<usize>> = classes
        .iter()
        .map(|c| (0..n).filter(|&i| labels[i] == *c).collect())
        .collect();
    let present = classes.len();
    assert!(
        n_train >= present && n_test >= present,
        "{op}: the train ({n_train}) and test ({n_test}) sets must each be at least as large \
         as the number of classes ({present}); change test_fraction"
    );
    // Train share of each class: floors, then the largest remainders.
    let exact: Vec<f64> = members
        .iter()
        .map(|m| n_train as f64 * m.len() as f64 / n as f64)
        .collect();
    let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..present).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let short = n_train - take.iter().sum::<usize>();
    for &c in order.iter().take(short) {
        take[c] += 1;
    }
    let mut rng = Generator::new(seed);
    let (mut train, mut test) = (Vec::with_capacity(n_train), Vec::with_capacity(n_test));
    for (m, &k) in members.iter().zip(&take) {
        let perm = rng.permutation(m.len());
        train.extend(perm[..k].iter().map(|&p| m[p]));
        test.extend(perm[k..].iter().map(|&p| m[p]));
    }
    let train = rng.permutation(n_train).iter().map(|&p| train[p]).collect();
    let test = rng.permutation(n_test).iter().map(|&p| test[p]).collect();
    (train, test)
}
