//! `Linear`: y = x·Wᵀ + b.

use super::module::{accumulate_grad, grad_accumulated, join_name};
use super::{init, Differentiable, Forward, Module, TrainStep};
use crate::autograd::{no_grad, NoGradGuard};
use crate::backend::Device;
use crate::ops::into;
use crate::tensor::{Tensor, TensorOptions};

/// A fully connected layer, `y = x·Wᵀ + b` (`nn.Linear`): weight of shape
/// `[out_features, in_features]`, bias `[out_features]`, both initialised from
/// U(-1/√in, 1/√in) like PyTorch.
///
/// ```
/// use deriv_runtime::nn::{Forward, Linear};
/// use deriv_runtime::{Device, Tensor};
/// let fc = Linear::new(784, 10, &Device::Cpu);
/// let y = fc.forward(&Tensor::randn([64, 784]));
/// assert_eq!(y.shape(), &[64, 10]);
/// ```
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has one.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with a bias, its parameters created on `device`.
    pub fn new(in_features: usize, out_features: usize, device: &Device) -> Self {
        Self::with_bias(in_features, out_features, true, device)
    }

    /// A layer with or without a bias.
    pub fn with_bias(in_features: usize, out_features: usize, bias: bool, device: &Device) -> Self {
        let opts = TensorOptions::new().device(device);
        let weight = Tensor::zeros_opts([out_features, in_features], &opts);
        init::kaiming_uniform_(&weight, 5f64.sqrt());
        let bias = bias.then(|| {
            let b = Tensor::zeros_opts([out_features], &opts);
            let bound = if in_features > 0 {
                1.0 / (in_features as f64).sqrt()
            } else {
                0.0
            };
            init::uniform_(&b, -bound, bound);
            b.requires_grad_(true)
        });
        Linear {
            weight: weight.requires_grad_(true),
            bias,
        }
    }

    /// Inputs per sample.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Outputs per sample.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Linear {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        f(&join_name(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(&join_name(prefix, "bias"), b);
        }
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(&join_name(prefix, "weight"), &mut self.weight);
        if let Some(b) = &mut self.bias {
            f(&join_name(prefix, "bias"), b);
        }
    }
}

impl Forward for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        super::functional::linear(x, &self.weight, self.bias.as_ref())
    }
}

impl Differentiable for Linear {
    /// The input.
    type Saved = Tensor;
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Maps {
        input: 0,
        output: 1,
    };

    fn forward_train(&self, x: &Tensor) -> (Tensor, Tensor) {
        let y = no_grad(|| self.forward(x));
        (y, x.detach())
    }

    fn backward(&self, x: Tensor, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        no_grad(|| {
            let (dx, dw, db) = crate::vjp::linear(grad_out, &x, &self.weight, input_grad);
            accumulate_grad(&self.weight, dw);
            if let Some(b) = &self.bias {
                accumulate_grad(b, db);
            }
            dx
        })
    }
}

/// The buffers a runtime layer keeps between [`TrainStep`] steps: its input
/// (a handle, when backward reads it), its output, an auxiliary tensor (a
/// dropout mask) and its input gradient.
#[derive(Default)]
pub struct LayerWorkspace {
    pub(crate) input: Option<Tensor>,
    pub(crate) out: Option<Tensor>,
    pub(crate) aux: Option<Tensor>,
    pub(crate) dx: Option<Tensor>,
    pub(crate) shape: Vec<usize>,
}

/// `param`'s `.grad()` when the in-place kernels can add into it (contiguous,
/// of the parameter's shape and dtype); a zeroed one is installed when there
/// is none yet (the first step). `None`: take the allocating path.
pub(crate) fn grad_buffer(param: &Tensor) -> Option<Tensor> {
    let mut slot = param.grad_slot();
    match &*slot {
        Some(g) => (g.is_contiguous() && g.dtype() == param.dtype() && g.shape() == param.shape())
            .then(|| g.clone()),
        None => {
            let g = no_grad(|| param.zeros_like());
            *slot = Some(g.clone());
            Some(g)
        }
    }
}

impl TrainStep for Linear {
    type Workspace = LayerWorkspace;

    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LayerWorkspace) -> &'w Tensor {
        let _guard = NoGradGuard::new();
        let b = self.bias.as_ref();
        if !into::linear_supported(x, &self.weight, b) {
            let (y, saved) = self.forward_train(x);
            ws.input = Some(saved);
            return ws.out.insert(y);
        }
        let w = &self.weight;
        let out = into::slot_last(
            &mut ws.out,
            x.shape(),
            w.shape()[0],
            w.dtype(),
            w.device(),
            &[x],
        );
        into::linear_into(out, x, w, b);
        ws.input = Some(x.clone());
        out
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut LayerWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let _guard = NoGradGuard::new();
        let x = super::dsl::get(&ws.input);
        let (w, b) = (&self.weight, self.bias.as_ref());
        let fast =
            into::linear_supported(x, w, b) && into::matrix_ok(grad_out, w.shape()[0], w.dtype());
        let dw = if fast { grad_buffer(w) } else { None };
        let db = match (fast, b) {
            (true, Some(b)) => grad_buffer(b).map(Some),
            (true, None) => Some(None),
            (false, _) => None,
        };
        let (Some(dw), Some(db)) = (dw, db) else {
            let (dx, dw, db) = crate::vjp::linear(grad_out, x, w, input_grad);
            accumulate_grad(w, dw);
            if let Some(b) = b {
                accumulate_grad(b, db);
            }
            ws.dx = dx;
            return ws.dx.as_ref();
        };
        let dx = if input_grad {
            Some(into::slot(
                &mut ws.dx,
                x.shape(),
                w.dtype(),
                w.device(),
                &[x, grad_out],
            ))
        } else {
            None
        };
        into::linear_backward_into(grad_out, x, w, &dw, db.as_ref(), dx);
        grad_accumulated(w);
        if let Some(b) = b {
            grad_accumulated(b);
        }
        if input_grad {
            ws.dx.as_ref()
        } else {
            None
        }
    }
}
