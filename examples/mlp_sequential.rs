//! A network as a sequence of layers: `network!`'s sequential form, trained
//! on the compile-time path (forward_train + the generated backward).
//!
//! The task: tell points inside a circle of radius 0.7 from points outside it,
//! in [-1, 1]², with Linear(2, 16) -> ReLU -> Linear(16, 1) and the logistic
//! loss on the single logit.
//!
//! Run: `cargo run --release --example mlp_sequential`

use deriv::nn::{Linear, Module, ReLU};
use deriv::{network, no_grad, Generator, Tensor};

network! {
    /// Two inputs, a hidden layer of 16 ReLUs, one logit.
    pub struct Mlp = Linear(2, 16) -> ReLU -> Linear(16, 1);
}

/// Points uniform in [-1, 1]² and labels 1.0 inside the circle, 0.0 outside.
pub fn circle_data(n: usize, gen: &mut Generator) -> (Tensor, Tensor) {
    let x = Tensor::rand_with([n, 2], gen) * 2.0 - 1.0;
    let r2 = x.square().sum_dim(1, true);
    let y = r2.lt_scalar(0.49).to_dtype(deriv::DType::F32);
    (x, y)
}

/// Mean logistic loss of logits `z` against labels `y`, computed stably, and
/// its gradient with respect to `z`: (sigmoid(z) - y) / N.
fn logistic_loss(z: &Tensor, y: &Tensor) -> (f64, Tensor) {
    // log(1 + e^z) - y·z = max(z, 0) - y·z + log(1 + e^-|z|)
    let loss = z.relu() - z * y + (-z.abs()).exp().add(1.0).log();
    let grad = (z.sigmoid() - y) * (1.0 / z.numel() as f64);
    (loss.mean().item(), grad)
}

/// Accuracy of the model's sign on (x, y).
pub fn accuracy(model: &Mlp, x: &Tensor, y: &Tensor) -> f64 {
    let pred = no_grad(|| model.forward(x))
        .gt_scalar(0.0)
        .to_dtype(deriv::DType::F32);
    pred.eq(y).to_dtype(deriv::DType::F32).mean().item()
}

/// Trains with minibatch SGD on the compile-time path; returns held-out accuracy.
pub fn train(verbose: bool) -> f64 {
    deriv::manual_seed(0);
    let mut gen = Generator::new(42);
    let (x, y) = circle_data(2048, &mut gen);
    let (x_test, y_test) = circle_data(512, &mut gen);
    let model = Mlp::default();
    let (batch, lr) = (32, 0.5);
    for epoch in 0..40 {
        let mut total = 0.0;
        for start in (0..x.shape()[0]).step_by(batch) {
            let (xb, yb) = (x.narrow(0, start, batch), y.narrow(0, start, batch));
            let (z, saved) = model.forward_train(&xb);
            let (loss, grad) = logistic_loss(&z, &yb);
            model.backward(saved, &grad, false);
            no_grad(|| {
                for p in model.parameters() {
                    p.add_scaled_(&p.grad().unwrap(), -lr);
                }
            });
            model.zero_grad();
            total += loss;
        }
        if verbose && epoch % 10 == 9 {
            println!(
                "epoch {:>2}: loss {:.4}  train accuracy {:.3}",
                epoch + 1,
                total / (x.shape()[0] / batch) as f64,
                accuracy(&model, &x, &y)
            );
        }
    }
    accuracy(&model, &x_test, &y_test)
}

#[allow(dead_code)]
fn main() {
    let model = Mlp::default();
    for (name, p) in model.named_parameters() {
        println!("{name}: {:?}", p.shape());
    }
    let acc = train(true);
    println!("held-out accuracy: {acc:.3}");
}
