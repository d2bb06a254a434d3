//! The functional forms of the layers (`torch.nn.functional`), on the tape.

use crate::tensor::{DType, Tensor};

/// `max(x, 0)` elementwise.
pub fn relu(x: &Tensor) -> Tensor {
    x.relu()
}

/// The logistic function elementwise.
pub fn sigmoid(x: &Tensor) -> Tensor {
    x.sigmoid()
}

/// Hyperbolic tangent elementwise.
pub fn tanh(x: &Tensor) -> Tensor {
    x.tanh()
}

/// Softmax along `dim`.
pub fn softmax(x: &Tensor, dim: isize) -> Tensor {
    x.softmax(dim)
}

/// Log-softmax along `dim`.
pub fn log_softmax(x: &Tensor, dim: isize) -> Tensor {
    x.log_softmax(dim)
}

/// `x·Wᵀ + b` for a weight of shape `[out, in]` (`F.linear`).
///
/// ```
/// use deriv_runtime::{nn::functional::linear, tensor};
/// let y = linear(&tensor![[1., 2.]], &tensor![[1., 0.], [0., 1.], [1., 1.]], Some(&tensor![0., 0., 1.]));
/// assert_eq!(y.to_vec::<f32>(), vec![1., 2., 4.]);
/// ```
#[track_caller]
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let y = x.matmul(&weight.t());
    match bias {
        Some(b) => y + b,
        None => y,
    }
}

/// The mask dropout multiplies by: 0 with probability `p`, else `1/(1-p)`,
/// drawn from the global generator.
pub fn dropout_mask(x: &Tensor, p: f64) -> Tensor {
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let keep = Tensor::rand(x.shape()).ge_scalar(p).to(&x.device());
    let dtype = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    keep.to_dtype(dtype) * scale
}

/// Dropout (`F.dropout`): the identity unless `training`.
pub fn dropout(x: &Tensor, p: f64, training: bool) -> Tensor {
    if !training || p == 0.0 {
        return x.clone();
    }
    x * &dropout_mask(x, p)
}
