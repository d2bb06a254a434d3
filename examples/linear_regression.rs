//! Linear regression by minibatch gradient descent: learn W (3 x 1) and b from
//! noisy data y = x·W_true + b_true + ε, with autograd and in-place updates.
//!
//! Run: `cargo run --release --example linear_regression`

use deriv::prelude::*;

/// Fits W and b and returns (learnt W, learnt b, true W, true b).
pub fn fit(verbose: bool) -> (Vec<f32>, f32, Vec<f32>, f32) {
    let mut gen = Generator::new(0);
    let n = 1024;
    let w_true = tensor![[2.0], [-3.4], [0.5]];
    let b_true = 4.2;
    let x = Tensor::randn_with([n, 3], &mut gen);
    let noise = Tensor::randn_with([n, 1], &mut gen) * 0.01;
    let y = x.matmul(&w_true) + b_true + noise;

    let w = (Tensor::randn_with([3, 1], &mut gen) * 0.01).requires_grad_(true);
    let b = Tensor::zeros([1]).requires_grad_(true);
    let (batch, lr) = (32, 0.03);
    for epoch in 0..5 {
        let order = Tensor::randperm(n);
        for start in (0..n).step_by(batch) {
            let idx = order.narrow(0, start, batch.min(n - start));
            let (xb, yb) = (x.index_select(0, &idx), y.index_select(0, &idx));
            let loss = (xb.matmul(&w) + &b - &yb).square().mean();
            loss.backward();
            no_grad(|| {
                w.sub_(&(w.grad().unwrap() * lr));
                b.sub_(&(b.grad().unwrap() * lr));
            });
            w.zero_grad();
            b.zero_grad();
        }
        if verbose {
            let loss = no_grad(|| (x.matmul(&w) + &b - &y).square().mean());
            println!("epoch {}: mean squared error {:.6}", epoch + 1, loss.item());
        }
    }
    (
        w.to_vec::<f32>(),
        b.item() as f32,
        w_true.to_vec::<f32>(),
        b_true as f32,
    )
}

#[allow(dead_code)]
fn main() {
    let (w, b, w_true, b_true) = fit(true);
    for (i, (l, t)) in w.iter().zip(&w_true).enumerate() {
        println!("W[{i}]: learnt {l:>8.4}   true {t:>8.4}");
    }
    println!("b   : learnt {b:>8.4}   true {b_true:>8.4}");
}
