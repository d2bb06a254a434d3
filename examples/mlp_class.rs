//! A network as a class with a custom forward: `network!`'s class form, with a
//! residual connection, trained through the tape (`loss.backward()` after
//! `forward`), then checked against the compile-time backward.
//!
//! The task: the classic three-arm spiral, 3 classes in the plane.
//!
//! Run: `cargo run --release --example mlp_class`

use deriv::nn::{Linear, Module};
use deriv::{network, no_grad, DType, Generator, Tensor};

network! {
    /// Two inputs, two hidden layers with a residual connection, log-probabilities of 3 classes.
    pub struct Net {
        fc1: Linear(2, 64),
        fc2: Linear(64, 64),
        out: Linear(64, 3),
    }
    fn forward(x) {
        let h1 = relu(fc1(x));
        let h2 = relu(fc2(h1)) + h1;
        log_softmax(out(h2), 1)
    }
}

/// `n` points per class on three interleaved spiral arms, with labels.
pub fn spiral_data(n: usize, gen: &mut Generator) -> (Tensor, Tensor) {
    let mut xs = Vec::with_capacity(3 * n * 2);
    let mut ys = Vec::with_capacity(3 * n);
    for class in 0..3 {
        for i in 0..n {
            let r = i as f64 / n as f64;
            let t = class as f64 * 4.0 + 4.0 * r + gen.normal() * 0.2;
            xs.push((r * t.sin()) as f32);
            xs.push((r * t.cos()) as f32);
            ys.push(class as i64);
        }
    }
    // Shuffle so minibatches mix the classes.
    let order = gen.permutation(3 * n);
    let x = Tensor::from_vec(xs, [3 * n, 2]);
    let y = Tensor::from_vec(ys, [3 * n]);
    let idx = Tensor::from_vec(order.into_iter().map(|i| i as i64).collect(), [3 * n]);
    (x.index_select(0, &idx), y.index_select(0, &idx))
}

/// Negative log-likelihood of the true classes, averaged.
fn nll(logp: &Tensor, y: &Tensor) -> Tensor {
    -logp.gather(1, &y.unsqueeze(1)).mean()
}

/// Fraction of rows whose most likely class is the label.
pub fn accuracy(model: &Net, x: &Tensor, y: &Tensor) -> f64 {
    let pred = no_grad(|| model.forward(x)).argmax_dim(1, false);
    pred.eq(y).to_dtype(DType::F32).mean().item()
}

/// Trains on the tape with minibatch SGD; returns held-out accuracy.
pub fn train(verbose: bool) -> f64 {
    deriv::manual_seed(0);
    let mut gen = Generator::new(7);
    let (x, y) = spiral_data(300, &mut gen);
    let (x_test, y_test) = spiral_data(100, &mut gen);
    let model = Net::default();
    let (batch, lr) = (30, 0.2);
    for epoch in 0..300 {
        for start in (0..x.shape()[0]).step_by(batch) {
            let (xb, yb) = (x.narrow(0, start, batch), y.narrow(0, start, batch));
            let loss = nll(&model.forward(&xb), &yb);
            loss.backward();
            no_grad(|| {
                for p in model.parameters() {
                    p.add_scaled_(&p.grad().unwrap(), -lr);
                }
            });
            model.zero_grad();
        }
        if verbose && epoch % 50 == 49 {
            let loss = no_grad(|| nll(&model.forward(&x), &y)).item();
            println!(
                "epoch {:>3}: loss {loss:.4}  train accuracy {:.3}",
                epoch + 1,
                accuracy(&model, &x, &y)
            );
        }
    }
    accuracy(&model, &x_test, &y_test)
}

/// The largest difference between the tape's parameter gradients and the
/// compile-time backward's, on one batch.
pub fn paths_difference() -> f64 {
    let mut gen = Generator::new(1);
    let (x, y) = spiral_data(20, &mut gen);
    let model = Net::default();
    nll(&model.forward(&x), &y).backward();
    let tape: Vec<Vec<f32>> = model
        .parameters()
        .iter()
        .map(|p| p.grad().unwrap().to_vec())
        .collect();
    model.zero_grad();
    let (logp, saved) = model.forward_train(&x);
    // d nll / d logp: -1/N at each row's true class.
    let n = x.shape()[0];
    let grad = Tensor::zeros(logp.shape()).scatter_add(
        1,
        &y.unsqueeze(1),
        &Tensor::full([n, 1], -1.0 / n as f64),
    );
    model.backward(saved, &grad, false);
    let mut worst: f64 = 0.0;
    for (p, t) in model.parameters().iter().zip(&tape) {
        for (a, b) in p.grad().unwrap().to_vec::<f32>().iter().zip(t) {
            worst = worst.max((a - b).abs() as f64);
        }
    }
    worst
}

#[allow(dead_code)]
fn main() {
    let model = Net::default();
    for (name, p) in model.named_parameters() {
        println!("{name}: {:?}", p.shape());
    }
    println!(
        "tape vs compile-time gradients on one batch: max difference {:.1e}",
        paths_difference()
    );
    let acc = train(true);
    println!("held-out accuracy: {acc:.3}");
}
