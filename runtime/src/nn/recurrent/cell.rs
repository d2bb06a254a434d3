//! The recurrent cells: one step of `RNN`, `LSTM` or `GRU` as a layer.

#![allow(clippy::upper_case_acronyms)] // PyTorch's names

use std::marker::PhantomData;

use super::{recurrent_params, step, GruKind, LstmKind, RecurrentOptions, RecurrentState, RnnKind};
use crate::autograd::try_apply;
use crate::backend::Device;
use crate::error::{Error, OrPanic, Result};
use crate::nn::module::join_name;
use crate::nn::{Forward, Module};
use crate::ops::{self, CellKind};
use crate::tensor::Tensor;

/// One recurrent step as a layer: `nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`
/// are [`RNNCell`], [`LSTMCell`] and [`GRUCell`], with parameters
/// `weight_ih` `[gates·H, input]`, `weight_hh` `[gates·H, H]`, `bias_ih`,
/// `bias_hh` (U(-1/√H, 1/√H)). [`forward_with`](Self::forward_with) takes
/// `x` `[N, input]` (or `[input]`) and the state, and returns the new state;
/// [`Forward::forward`] returns the new `h` from a zero state.
///
/// ```
/// use deriv_runtime::nn::LSTMCell;
/// use deriv_runtime::{Device, Tensor};
/// let cell = LSTMCell::new(3, 4, &Device::Cpu);
/// let x = Tensor::randn([5, 2, 3]); // 5 steps, batch 2
/// let mut state = (Tensor::zeros([2, 4]), Tensor::zeros([2, 4]));
/// for t in 0..5 {
///     state = cell.forward_with(&x.select(0, t), Some(state));
/// }
/// assert_eq!(state.0.shape(), &[2, 4]);
/// ```
pub struct RecurrentCellLayer<K: RecurrentState> {
    /// `[gates·H, input]`.
    pub weight_ih: Tensor,
    /// `[gates·H, H]`.
    pub weight_hh: Tensor,
    /// `[gates·H]`, when the cell has biases.
    pub bias_ih: Option<Tensor>,
    /// `[gates·H]`, when the cell has biases.
    pub bias_hh: Option<Tensor>,
    /// The features of `x`.
    pub input_size: usize,
    /// The features of `h`.
    pub hidden_size: usize,
    cell: CellKind,
    kind: PhantomData<K>,
}

/// `nn.RNNCell`.
pub type RNNCell = RecurrentCellLayer<RnnKind>;
/// `nn.LSTMCell`, whose state is `(h, c)`.
pub type LSTMCell = RecurrentCellLayer<LstmKind>;
/// `nn.GRUCell`.
pub type GRUCell = RecurrentCellLayer<GruKind>;

impl<K: RecurrentState> RecurrentCellLayer<K> {
    /// A cell with biases (and, for an RNN cell, tanh), its parameters on `device`.
    pub fn new(input_size: usize, hidden_size: usize, device: &Device) -> Self {
        Self::with_options(
            input_size,
            hidden_size,
            &RecurrentOptions::default(),
            device,
        )
    }

    /// A cell without biases or (RNN) with relu; `num_layers` and
    /// `batch_first` do not apply to a cell.
    pub fn with_options(
        input_size: usize,
        hidden_size: usize,
        options: &RecurrentOptions,
        device: &Device,
    ) -> Self {
        let cell = options.cell::<K>();
        let [w_ih, w_hh, bias_ih, bias_hh] =
            recurrent_params(cell.gates(), input_size, hidden_size, options.bias, device);
        RecurrentCellLayer {
            weight_ih: w_ih.expect("made"),
            weight_hh: w_hh.expect("made"),
            bias_ih,
            bias_hh,
            input_size,
            hidden_size,
            cell,
            kind: PhantomData,
        }
    }

    /// The new state from `x` and `state` (zeros when `None`).
    #[track_caller]
    pub fn forward_with(&self, x: &Tensor, state: Option<K::State>) -> K::State {
        self.try_forward_with(x, state).or_panic()
    }

    /// Fallible [`forward_with`](Self::forward_with).
    pub fn try_forward_with(&self, x: &Tensor, state: Option<K::State>) -> Result<K::State> {
        let name = || format!("{}Cell({}, {})", K::NAME, self.input_size, self.hidden_size);
        let unbatched = x.ndim() == 1;
        if !matches!(x.ndim(), 1 | 2) || x.shape()[x.ndim() - 1] != self.input_size {
            return Err(Error::shape(
                "forward",
                format!(
                    "{}: expected an input of shape [N, {}] or [{}], got {:?}",
                    name(),
                    self.input_size,
                    self.input_size,
                    x.shape()
                ),
            ));
        }
        let x = if unbatched { x.unsqueeze(0) } else { x.clone() };
        let want = [x.shape()[0], self.hidden_size];
        let fit = |t: Tensor| -> Result<Tensor> {
            let t = if unbatched { t.unsqueeze(0) } else { t };
            if t.shape() != want {
                return Err(Error::shape(
                    "forward",
                    format!(
                        "{}: expected a state of shape {want:?}, got {:?}",
                        name(),
                        t.shape()
                    ),
                ));
            }
            Ok(t)
        };
        let zeros = || Tensor::zeros_opts(want, &x.options());
        let (h, c) = match state.map(K::split) {
            Some((h, c)) => (fit(h)?, c.map(fit).transpose()?),
            None => (zeros(), None),
        };
        let c = (self.cell == CellKind::Lstm).then(|| c.unwrap_or_else(zeros));
        let xg = match &self.bias_ih {
            Some(b) => try_apply(ops::Linear, &[&x, &self.weight_ih, b])?,
            None => try_apply(ops::Linear, &[&x, &self.weight_ih])?,
        };
        let (h, c, _) = step(
            self.cell,
            &xg,
            &h,
            c.as_ref(),
            &self.weight_hh,
            self.bias_hh.as_ref(),
        )?;
        let squeeze = |t: Tensor| if unbatched { t.squeeze_dim(0) } else { t };
        Ok(K::join(squeeze(h), c.map(squeeze)))
    }
}

impl<K: RecurrentState> Module for RecurrentCellLayer<K> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        f(&join_name(prefix, "weight_ih"), &self.weight_ih);
        f(&join_name(prefix, "weight_hh"), &self.weight_hh);
        for (name, b) in [("bias_ih", &self.bias_ih), ("bias_hh", &self.bias_hh)] {
            if let Some(b) = b {
                f(&join_name(prefix, name), b);
            }
        }
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(&join_name(prefix, "weight_ih"), &mut self.weight_ih);
        f(&join_name(prefix, "weight_hh"), &mut self.weight_hh);
        for (name, b) in [
            ("bias_ih", &mut self.bias_ih),
            ("bias_hh", &mut self.bias_hh),
        ] {
            if let Some(b) = b {
                f(&join_name(prefix, name), b);
            }
        }
    }
}

impl<K: RecurrentState> Forward for RecurrentCellLayer<K> {
    /// The new `h` from a zero state.
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        K::split(self.forward_with(x, None)).0
    }
}
