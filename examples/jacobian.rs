//! Vector-Jacobian products: for y = f(x) with x, y vectors, `y.backward_with(&v)`
//! puts vᵀ·J into `x.grad()`. With v = each unit vector in turn this recovers the
//! whole Jacobian, row by row, which we check against the analytic one.
//!
//! Run: `cargo run --release --example jacobian`

use deriv::prelude::*;

/// f(x) = (x0² x1, 5 x0 + x1 x2, exp(x2) - x0), a map R³ → R³.
fn f(x: &Tensor) -> Tensor {
    let (x0, x1, x2) = (x.select(0, 0), x.select(0, 1), x.select(0, 2));
    Tensor::stack(&[&x0 * &x0 * &x1, &x0 * 5.0 + &x1 * &x2, x2.exp() - &x0], 0)
}

/// The Jacobian of `f` worked out by hand.
fn analytic_jacobian(x: &[f64]) -> [[f64; 3]; 3] {
    let (a, b, c) = (x[0], x[1], x[2]);
    [[2.0 * a * b, a * a, 0.0], [5.0, c, b], [-1.0, 0.0, c.exp()]]
}

/// Returns the largest |autograd - analytic| over the Jacobian; prints both when `verbose`.
pub fn max_error(verbose: bool) -> f64 {
    let point = [1.5, -2.0, 0.5];
    let x = Tensor::from_vec(point.to_vec(), [3]).requires_grad_(true);
    let y = f(&x);
    let exact = analytic_jacobian(&point);
    let mut worst: f64 = 0.0;
    for (i, row) in exact.iter().enumerate() {
        let mut v = vec![0.0f64; 3];
        v[i] = 1.0;
        x.set_grad(None);
        y.backward_opts(Some(&Tensor::from_vec(v, [3])), true);
        let got = x.grad().unwrap().to_vec::<f64>();
        if verbose {
            println!("row {i}: vᵀJ = {got:>8.4?}   analytic = {row:>8.4?}");
        }
        for (g, e) in got.iter().zip(row) {
            worst = worst.max((g - e).abs());
        }
    }
    // A general v gives the same combination of rows.
    let v = [0.3, -1.0, 2.0];
    x.set_grad(None);
    y.backward_with(&Tensor::from_vec(v.to_vec(), [3]));
    let got = x.grad().unwrap().to_vec::<f64>();
    for (j, g) in got.iter().enumerate() {
        let e: f64 = (0..3).map(|i| v[i] * exact[i][j]).sum();
        worst = worst.max((g - e).abs());
    }
    if verbose {
        println!("v = {v:?}: vᵀJ = {got:.4?}");
    }
    worst
}

#[allow(dead_code)]
fn main() {
    let err = max_error(true);
    println!("largest difference from the analytic Jacobian: {err:.2e}");
}
