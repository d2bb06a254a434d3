//! Feature standardisation (scikit-learn's `StandardScaler`).

use crate::autograd::no_grad;
use crate::tensor::{DType, Tensor};

/// Centres each feature (column) to mean 0 and scales it to standard
/// deviation 1, with statistics fitted on one set of samples and applied to
/// others (scikit-learn's `StandardScaler`).
///
/// As in scikit-learn, the standard deviation is the population one (divisor
/// `n`, `ddof = 0`), the statistics are accumulated in f64, and a feature
/// that is constant (zero variance up to rounding error) gets a scale of 1,
/// so it becomes 0 instead of NaN.
///
/// ```
/// use deriv_runtime::data::StandardScaler;
/// use deriv_runtime::tensor;
/// let train = tensor![[1., 10.], [3., 10.]];
/// let scaler = StandardScaler::fit(&train);
/// assert_eq!(scaler.mean.to_vec::<f32>(), vec![2., 10.]);
/// assert_eq!(scaler.std.to_vec::<f32>(), vec![1., 1.]); // the constant column gets 1
/// assert_eq!(scaler.transform(&tensor![[5., 12.]]).to_vec::<f32>(), vec![3., 2.]);
/// ```
#[derive(Clone, Debug)]
pub struct StandardScaler {
    /// The mean of each feature, `[d]`, in the fitted data's dtype.
    pub mean: Tensor,
    /// The scale of each feature, `[d]`: the population standard deviation,
    /// or 1 for a constant feature.
    pub std: Tensor,
}

impl StandardScaler {
    /// Fits the statistics of `features`, a `[n, d]` float tensor (or `[n]`,
    /// one feature). Records nothing on the autograd tape.
    #[track_caller]
    pub fn fit(features: &Tensor) -> StandardScaler {
        assert!(
            features.dtype().is_float(),
            "StandardScaler::fit: features must be a float tensor, got {}; convert them \
             with .to_dtype(DType::F32)",
            features.dtype()
        );
        assert!(
            features.ndim() >= 1 && features.shape()[0] > 0,
            "StandardScaler::fit: need at least one sample in dimension 0, got shape {:?}",
            features.shape()
        );
        no_grad(|| {
            let n = features.shape()[0] as f64;
            let x = features.to_dtype(DType::F64);
            let mean = x.mean_dim(0, false);
            let var = x.var_dim(0, 0, false);
            // scikit-learn's test for a constant feature: a variance within the
            // rounding error of its computation, var <= n eps var + (n eps mean)^2.
            let n_eps = n * f64::EPSILON;
            let bound = var.mul(n_eps).add(mean.mul(n_eps).square());
            let constant = var.le(&bound);
            let std = Tensor::where_cond(&constant, &var.ones_like(), &var.sqrt());
            StandardScaler {
                mean: mean.to_dtype(features.dtype()),
                std: std.to_dtype(features.dtype()),
            }
        })
    }

    /// `(x - mean) / std`, feature by feature (`x` is `[m, d]` or `[d]`).
    #[track_caller]
    pub fn transform(&self, x: &Tensor) -> Tensor {
        self.check("transform", x);
        x.sub(&self.mean).div(&self.std)
    }

    /// `x * std + mean`: undoes [`transform`](Self::transform).
    #[track_caller]
    pub fn inverse_transform(&self, x: &Tensor) -> Tensor {
        self.check("inverse_transform", x);
        x.mul(&self.std).add(&self.mean)
    }

    /// Fits on `features` and returns the scaler with `features` transformed.
    #[track_caller]
    pub fn fit_transform(features: &Tensor) -> (StandardScaler, Tensor) {
        let s = StandardScaler::fit(features);
        let t = s.transform(features);
        (s, t)
    }

    #[track_caller]
    fn check(&self, op: &str, x: &Tensor) {
        let want = self.mean.shape();
        let got = if x.ndim() == 0 {
            &[][..]
        } else if x.ndim() == want.len() {
            x.shape()
        } else {
            &x.shape()[1..]
        };
        assert!(
            got == want,
            "StandardScaler::{op}: the scaler was fitted on samples of shape {want:?}, but \
             x (shape {:?}) has samples of shape {got:?}",
            x.shape()
        );
    }
}
