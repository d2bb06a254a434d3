//! The perceptron again, the way a PyTorch user writes it: an `nn::Linear`
//! layer, `BCEWithLogitsLoss`, the `SGD` optimizer and a `DataLoader` of
//! shuffled minibatches of 16.
//!
//! Run: `cargo run --release --example classification`

use deriv::data::DataLoader;
use deriv::nn::{BCEWithLogitsLoss, Forward, Linear, Loss, Module};
use deriv::optim::{Optimizer, SGD};
use deriv::prelude::*;

/// Trains on 80% of the breast-cancer data; returns the held-out accuracy.
pub fn train(verbose: bool) -> f64 {
    manual_seed(0);
    let (train, test) = deriv::datasets::breast_cancer().standardized_split(0.2, 42);
    let model = Linear::new(30, 1, &Device::Cpu);
    let loss_fn = BCEWithLogitsLoss::new();
    let mut optimizer = SGD::new(model.parameters(), 0.05).momentum(0.9);
    let loader = DataLoader::new(train, 16).shuffle(true).seed(0);

    for epoch in 0..20 {
        let mut total = 0.0;
        for (x, y) in &loader {
            let logits = model.forward(&x);
            let loss = loss_fn.forward(&logits, &y.to_dtype(DType::F32).unsqueeze(1));
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
            total += loss.item();
        }
        if verbose && epoch % 5 == 0 {
            println!(
                "epoch {epoch:2}  mean batch loss {:.4}",
                total / loader.len() as f64
            );
        }
    }

    let logits = no_grad(|| model.forward(&test.features));
    let pred = logits.squeeze_dim(1).gt_scalar(0.0).to_dtype(DType::I64);
    pred.eq(&test.targets).to_dtype(DType::F64).mean().item()
}

#[allow(dead_code)]
fn main() {
    let acc = train(true);
    println!("accuracy: {acc:.3}");
}
