//! Evaluation metrics with scikit-learn's semantics (`sklearn.metrics`):
//! [`accuracy`], [`confusion_matrix`] and [`f1_score`] for class labels,
//! [`mean_squared_error`], [`mean_absolute_error`] and [`r2_score`] for
//! regression.
//!
//! As in scikit-learn the truth comes first: `metric(y_true, y_pred)` (the
//! losses in `nn` take `(input, target)`). Values are computed in f64 on the
//! host and returned as numbers; nothing is recorded on the autograd tape.
//!
//! ```
//! use deriv_runtime::{metrics, tensor};
//! let y_true = tensor![3.0, -0.5, 2.0, 7.0];
//! let y_pred = tensor![2.5, 0.0, 2.0, 8.0];
//! assert!((metrics::r2_score(&y_true, &y_pred) - 0.948_608_137).abs() < 1e-6);
//! assert_eq!(metrics::mean_squared_error(&y_true, &y_pred), 0.375);
//! assert_eq!(metrics::accuracy(&tensor![0, 1, 2, 2], &tensor![0, 2, 2, 2]), 0.75);
//! ```

use crate::tensor::{DType, Tensor};

/// The fraction of samples whose predicted label equals the true one
/// (`accuracy_score`). Labels are i64 or bool tensors, or floats holding
/// whole numbers, compared element by element (both must have the same
/// number of elements; `[n]` and `[n, 1]` mix).
///
/// ```
/// use deriv_runtime::{metrics::accuracy, tensor};
/// assert_eq!(accuracy(&tensor![0, 1, 1, 0], &tensor![0, 1, 0, 0]), 0.75);
/// ```
#[track_caller]
pub fn accuracy(y_true: &Tensor, y_pred: &Tensor) -> f64 {
    let (t, p) = labels("accuracy", y_true, y_pred);
    let hits = t.iter().zip(&p).filter(|(a, b)| a == b).count();
    hits as f64 / t.len().max(1) as f64
}

/// The confusion matrix (`confusion_matrix`): entry `[i, j]` counts the
/// samples whose true label is the `i`-th and predicted label the `j`-th of
/// the labels present in either tensor, sorted (so for classes `0..C` that
/// all occur, row `i` is class `i`). An `[L, L]` i64 tensor.
///
/// ```
/// use deriv_runtime::{metrics::confusion_matrix, tensor};
/// let m = confusion_matrix(&tensor![2, 0, 2, 2, 0, 1], &tensor![0, 0, 2, 2, 0, 2]);
/// assert_eq!(m.to_vec::<i64>(), vec![2, 0, 0, 0, 0, 1, 1, 0, 2]);
/// ```
#[track_caller]
pub fn confusion_matrix(y_true: &Tensor, y_pred: &Tensor) -> Tensor {
    let (t, p) = labels("confusion_matrix", y_true, y_pred);
    let classes = classes_of(&t, &p);
    let k = classes.len();
    let at = |v: i64| classes.binary_search(&v).expect("a label of the inputs");
    let mut m = vec![0i64; k * k];
    for (a, b) in t.iter().zip(&p) {
        m[at(*a) * k + at(*b)] += 1;
    }
    Tensor::from_vec(m, [k, k])
}

/// How [`f1_score`] combines the classes (scikit-learn's `average`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Average {
    /// The F1 of the positive class `1` (scikit-learn's default,
    /// `average="binary"`, `pos_label=1`); the labels must be among 0 and 1.
    Binary,
    /// F1 from the true/false positives and negatives summed over the
    /// classes (for single-label data this equals the accuracy).
    Micro,
    /// The unweighted mean of the per-class F1 scores.
    Macro,
    /// The mean of the per-class F1 scores weighted by each class's count
    /// in `y_true`.
    Weighted,
}

/// The F1 score, `2·tp / (2·tp + fp + fn)`, averaged over the classes as
/// `average` says (`f1_score`). As in scikit-learn, a class with no true
/// and no predicted samples scores 0 (`zero_division=0`, without the
/// warning), and the classes are those present in either tensor.
///
/// Panics with `Average::Binary` when a label other than 0 and 1 occurs.
///
/// ```
/// use deriv_runtime::metrics::{f1_score, Average};
/// use deriv_runtime::tensor;
/// let (y_true, y_pred) = (tensor![0, 1, 1, 0, 1], tensor![0, 1, 0, 0, 1]);
/// assert!((f1_score(&y_true, &y_pred, Average::Binary) - 0.8).abs() < 1e-12);
/// ```
#[track_caller]
pub fn f1_score(y_true: &Tensor, y_pred: &Tensor, average: Average) -> f64 {
    let (t, p) = labels("f1_score", y_true, y_pred);
    let classes = classes_of(&t, &p);
    // Per class: true positives, false positives, false negatives, support.
    let counts: Vec<[usize; 4]> = classes
        .iter()
        .map(|&c| {
            let mut k = [0usize; 4];
            for (&a, &b) in t.iter().zip(&p) {
                k[0] += usize::from(a == c && b == c);
                k[1] += usize::from(a != c && b == c);
                k[2] += usize::from(a == c && b != c);
                k[3] += usize::from(a == c);
            }
            k
        })
        .collect();
    let f1 = |[tp, fp, fnn, _]: [usize; 4]| {
        let d = 2 * tp + fp + fnn;
        if d == 0 {
            0.0
        } else {
            (2 * tp) as f64 / d as f64
        }
    };
    match average {
        Average::Binary => {
            assert!(
                classes.iter().all(|&c| c == 0 || c == 1),
                "f1_score: Average::Binary needs labels 0 and 1 (1 is the positive class), but \
                 the labels are {classes:?}; choose Average::Macro, Micro or Weighted"
            );
            counts
                .iter()
                .zip(&classes)
                .find(|&(_, &c)| c == 1)
                .map_or(0.0, |(k, _)| f1(*k))
        }
        Average::Micro => {
            let sum = counts.iter().fold([0; 4], |mut s, k| {
                for i in 0..4 {
                    s[i] += k[i];
                }
                s
            });
            f1(sum)
        }
        Average::Macro => counts.iter().map(|&k| f1(k)).sum::<f64>() / counts.len().max(1) as f64,
        Average::Weighted => {
            let total: usize = counts.iter().map(|k| k[3]).sum();
            if total == 0 {
                return 0.0;
            }
            counts.iter().map(|&k| f1(k) * k[3] as f64).sum::<f64>() / total as f64
        }
    }
}

/// The mean of `(y_true - y_pred)²` (`mean_squared_error`; for `[n, k]`
/// targets, the mean over the outputs of each output's error, which is the
/// same number).
///
/// ```
/// use deriv_runtime::{metrics::mean_squared_error, tensor};
/// assert_eq!(mean_squared_error(&tensor![1., 2., 3.], &tensor![1., 2., 5.]), 4.0 / 3.0);
/// ```
#[track_caller]
pub fn mean_squared_error(y_true: &Tensor, y_pred: &Tensor) -> f64 {
    let (t, p, _) = values("mean_squared_error", y_true, y_pred);
    t.iter()
        .zip(&p)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / t.len() as f64
}

/// The mean of `|y_true - y_pred|` (`mean_absolute_error`).
///
/// ```
/// use deriv_runtime::{metrics::mean_absolute_error, tensor};
/// assert_eq!(mean_absolute_error(&tensor![1., 2., 3.], &tensor![1., 4., 2.]), 1.0);
/// ```
#[track_caller]
pub fn mean_absolute_error(y_true: &Tensor, y_pred: &Tensor) -> f64 {
    let (t, p, _) = values("mean_absolute_error", y_true, y_pred);
    t.iter().zip(&p).map(|(a, b)| (a - b).abs()).sum::<f64>() / t.len() as f64
}

/// The coefficient of determination R² (`r2_score`): `1 - SS_res / SS_tot`
/// with `SS_res = Σ(y_true - y_pred)²` and `SS_tot = Σ(y_true - mean)²`;
/// 1 is a perfect fit, 0 predicting the mean, below 0 worse than that. For
/// `[n, k]` targets, the mean of the outputs' scores
/// (`multioutput="uniform_average"`). As in scikit-learn, a constant
/// `y_true` scores 1 when predicted exactly and 0 otherwise, and fewer than
/// two samples give NaN.
///
/// ```
/// use deriv_runtime::{metrics::r2_score, tensor};
/// assert_eq!(r2_score(&tensor![1., 2., 3.], &tensor![1., 2., 3.]), 1.0);
/// assert_eq!(r2_score(&tensor![1., 2., 3.], &tensor![2., 2., 2.]), 0.0);
/// ```
#[track_caller]
pub fn r2_score(y_true: &Tensor, y_pred: &Tensor) -> f64 {
    let (t, p, k) = values("r2_score", y_true, y_pred);
    let n = t.len() / k;
    if n < 2 {
        return f64::NAN;
    }
    let score = |j: usize| {
        let col = |v: &[f64]| -> Vec<f64> { (0..n).map(|i| v[i * k + j]).collect() };
        let (t, p) = (col(&t), col(&p));
        let mean = t.iter().sum::<f64>() / n as f64;
        let ss_res: f64 = t.iter().zip(&p).map(|(a, b)| (a - b) * (a - b)).sum();
        let ss_tot: f64 = t.iter().map(|a| (a - mean) * (a - mean)).sum();
        r2_from_sums(ss_res, ss_tot)
    };
    (0..k).map(score).sum::<f64>() / k as f64
}

/// R² from the residual and total sums of squares, with scikit-learn's
/// answer for a constant target (`force_finite=True`).
pub(crate) fn r2_from_sums(ss_res: f64, ss_tot: f64) -> f64 {
    if ss_tot == 0.0 {
        if ss_res == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - ss_res / ss_tot
    }
}

/// Both tensors' values in f64, checked to have one shape (`[n]` and
/// `[n, 1]` mix), and the number of outputs `k`.
#[track_caller]
fn values(op: &str, y_true: &Tensor, y_pred: &Tensor) -> (Vec<f64>, Vec<f64>, usize) {
    let flat = |t: &Tensor| -> Vec<usize> {
        match t.shape() {
            [n, 1] => vec![*n],
            s => s.to_vec(),
        }
    };
    let shape = flat(y_true);
    assert!(
        shape == flat(y_pred) && (1..=2).contains(&shape.len()) && shape[0] > 0,
        "{op}: y_true and y_pred must have one shape, [n] or [n, outputs] with n > 0, got \
         {:?} and {:?}",
        y_true.shape(),
        y_pred.shape()
    );
    let k = shape.get(1).copied().unwrap_or(1);
    (y_true.to_vec::<f64>(), y_pred.to_vec::<f64>(), k.max(1))
}

/// Both tensors as i64 class labels, checked to pair up.
#[track_caller]
fn labels(op: &str, y_true: &Tensor, y_pred: &Tensor) -> (Vec<i64>, Vec<i64>) {
    assert!(
        y_true.numel() == y_pred.numel(),
        "{op}: y_true and y_pred must have one label per sample, got shapes {:?} and {:?}",
        y_true.shape(),
        y_pred.shape()
    );
    let read = |t: &Tensor, name: &str| -> Vec<i64> {
        if !t.dtype().is_float() {
            return t.to_dtype(DType::I64).to_vec::<i64>();
        }
        let v = t.to_vec::<f64>();
        if let Some(x) = v.iter().find(|x| x.fract() != 0.0 || !x.is_finite()) {
            panic!(
                "{op}: {name} holds {x}, which is not a class label; classification metrics \
                 take labels (i64, bool, or whole-number floats): turn scores into labels \
                 first, e.g. logits.argmax_dim(-1, false) or probs.gt_scalar(0.5)"
            );
        }
        v.iter().map(|&x| x as i64).collect()
    };
    (read(y_true, "y_true"), read(y_pred, "y_pred"))
}

/// The labels present in either list, sorted.
fn classes_of(t: &[i64], p: &[i64]) -> Vec<i64> {
    let mut c: Vec<i64> = t.iter().chain(p).copied().collect();
    c.sort_unstable();
    c.dedup();
    c
}
