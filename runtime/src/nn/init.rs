//! Parameter initialisation in place, as `torch.nn.init` (run under `no_grad`).

use crate::autograd::no_grad;
use crate::tensor::Tensor;

/// Fills with U(low, high).
pub fn uniform_(t: &Tensor, low: f64, high: f64) {
    no_grad(|| {
        t.uniform_(low, high);
    });
}

/// Fills with N(mean, std²).
pub fn normal_(t: &Tensor, mean: f64, std: f64) {
    no_grad(|| {
        t.normal_(mean, std);
    });
}

/// Fills with zeros.
pub fn zeros_(t: &Tensor) {
    no_grad(|| {
        t.zero_();
    });
}

/// `fan_in` (inputs per output unit) of a weight: its second dim times the
/// receptive field, as PyTorch computes it.
pub fn fan_in(t: &Tensor) -> usize {
    if t.ndim() < 2 {
        return t.numel().max(1);
    }
    t.shape()[1] * t.shape()[2..].iter().product::<usize>()
}

/// He/Kaiming uniform init for a leaky-ReLU slope `a`:
/// U(-b, b) with `b = sqrt(2 / (1 + a²)) · sqrt(3 / fan_in)`.
/// `nn.Linear` uses `a = √5`, which gives `b = 1/√fan_in`.
pub fn kaiming_uniform_(t: &Tensor, a: f64) {
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let bound = gain * (3.0 / fan_in(t) as f64).sqrt();
    uniform_(t, -bound, bound);
}

/// Glorot/Xavier uniform init: U(-b, b) with `b = sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform_(t: &Tensor) {
    let fan_out = t.shape().first().copied().unwrap_or(1);
    let bound = (6.0 / (fan_in(t) + fan_out) as f64).sqrt();
    uniform_(t, -bound, bound);
}
