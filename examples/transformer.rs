//! A small transformer encoder learns to sort: given 6 digits (0-9), it
//! outputs them in ascending order, one class per position. Token and
//! position embeddings, two `TransformerEncoderLayer`s and a linear read-out,
//! written as a struct with a custom forward (PyTorch's `nn.Module` style)
//! and trained on the tape with Adam on freshly drawn sequences. Prints the
//! share of held-out sequences sorted exactly, last.
//!
//! Run: `cargo run --release --example transformer`

use deriv::nn::{
    functional as F, Embedding, Forward, Module, TransformerEncoderLayer,
    TransformerEncoderLayerOptions,
};
use deriv::prelude::*;

/// Digits per sequence.
pub const LEN: usize = 6;

/// Embeddings, two encoder layers, a read-out over the 10 digits.
#[derive(Module)]
pub struct Sorter {
    tokens: Embedding,
    positions: Embedding,
    encoder1: TransformerEncoderLayer,
    encoder2: TransformerEncoderLayer,
    out: Linear,
}

impl Sorter {
    pub fn new(device: &Device) -> Self {
        let opts = TransformerEncoderLayerOptions {
            dim_feedforward: 128,
            dropout: 0.0,
            batch_first: true,
            ..Default::default()
        };
        Sorter {
            tokens: Embedding::new(10, 64, device),
            positions: Embedding::new(LEN, 64, device),
            encoder1: TransformerEncoderLayer::with_options(64, 4, &opts, device),
            encoder2: TransformerEncoderLayer::with_options(64, 4, &opts, device),
            out: Linear::new(64, 10, device),
        }
    }
}

impl Forward for Sorter {
    /// `[N, LEN]` digits (i64) to `[N, LEN, 10]` logits.
    fn forward(&self, x: &Tensor) -> Tensor {
        let positions = Tensor::arange(0i64, LEN as i64, 1);
        let h = self.tokens.forward(x) + self.positions.forward(&positions);
        self.out
            .forward(&self.encoder2.forward(&self.encoder1.forward(&h)))
    }
}

/// `n` sequences of random digits and the same sorted.
pub fn batch(n: usize, gen: &mut Generator) -> (Tensor, Tensor) {
    let digits: Vec<i64> = (0..n * LEN).map(|_| gen.int_range(0, 10)).collect();
    let mut sorted = digits.clone();
    sorted.chunks_mut(LEN).for_each(<[i64]>::sort_unstable);
    (
        Tensor::from_vec(digits, [n, LEN]),
        Tensor::from_vec(sorted, [n, LEN]),
    )
}

/// The share of `x`'s sequences the model sorts exactly.
pub fn sorted_share(model: &Sorter, x: &Tensor, sorted: &Tensor) -> f64 {
    let predicted = no_grad(|| model.forward(x)).argmax_dim(-1, false);
    let right = predicted.eq(sorted).to_dtype(DType::F64).sum_dim(1, false);
    right
        .eq_scalar(LEN as f64)
        .to_dtype(DType::F64)
        .mean()
        .item()
}

/// Trains for `steps` steps of 64 sequences; returns the share of 1000
/// held-out sequences sorted exactly.
pub fn train(steps: usize, verbose: bool) -> f64 {
    manual_seed(0);
    let mut gen = Generator::new(1);
    let model = Sorter::new(&Device::Cpu);
    let mut opt = Adam::new(model.parameters(), 1e-3);
    let (test_x, test_y) = batch(1000, &mut Generator::new(2));
    for step in 1..=steps {
        let (x, y) = batch(64, &mut gen);
        let logits = model.forward(&x);
        let loss = F::cross_entropy(&logits.reshape([-1, 10]), &y.reshape([-1]));
        opt.zero_grad();
        loss.backward();
        opt.step();
        if verbose && step % 100 == 0 {
            let share = sorted_share(&model, &test_x, &test_y);
            println!("step {step}  loss {:.4}  sorted {share:.3}", loss.item());
        }
    }
    sorted_share(&model, &test_x, &test_y)
}

#[allow(dead_code)]
fn main() {
    let acc = train(600, true);
    println!("accuracy: {acc:.3}");
}
