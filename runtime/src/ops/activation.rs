//! The public backward kernels of relu, sigmoid and tanh (their ops live in
//! `ops/unary/activations.rs`): `vjp::relu` and friends, kept for callers of
//! the allocating rules.

use super::unary::{derivative_of, Relu, Sigmoid, Tanh};
use crate::tensor::Tensor;

/// dL/dx of `y = relu(x)` from the output `y` and dL/dy (`y <= 0 ? 0 : dy`).
pub fn relu_backward(y: &Tensor, dy: &Tensor) -> Tensor {
    derivative_of(&Relu, dy, y)
}

/// dL/dx of `y = sigmoid(x)` from the output `y` and dL/dy: `dy * (1 - y) * y`.
pub fn sigmoid_backward(y: &Tensor, dy: &Tensor) -> Tensor {
    derivative_of(&Sigmoid, dy, y)
}

/// dL/dx of `y = tanh(x)` from the output `y` and dL/dy: `dy * (1 - y²)`.
pub fn tanh_backward(y: &Tensor, dy: &Tensor) -> Tensor {
    derivative_of(&Tanh, dy, y)
}
