//! Example 0 of the PyTorch tutorials: minimise
//! f(x1, x2) = (x1 - 3)² + (x2 + 2)² from (0, 0) by gradient descent with
//! autograd, updating the leaves in place under `no_grad`.
//!
//! Run: `cargo run --release --example gradient_descent`

use deriv::prelude::*;

/// Runs the descent and returns the final point; prints the path when `verbose`.
pub fn descend(steps: usize, lr: f64, verbose: bool) -> (f64, f64) {
    let x1 = Tensor::scalar(0.0f32).requires_grad_(true);
    let x2 = Tensor::scalar(0.0f32).requires_grad_(true);
    for step in 0..steps {
        let f = (&x1 - 3.0).pow(2.0) + (&x2 + 2.0).pow(2.0);
        f.backward();
        if verbose && (step < 5 || step % 10 == 9) {
            println!(
                "step {:>3}: x1 = {:>8.5}  x2 = {:>8.5}  f = {:>10.6}  grad = ({:>8.5}, {:>8.5})",
                step + 1,
                x1.item(),
                x2.item(),
                f.item(),
                x1.grad().unwrap().item(),
                x2.grad().unwrap().item()
            );
        }
        no_grad(|| {
            x1.sub_(&(x1.grad().unwrap() * lr));
            x2.sub_(&(x2.grad().unwrap() * lr));
        });
        x1.grad().unwrap().zero_();
        x2.grad().unwrap().zero_();
    }
    (x1.item(), x2.item())
}

#[allow(dead_code)]
fn main() {
    let (x1, x2) = descend(100, 0.1, true);
    println!("minimum found at ({x1:.4}, {x2:.4}); the true minimum is (3, -2)");
}
