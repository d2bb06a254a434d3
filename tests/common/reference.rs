//! What the tests against PyTorch's values share: the reference scripts'
//! deterministic inputs and the comparisons.

use deriv::Tensor;

/// The reference scripts' deterministic tensor (`det` in
/// tests/data/reference_util.py): element `k` is `((k·a + b) mod m)/scale − shift`, f64.
pub fn det(shape: &[usize], a: usize, b: usize, m: usize, scale: f64, shift: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|k| ((k * a + b) % m) as f64 / scale - shift)
        .collect();
    Tensor::from_vec(v, shape)
}

/// `t`'s elements are PyTorch's `want`, each within `tol`.
#[track_caller]
pub fn assert_values(what: &str, t: &Tensor, want: &[f64], tol: f64) {
    let got = t.to_vec::<f64>();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{k}]: {g} vs PyTorch's {w}");
    }
}

/// The largest elementwise difference of two tensors of one shape.
#[track_caller]
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec::<f64>()
        .iter()
        .zip(b.to_vec::<f64>())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
