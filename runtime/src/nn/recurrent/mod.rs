//! Recurrent layers: `RNN`, `LSTM`, `GRU` (stacked layers, `batch_first`,
//! optional initial states) and their cells `RNNCell`, `LSTMCell`,
//! `GRUCell`, with PyTorch's gate order, parameter names and initialisation.
//!
//! Each step is the input projection (`ops::Linear`, for all steps of a
//! layer at once), the hidden projection (`ops::Linear`) and the cell's
//! elementwise op (`ops::RecurrentCell`). On the tape these record as usual;
//! the compile-time path (`Differentiable`) keeps each step's projections
//! and runs the same ops' backward through time, last step first; the
//! buffer-reusing path (`TrainStep`, `fused.rs`) runs the same kernels on
//! slices its workspace keeps.

#![allow(clippy::upper_case_acronyms)] // PyTorch's names

pub use cell::{GRUCell, LSTMCell, RNNCell, RecurrentCellLayer};
pub use fused::RecurrentWorkspace;

mod cell;
mod fused;

use std::marker::PhantomData;

use super::linear::backward_params;
use super::module::join_name;
use super::{init, Differentiable, Forward, Module};
use crate::autograd::{no_grad, try_apply, GradSlot, Op};
use crate::backend::Device;
use crate::error::{Error, OrPanic, Result};
use crate::ops::{self, CellKind, RecurrentCell};
use crate::tensor::{Tensor, TensorOptions};

/// The state a recurrent layer or cell carries: `h` (RNN, GRU) or `(h, c)`
/// (LSTM).
pub trait RecurrentState: Send + Sync + 'static {
    /// PyTorch's name of the layer (`"LSTM"`), for messages.
    const NAME: &'static str;
    /// The cell (an RNN's may be its relu form instead).
    const CELL: CellKind;
    /// What `forward_with` takes and returns: `Tensor` or `(Tensor, Tensor)`.
    type State;
    /// `h`, and `c` for an LSTM.
    fn split(state: Self::State) -> (Tensor, Option<Tensor>);
    /// The state from `h` (and `c`).
    fn join(h: Tensor, c: Option<Tensor>) -> Self::State;
}

macro_rules! hidden_only {
    ($kind:ident, $name:literal, $cell:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $kind;
        impl RecurrentState for $kind {
            const NAME: &'static str = $name;
            const CELL: CellKind = $cell;
            type State = Tensor;
            fn split(state: Tensor) -> (Tensor, Option<Tensor>) {
                (state, None)
            }
            fn join(h: Tensor, _: Option<Tensor>) -> Tensor {
                h
            }
        }
    };
}
hidden_only!(
    RnnKind,
    "RNN",
    CellKind::RnnTanh,
    "An Elman RNN's state: `h`."
);
hidden_only!(GruKind, "GRU", CellKind::Gru, "A GRU's state: `h`.");

/// An LSTM's state: `(h, c)`.
pub struct LstmKind;
impl RecurrentState for LstmKind {
    const NAME: &'static str = "LSTM";
    const CELL: CellKind = CellKind::Lstm;
    type State = (Tensor, Tensor);
    fn split((h, c): (Tensor, Tensor)) -> (Tensor, Option<Tensor>) {
        (h, Some(c))
    }
    fn join(h: Tensor, c: Option<Tensor>) -> (Tensor, Tensor) {
        (h, c.expect("an LSTM carries c"))
    }
}

/// An RNN's nonlinearity (`nonlinearity="tanh"` or `"relu"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

/// The recurrent layers' options, with PyTorch's defaults: one layer, with
/// biases, inputs `[T, N, features]` (`batch_first` false), and (RNN only)
/// `tanh`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecurrentOptions {
    /// Stacked layers, each reading the one below's output sequence.
    pub num_layers: usize,
    /// Whether the layers have `bias_ih_l{k}` and `bias_hh_l{k}`.
    pub bias: bool,
    /// Whether inputs and outputs are `[N, T, features]`.
    pub batch_first: bool,
    /// An RNN's nonlinearity (ignored by LSTM and GRU).
    pub nonlinearity: Nonlinearity,
    /// Dropout on each layer's output sequence but the last's, while
    /// training (PyTorch's `dropout`, 0 by default; not for cells).
    pub dropout: f64,
    /// Whether each layer also reads the sequence backwards, its output
    /// being both directions' side by side (`[T, N, 2H]`; not for cells).
    pub bidirectional: bool,
}

impl RecurrentOptions {
    /// The cell of a `K` layer with these options (an RNN's relu form).
    pub(crate) fn cell<K: RecurrentState>(&self) -> CellKind {
        match (K::CELL, self.nonlinearity) {
            (CellKind::RnnTanh, Nonlinearity::Relu) => CellKind::RnnRelu,
            (cell, _) => cell,
        }
    }
}

impl Default for RecurrentOptions {
    fn default() -> Self {
        RecurrentOptions {
            num_layers: 1,
            bias: true,
            batch_first: false,
            nonlinearity: Nonlinearity::Tanh,
            dropout: 0.0,
            bidirectional: false,
        }
    }
}

/// A multi-layer recurrent network over sequences: `nn.RNN`, `nn.LSTM` and
/// `nn.GRU` are [`RNN`], [`LSTM`] and [`GRU`].
///
/// Layer `k` has `weight_ih_l{k}` (`[gates·H, input]`), `weight_hh_l{k}`
/// (`[gates·H, H]`) and the biases `bias_ih_l{k}`, `bias_hh_l{k}`
/// (`[gates·H]`), gates in PyTorch's order (LSTM `i, f, g, o`; GRU
/// `r, z, n`), all drawn from U(-1/√H, 1/√H) as PyTorch does, so a PyTorch
/// `state_dict` loads as is. The input is `[T, N, input]` (`[N, T, input]`
/// with `batch_first`, or `[T, input]` unbatched); [`forward_with`]
/// returns the output sequence (the last layer's `h` at each step) and the
/// final state `h_n` (`[num_layers, N, H]`, and `c_n` for an LSTM). With
/// `bidirectional`, each layer also reads the sequence last step first
/// (parameters `weight_ih_l{k}_reverse`, ...), its output is both
/// directions' `h` side by side (`2H` features) and the states are
/// `[num_layers·2, N, H]`, in PyTorch's order.
/// [`Forward::forward`] returns the output sequence, so in `network!`
/// `LSTM(64, 128)` expects 64 features and produces 128.
///
/// ```
/// use deriv_runtime::nn::{Forward, RecurrentOptions, LSTM};
/// use deriv_runtime::{Device, Tensor};
/// let opts = RecurrentOptions { num_layers: 2, batch_first: true, ..Default::default() };
/// let lstm = LSTM::with_options(3, 5, &opts, &Device::Cpu);
/// let x = Tensor::randn([4, 7, 3]); // 4 sequences of 7 steps
/// let (out, (h_n, c_n)) = lstm.forward_with(&x, None);
/// assert_eq!(out.shape(), &[4, 7, 5]);
/// assert_eq!((h_n.shape(), c_n.shape()), (&[2, 4, 5][..], &[2, 4, 5][..]));
/// ```
///
/// [`forward_with`]: Self::forward_with
pub struct Recurrent<K: RecurrentState> {
    /// `weight_ih_l{k}` for each layer `k`.
    pub weight_ih: Vec<Tensor>,
    /// `weight_hh_l{k}`.
    pub weight_hh: Vec<Tensor>,
    /// `bias_ih_l{k}` (empty without biases).
    pub bias_ih: Vec<Tensor>,
    /// `bias_hh_l{k}` (empty without biases).
    pub bias_hh: Vec<Tensor>,
    /// The features of each input step.
    pub input_size: usize,
    /// The features of `h`.
    pub hidden_size: usize,
    /// Whether inputs and outputs are `[N, T, features]`.
    pub batch_first: bool,
    /// Dropout between layers while training.
    pub dropout: f64,
    /// Whether each layer reads the sequence both ways (parameters
    /// `weight_ih_l{k}_reverse`, ...: index `2k + 1` of the vectors above).
    pub bidirectional: bool,
    cell: CellKind,
    training: bool,
    kind: PhantomData<K>,
}

/// `nn.RNN`: `h' = tanh(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)` (or relu).
pub type RNN = Recurrent<RnnKind>;
/// `nn.LSTM`, whose state is `(h, c)`.
pub type LSTM = Recurrent<LstmKind>;
/// `nn.GRU`.
pub type GRU = Recurrent<GruKind>;

/// The weights `[gates·H, in]`, `[gates·H, H]` and biases of one layer or
/// cell, drawn from U(-1/√H, 1/√H).
fn recurrent_params(
    gates: usize,
    input: usize,
    hidden: usize,
    bias: bool,
    device: &Device,
) -> [Option<Tensor>; 4] {
    let opts = TensorOptions::new().device(device);
    let bound = 1.0 / (hidden as f64).sqrt();
    let make = |shape: &[usize]| {
        let t = Tensor::zeros_opts(shape, &opts);
        init::uniform_(&t, -bound, bound);
        t.requires_grad_(true)
    };
    [
        Some(make(&[gates * hidden, input])),
        Some(make(&[gates * hidden, hidden])),
        bias.then(|| make(&[gates * hidden])),
        bias.then(|| make(&[gates * hidden])),
    ]
}

/// What backward needs of one step: its hidden projection, the state the
/// cell updated (LSTM: `c`; GRU: `h`) and the `h` it read.
struct StepSaved {
    hg: Tensor,
    prev: Option<Tensor>,
    h: Tensor,
}

/// What backward needs of one layer: its input (`[T·N, in]`), its input
/// projection (`[T·N, gates·H]`) and each step's.
pub struct LayerSaved {
    x: Tensor,
    xg: Tensor,
    /// In the order they ran (the last step first when `reverse`).
    steps: Vec<StepSaved>,
    reverse: bool,
}

/// What [`Recurrent`]'s backward needs: each layer's, and how the input was laid out.
pub struct RecurrentSaved {
    /// Layer `l`'s direction `d` at `l·directions + d`.
    layers: Vec<LayerSaved>,
    /// The dropout multiplier of each layer's output, if any.
    masks: Vec<Option<Tensor>>,
    dirs: usize,
    batch_first: bool,
    unbatched: bool,
}

/// One step of `cell` on the input projection `xg` and state `(h, c)`:
/// the hidden projection, the cell's op, the new state.
#[allow(clippy::type_complexity)]
fn step(
    cell: CellKind,
    xg: &Tensor,
    h: &Tensor,
    c: Option<&Tensor>,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>, StepSaved)> {
    let hg = match b_hh {
        Some(b) => try_apply(ops::Linear, &[h, w_hh, b])?,
        None => try_apply(ops::Linear, &[h, w_hh])?,
    };
    let prev = match cell {
        CellKind::Lstm => c.cloned(),
        CellKind::Gru => Some(h.clone()),
        _ => None,
    };
    let op = RecurrentCell { kind: cell };
    let y = match &prev {
        Some(p) => try_apply(op, &[xg, &hg, p])?,
        None => try_apply(op, &[xg, &hg])?,
    };
    let hidden = w_hh.shape()[1];
    let (h_new, c_new) = if cell == CellKind::Lstm {
        (y.narrow(1, 0, hidden), Some(y.narrow(1, hidden, hidden)))
    } else {
        (y, None)
    };
    let saved = StepSaved {
        hg,
        prev,
        h: h.clone(),
    };
    Ok((h_new, c_new, saved))
}

/// `g·W`: the input gradient of `ops::Linear` with weight `w`.
fn linear_input_grad(w: &Tensor, g: &Tensor) -> Tensor {
    let (mut dx, mut dw) = (None, None);
    {
        let mut slots = [GradSlot::new(&mut dx, true), GradSlot::new(&mut dw, false)];
        ops::Linear.backward(&(None, Some(w.clone())), g, &mut slots);
    }
    dx.expect("the input's gradient was asked for")
}

impl<K: RecurrentState> Recurrent<K> {
    /// A one-layer network with PyTorch's defaults, its parameters on `device`.
    pub fn new(input_size: usize, hidden_size: usize, device: &Device) -> Self {
        Self::with_options(
            input_size,
            hidden_size,
            &RecurrentOptions::default(),
            device,
        )
    }

    /// A network with more layers, without biases, batch-first, or (RNN)
    /// with relu.
    ///
    /// Panics when `num_layers` is 0.
    #[track_caller]
    pub fn with_options(
        input_size: usize,
        hidden_size: usize,
        options: &RecurrentOptions,
        device: &Device,
    ) -> Self {
        assert!(
            options.num_layers > 0,
            "{}: num_layers must be at least 1",
            K::NAME
        );
        let cell = options.cell::<K>();
        let mut net = Recurrent {
            weight_ih: Vec::new(),
            weight_hh: Vec::new(),
            bias_ih: Vec::new(),
            bias_hh: Vec::new(),
            input_size,
            hidden_size,
            batch_first: options.batch_first,
            dropout: options.dropout,
            bidirectional: options.bidirectional,
            cell,
            training: true,
            kind: PhantomData,
        };
        let dirs = net.directions();
        for layer in 0..options.num_layers {
            let input = if layer == 0 {
                input_size
            } else {
                hidden_size * dirs
            };
            for _ in 0..dirs {
                let [w_ih, w_hh, b_ih, b_hh] =
                    recurrent_params(cell.gates(), input, hidden_size, options.bias, device);
                net.weight_ih.extend(w_ih);
                net.weight_hh.extend(w_hh);
                net.bias_ih.extend(b_ih);
                net.bias_hh.extend(b_hh);
            }
        }
        net
    }

    /// The number of stacked layers.
    pub fn num_layers(&self) -> usize {
        self.weight_ih.len() / self.directions()
    }

    /// 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        1 + self.bidirectional as usize
    }

    /// The parameter names' suffix of entry `i` of the parameter vectors:
    /// `l{k}`, or `l{k}_reverse` for the backward direction.
    fn suffix(&self, i: usize) -> String {
        let dirs = self.directions();
        let reverse = if i % dirs == 1 { "_reverse" } else { "" };
        format!("l{}{reverse}", i / dirs)
    }

    /// The output sequence and the final state, from `state` (`h_0`, and
    /// `c_0` for an LSTM: `[num_layers·directions, N, H]`) or zeros.
    #[track_caller]
    pub fn forward_with(&self, x: &Tensor, state: Option<K::State>) -> (Tensor, K::State) {
        self.try_forward_with(x, state).or_panic()
    }

    /// Fallible [`forward_with`](Self::forward_with): an input or state of
    /// the wrong shape is an `Err` naming the layer.
    pub fn try_forward_with(
        &self,
        x: &Tensor,
        state: Option<K::State>,
    ) -> Result<(Tensor, K::State)> {
        let (out, h, c) = self.run(x, state.map(K::split), None)?;
        Ok((out, K::join(h, c)))
    }

    fn err(&self, msg: String) -> Error {
        Error::shape(
            "forward",
            format!(
                "{}({}, {}): {msg}",
                K::NAME,
                self.input_size,
                self.hidden_size
            ),
        )
    }

    /// The whole pass, recording when grad mode is on, and keeping each
    /// layer's values for the compile-time backward in `keep`.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        x: &Tensor,
        state: Option<(Tensor, Option<Tensor>)>,
        mut keep: Option<&mut RecurrentSaved>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let unbatched = x.ndim() == 2;
        if !matches!(x.ndim(), 2 | 3) {
            return Err(self.err(format!(
                "expected a 3-D input ([T, N, features], or [N, T, features] with batch_first) \
                 or a 2-D unbatched one, got shape {:?}",
                x.shape()
            )));
        }
        if x.shape()[x.ndim() - 1] != self.input_size {
            return Err(self.err(format!(
                "input.size(-1) must be equal to input_size. Expected {}, got {} (input of \
                 shape {:?})",
                self.input_size,
                x.shape()[x.ndim() - 1],
                x.shape()
            )));
        }
        // Time-major [T, N, features].
        let seq = if unbatched {
            x.unsqueeze(1)
        } else if self.batch_first {
            x.transpose(0, 1)
        } else {
            x.clone()
        };
        let (steps, batch, hidden) = (seq.shape()[0], seq.shape()[1], self.hidden_size);
        let (layers, dirs) = (self.num_layers(), self.directions());
        let want = [layers * dirs, batch, hidden];
        let initial = |t: Option<Tensor>, what: &str| -> Result<Option<Tensor>> {
            let Some(t) = t else { return Ok(None) };
            let t = if unbatched && t.ndim() == 2 {
                t.unsqueeze(1)
            } else {
                t
            };
            if t.shape() != want {
                return Err(self.err(format!(
                    "expected {what} of shape {want:?} ([num_layers·directions, N, hidden_size]), \
                     got {:?}",
                    t.shape()
                )));
            }
            Ok(Some(t))
        };
        let (h0, c0) = match state {
            Some((h, c)) => (initial(Some(h), "h_0")?, initial(c, "c_0")?),
            None => (None, None),
        };
        let opts = seq.options();
        let zeros = || Tensor::zeros_opts([batch, hidden], &opts);
        let (mut h_n, mut c_n) = (Vec::with_capacity(layers), Vec::with_capacity(layers));
        let mut input = seq;
        for l in 0..layers {
            let x2 = input.contiguous().reshape([(steps * batch) as i64, -1]);
            let mut outputs = Vec::with_capacity(dirs);
            for d in 0..dirs {
                let i = l * dirs + d;
                let (w_ih, w_hh) = (&self.weight_ih[i], &self.weight_hh[i]);
                let (b_ih, b_hh) = (self.bias_ih.get(i), self.bias_hh.get(i));
                let xg = match b_ih {
                    Some(b) => try_apply(ops::Linear, &[&x2, w_ih, b])?,
                    None => try_apply(ops::Linear, &[&x2, w_ih])?,
                };
                let mut h = h0.as_ref().map_or_else(zeros, |h| h.select(0, i as isize));
                let mut c = (self.cell == CellKind::Lstm)
                    .then(|| c0.as_ref().map_or_else(zeros, |c| c.select(0, i as isize)));
                let mut outs = vec![None; steps];
                let mut saved = Vec::new();
                for k in 0..steps {
                    // The backward direction reads the steps last first.
                    let t = if d == 1 { steps - 1 - k } else { k };
                    let xg_t = xg.narrow(0, t * batch, batch);
                    let (h_new, c_new, s) = step(self.cell, &xg_t, &h, c.as_ref(), w_hh, b_hh)?;
                    if keep.is_some() {
                        saved.push(s);
                    }
                    (h, c) = (h_new, c_new);
                    outs[t] = Some(h.clone());
                }
                outputs.push(if steps == 0 {
                    Tensor::zeros_opts([0, batch, hidden], &opts)
                } else {
                    Tensor::stack(&outs.into_iter().flatten().collect::<Vec<_>>(), 0)
                });
                if let Some(k) = keep.as_deref_mut() {
                    k.layers.push(LayerSaved {
                        x: x2.clone(),
                        xg,
                        steps: saved,
                        reverse: d == 1,
                    });
                }
                h_n.push(h);
                c_n.extend(c);
            }
            input = if dirs == 1 {
                outputs.pop().expect("one direction")
            } else {
                Tensor::cat(&outputs, 2)
            };
            // Dropout between layers, while training.
            let mask = (l + 1 < layers && self.training && self.dropout > 0.0)
                .then(|| super::functional::dropout_mask(&input, self.dropout));
            if let Some(m) = &mask {
                input = &input * m;
            }
            if let Some(k) = keep.as_deref_mut() {
                k.masks.push(mask);
            }
        }
        let mut out = input;
        let mut h_n = Tensor::stack(&h_n, 0);
        let mut c_n = (!c_n.is_empty()).then(|| Tensor::stack(&c_n, 0));
        if unbatched {
            out = out.squeeze_dim(1);
            h_n = h_n.squeeze_dim(1);
            c_n = c_n.map(|c| c.squeeze_dim(1));
        } else if self.batch_first {
            out = out.transpose(0, 1);
        }
        if let Some(k) = keep {
            (k.batch_first, k.unbatched) = (self.batch_first, unbatched);
        }
        Ok((out, h_n, c_n))
    }
}

impl<K: RecurrentState> Module for Recurrent<K> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        for i in 0..self.weight_ih.len() {
            let l = self.suffix(i);
            f(
                &join_name(prefix, &format!("weight_ih_{l}")),
                &self.weight_ih[i],
            );
            f(
                &join_name(prefix, &format!("weight_hh_{l}")),
                &self.weight_hh[i],
            );
            if let (Some(bi), Some(bh)) = (self.bias_ih.get(i), self.bias_hh.get(i)) {
                f(&join_name(prefix, &format!("bias_ih_{l}")), bi);
                f(&join_name(prefix, &format!("bias_hh_{l}")), bh);
            }
        }
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for i in 0..self.weight_ih.len() {
            let l = self.suffix(i);
            f(
                &join_name(prefix, &format!("weight_ih_{l}")),
                &mut self.weight_ih[i],
            );
            f(
                &join_name(prefix, &format!("weight_hh_{l}")),
                &mut self.weight_hh[i],
            );
            if let (Some(bi), Some(bh)) = (self.bias_ih.get_mut(i), self.bias_hh.get_mut(i)) {
                f(&join_name(prefix, &format!("bias_ih_{l}")), bi);
                f(&join_name(prefix, &format!("bias_hh_{l}")), bh);
            }
        }
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        f(self.training)
    }
}

impl<K: RecurrentState> Forward for Recurrent<K> {
    /// The output sequence, from a zero state.
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.run(x, None, None).or_panic().0
    }
}

impl<K: RecurrentState> Differentiable for Recurrent<K> {
    /// Each layer's input, projections and states.
    type Saved = RecurrentSaved;
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Maps {
        input: 0,
        output: 1,
    };

    #[track_caller]
    fn forward_train(&self, x: &Tensor) -> (Tensor, RecurrentSaved) {
        let mut saved = RecurrentSaved {
            layers: Vec::with_capacity(self.weight_ih.len()),
            masks: Vec::with_capacity(self.num_layers()),
            dirs: self.directions(),
            batch_first: self.batch_first,
            unbatched: false,
        };
        let out = no_grad(|| self.run(x, None, Some(&mut saved))).or_panic();
        (out.0, saved)
    }

    /// Backpropagation through time: each layer from the top, each step
    /// from the last, through the cell op's and `ops::Linear`'s backward.
    fn backward(
        &self,
        saved: RecurrentSaved,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<Tensor> {
        no_grad(|| {
            let mut g = if saved.unbatched {
                grad_out.unsqueeze(1)
            } else if saved.batch_first {
                grad_out.transpose(0, 1)
            } else {
                grad_out.clone()
            };
            let op = RecurrentCell { kind: self.cell };
            let (dirs, hidden) = (saved.dirs, self.hidden_size);
            let mut dx = None;
            for l in (0..saved.layers.len() / dirs).rev() {
                let need_x = l > 0 || input_grad;
                let mut d_input: Option<Tensor> = None;
                let (steps, batch) = (g.shape()[0], g.shape()[1]);
                for d in 0..dirs {
                    let i = l * dirs + d;
                    let layer = &saved.layers[i];
                    let gd = if dirs == 1 {
                        g.clone()
                    } else {
                        g.narrow(2, d * hidden, hidden)
                    };
                    let (mut dh_next, mut dc_next): (Option<Tensor>, Option<Tensor>) = (None, None);
                    let (mut dxg, mut dhg) = (vec![None; steps], vec![None; steps]);
                    for k in (0..steps).rev() {
                        let t = if layer.reverse { steps - 1 - k } else { k };
                        let s = &layer.steps[k];
                        let gh = match dh_next.take() {
                            Some(dh) => &gd.select(0, t as isize) + &dh,
                            None => gd.select(0, t as isize),
                        };
                        let gy = if self.cell == CellKind::Lstm {
                            let dc = dc_next.take().unwrap_or_else(|| gh.zeros_like());
                            Tensor::cat(&[gh, dc], 1)
                        } else {
                            gh
                        };
                        let xg_t = layer.xg.narrow(0, t * batch, batch);
                        let mut sums = [None, None, None];
                        {
                            let [a, b, c] = &mut sums;
                            let mut slots = [
                                GradSlot::new(a, true),
                                GradSlot::new(b, true),
                                GradSlot::new(c, s.prev.is_some()),
                            ];
                            let n = 2 + s.prev.is_some() as usize;
                            let saved = (xg_t, s.hg.clone(), s.prev.clone());
                            op.backward(&saved, &gy, &mut slots[..n]);
                        }
                        let [da, db, dprev] = sums;
                        let db = db.expect("needed");
                        let dh = linear_input_grad(&self.weight_hh[i], &db);
                        (dh_next, dc_next) = match self.cell {
                            CellKind::Lstm => (Some(dh), dprev),
                            CellKind::Gru => (Some(&dh + &dprev.expect("needed")), None),
                            _ => (Some(dh), None),
                        };
                        // dxg by time (the rows of the input), dhg by step.
                        (dxg[t], dhg[k]) = (da, Some(db));
                    }
                    if steps == 0 {
                        return None;
                    }
                    let cat = |v: Vec<Option<Tensor>>| {
                        Tensor::cat(
                            &v.into_iter()
                                .map(|t| t.expect("every step"))
                                .collect::<Vec<_>>(),
                            0,
                        )
                    };
                    let hs: Vec<Tensor> = layer.steps.iter().map(|s| s.h.clone()).collect();
                    // The weights' gradients, for all steps at once.
                    let hs = Tensor::cat(&hs, 0);
                    let params = [Some(&self.weight_hh[i]), self.bias_hh.get(i)];
                    backward_params(&ops::Linear, &(Some(hs), None), params, &cat(dhg), false);
                    let params = [Some(&self.weight_ih[i]), self.bias_ih.get(i)];
                    let saved_x = (
                        Some(layer.x.clone()),
                        need_x.then(|| self.weight_ih[i].clone()),
                    );
                    if let Some(dd) =
                        backward_params(&ops::Linear, &saved_x, params, &cat(dxg), need_x)
                    {
                        d_input = Some(match d_input {
                            Some(a) => &a + &dd,
                            None => dd,
                        });
                    }
                }
                let d_input = d_input.map(|d| d.reshape([steps as i64, batch as i64, -1]));
                match d_input {
                    Some(d) if l > 0 => {
                        // Through the dropout on the layer below's output.
                        g = match &saved.masks[l - 1] {
                            Some(m) => &d * m,
                            None => d,
                        };
                    }
                    d => dx = d,
                }
            }
            dx.map(|d| {
                if saved.unbatched {
                    d.squeeze_dim(1)
                } else if saved.batch_first {
                    d.transpose(0, 1).contiguous()
                } else {
                    d
                }
            })
        })
    }
}
