//! Helpers the runtime's unit tests share.

use crate::tensor::Tensor;

/// The tensor's values as f64.
pub(crate) fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec::<f64>()
}

/// Every element of `got` within `tol` of `want`, relative to `1 + |want|`;
/// `what` names the comparison in the message.
#[track_caller]
pub(crate) fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what} [{i}]: {g} vs {w}"
        );
    }
}
