//! Analytic gradients against central finite differences, in f64.

use std::fmt;

use crate::random::Generator;
use crate::tensor::{DType, Tensor};

use super::no_grad;

/// Settings for [`gradcheck_opts`]; the defaults are PyTorch's
/// (`eps = 1e-6`, `atol = 1e-5`, `rtol = 1e-3`).
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numerical gradient).
    pub rtol: f64,
    /// Seed of the random projection vector v.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            seed: 0,
        }
    }
}

/// The outcome of a gradient check: the worst element and whether every
/// element was within `atol + rtol * |numerical|`.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// Whether every checked element was within tolerance.
    pub passed: bool,
    /// Index of the input holding the worst element.
    pub worst_input: usize,
    /// Row-major index of the worst element within that input.
    pub worst_index: usize,
    /// The analytic (backward) value there.
    pub analytic: f64,
    /// The finite-difference value there.
    pub numerical: f64,
    /// The largest |analytic - numerical| over all elements.
    pub max_abs_error: f64,
    /// How many input elements were checked.
    pub checked: usize,
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck {}: {} elements checked; worst at input {} element {}: analytic {:.10e} \
             vs numerical {:.10e} (max abs error {:.3e})",
            if self.passed { "passed" } else { "FAILED" },
            self.checked,
            self.worst_input,
            self.worst_index,
            self.analytic,
            self.numerical,
            self.max_abs_error
        )
    }
}

/// Checks the backward of `f` at `inputs` against central finite differences,
/// in f64, with PyTorch's default tolerances.
///
/// Float inputs are converted to f64 leaves that require grad; other inputs
/// (indices, masks) pass through unchanged. A non-scalar output is projected
/// on a random vector v, so this checks vᵀ·J for every input element.
///
/// ```
/// use deriv_runtime::{gradcheck, Tensor};
/// let x = Tensor::randn([3, 4]);
/// let report = gradcheck(|t| t[0].exp().sum_dim(1, false), &[x]);
/// assert!(report.passed, "{report}");
/// ```
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) -> GradcheckReport {
    gradcheck_opts(f, inputs, GradcheckOptions::default())
}

/// [`gradcheck`] with explicit tolerances.
pub fn gradcheck_opts(
    f: impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    opts: GradcheckOptions,
) -> GradcheckReport {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            if t.dtype().is_float() {
                no_grad(|| t.to_dtype(DType::F64).clone_data()).requires_grad_(true)
            } else {
                t.detach()
            }
        })
        .collect();
    let out = f(&leaves);
    let mut rng = Generator::new(opts.seed);
    let v = Tensor::randn_with(out.shape(), &mut rng).to_dtype(DType::F64);
    let v_values = v.to_vec::<f64>();
    out.backward_with(&v.to_dtype(out.dtype()));

    let project = |ts: &[Tensor]| -> f64 {
        let y = no_grad(|| f(ts)).to_vec::<f64>();
        y.iter().zip(&v_values).map(|(a, b)| a * b).sum()
    };

    let mut report = GradcheckReport {
        passed: true,
        worst_input: 0,
        worst_index: 0,
        analytic: 0.0,
        numerical: 0.0,
        max_abs_error: 0.0,
        checked: 0,
    };
    let mut worst_ratio = -1.0;
    for (i, leaf) in leaves.iter().enumerate() {
        if !leaf.dtype().is_float() {
            continue;
        }
        let analytic = leaf
            .grad()
            .map(|g| g.to_vec::<f64>())
            .unwrap_or_else(|| vec![0.0; leaf.numel()]);
        let base = leaf.to_vec::<f64>();
        for j in 0..leaf.numel() {
            let probe = |delta: f64| {
                let mut vals = base.clone();
                vals[j] += delta;
                let mut ts = leaves.clone();
                ts[i] = Tensor::from_vec(vals, leaf.shape());
                project(&ts)
            };
            let numerical = (probe(opts.eps) - probe(-opts.eps)) / (2.0 * opts.eps);
            let err = (analytic[j] - numerical).abs();
            let tol = opts.atol + opts.rtol * numerical.abs();
            let ratio = err / tol;
            // A NaN on either side fails the check.
            if err.is_nan() || tol.is_nan() || err > tol {
                report.passed = false;
            }
            // NaN ratios count as the worst.
            if ratio.is_nan() || ratio > worst_ratio {
                worst_ratio = if ratio.is_nan() { f64::INFINITY } else { ratio };
                report.worst_input = i;
                report.worst_index = j;
                report.analytic = analytic[j];
                report.numerical = numerical;
            }
            if err > report.max_abs_error || err.is_nan() {
                report.max_abs_error = err;
            }
            report.checked += 1;
        }
    }
    report
}
