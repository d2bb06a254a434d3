//! Activations: relu, sigmoid, tanh. Each backward is a fused kernel on the
//! saved output, public so the compile-time path calls the same code as the tape.

use super::{float_map, float_zip};
use crate::autograd::{needs_grad, record, Backward, SavedTensor};
use crate::backend::Ew;
use crate::error::OrPanic;
use crate::tensor::Tensor;

/// dL/dx of `y = relu(x)` from the output `y` and dL/dy: `0` where
/// `y <= 0`, else `dy` (PyTorch's `threshold_backward(dy, y, 0)`, so a NaN
/// output passes its gradient through, as there).
pub fn relu_backward(y: &Tensor, dy: &Tensor) -> Tensor {
    float_zip!("relu_backward", dy, y, Ew::ReluBwd, |d, v| if v <= 0.0 {
        0.0
    } else {
        d
    })
    .or_panic()
}

/// dL/dx of `y = sigmoid(x)` from the output `y` and dL/dy: `dy * y * (1 - y)`.
pub fn sigmoid_backward(y: &Tensor, dy: &Tensor) -> Tensor {
    float_zip!("sigmoid_backward", dy, y, Ew::SigmoidBwd, |d, v| d
        * v
        * (1.0 - v))
    .or_panic()
}

/// dL/dx of `y = tanh(x)` from the output `y` and dL/dy: `dy * (1 - y²)`.
pub fn tanh_backward(y: &Tensor, dy: &Tensor) -> Tensor {
    float_zip!("tanh_backward", dy, y, Ew::TanhBwd, |d, v| d
        * (1.0 - v * v))
    .or_panic()
}

struct ActivationBackward {
    y: SavedTensor,
    rule: fn(&Tensor, &Tensor) -> Tensor,
}
impl Backward for ActivationBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some((self.rule)(self.y.get(), g))]
    }
}

impl Tensor {
    fn activation(
        &self,
        name: &'static str,
        y: Tensor,
        rule: fn(&Tensor, &Tensor) -> Tensor,
    ) -> Tensor {
        if !needs_grad(&[self]) {
            return y;
        }
        let saved = SavedTensor::new(&y);
        record(name, &[self], y, || ActivationBackward { y: saved, rule })
    }

    /// Elementwise `max(x, 0)`; NaN stays NaN (and -0.0 stays -0.0), as in
    /// PyTorch, so a NaN entering a network shows in its output.
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let y = tensor![-1., 2., f32::NAN].relu().to_vec::<f32>();
    /// assert_eq!(&y[..2], &[0., 2.]);
    /// assert!(y[2].is_nan());
    /// ```
    pub fn relu(&self) -> Tensor {
        let y = float_map!(self, Ew::Relu, |x| if x < 0.0 { 0.0 } else { x });
        self.activation("ReluBackward", y, relu_backward)
    }

    /// Elementwise logistic function `1 / (1 + e^-x)`, stable for large |x|.
    pub fn sigmoid(&self) -> Tensor {
        let y = float_map!(self, Ew::Sigmoid, |x| if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            let e = x.exp();
            e / (1.0 + e)
        });
        self.activation("SigmoidBackward", y, sigmoid_backward)
    }

    /// Elementwise hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        let y = float_map!(self, Ew::Tanh, |x| x.tanh());
        self.activation("TanhBackward", y, tanh_backward)
    }
}
