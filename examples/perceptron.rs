//! The one-layer perceptron of the seed tutorial, written by hand: is a
//! breast tumour malignant or benign, from 30 features of its cell nuclei?
//!
//! `W` (30x1) and `b` are leaf tensors; the model is `sigmoid(X·W + b)`,
//! trained with the logistic loss (`binary_cross_entropy_with_logits`, which
//! folds the sigmoid in, stably) by full-batch gradient descent, updating the
//! parameters in place under `no_grad`.
//!
//! Run: `cargo run --release --example perceptron`

use deriv::nn::functional::binary_cross_entropy_with_logits;
use deriv::prelude::*;

/// Trains on 80% of the data; returns the accuracy on the held-out 20%.
pub fn train(verbose: bool) -> f64 {
    manual_seed(0);
    // Standardised with the training split's statistics.
    let (train, test) = deriv::datasets::breast_cancer().standardized_split(0.2, 42);
    let x = &train.features;
    let y = train.targets.to_dtype(DType::F32).unsqueeze(1);

    let w = (Tensor::randn([30, 1]) * 0.01).requires_grad_(true);
    let b = Tensor::zeros([1]).requires_grad_(true);
    let lr = 0.5;
    for epoch in 0..300 {
        let logits = x.matmul(&w) + &b;
        let loss = binary_cross_entropy_with_logits(&logits, &y);
        loss.backward();
        no_grad(|| {
            w.sub_(&(w.grad().unwrap() * lr));
            b.sub_(&(b.grad().unwrap() * lr));
        });
        w.grad().unwrap().zero_();
        b.grad().unwrap().zero_();
        if verbose && epoch % 50 == 0 {
            println!("epoch {epoch:3}  loss {:.4}", loss.item());
        }
    }

    // Class 1 (benign) when sigmoid(z) > 0.5, i.e. z > 0.
    let logits = no_grad(|| test.features.matmul(&w) + &b);
    let pred = logits.squeeze_dim(1).gt_scalar(0.0).to_dtype(DType::I64);
    pred.eq(&test.targets).to_dtype(DType::F64).mean().item()
}

#[allow(dead_code)]
fn main() {
    let acc = train(true);
    println!("accuracy: {acc:.3}");
}
