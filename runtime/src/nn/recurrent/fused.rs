//! The recurrent layers' buffer-reusing training step ([`TrainStep`]) on
//! the CPU: the whole stack of layers on slices the workspace keeps, with
//! the kernels of the ops the other paths run (the cell's
//! [`forward_rows`]/[`grad_rows`] and the matrix product of
//! `ops::Linear`), so a steady-state step allocates nothing. What it does
//! not cover goes through the allocating path ([`Fallback`]): a tensor on
//! the GPU, dropout between layers while training (its masks are the
//! allocating path's draws), a dtype other than f32/f64, an empty sequence.

use super::{Recurrent, RecurrentState};
use crate::backend::cpu::gemm::{gemm, Gemm, Mat};
use crate::backend::Host;
use crate::nn::dsl::{fit, read_host as read, write_host as write};
use crate::nn::linear::grad_buffer;
use crate::nn::module::{accumulate_grad, grad_accumulated};
use crate::nn::{Fallback, TrainStep};
use crate::ops::recurrent::{forward_rows, grad_rows};
use crate::ops::CellKind;
use crate::tensor::{DType, Tensor, TensorOptions};

/// The sizes of one pass and the caller's layout.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Dims {
    steps: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    gates: usize,
    /// The cell's output width in hidden sizes (LSTM: `h` and `c`).
    outs: usize,
    dirs: usize,
    layers: usize,
    /// `[N, T, F]` (otherwise `[T, N, F]`, or `[T, F]` unbatched).
    batch_first: bool,
    unbatched: bool,
}

impl Dims {
    /// Rows of a whole sequence, `T·N`.
    fn rows(&self) -> usize {
        self.steps * self.batch
    }
    /// A projection's width, `gates·H`.
    fn gh(&self) -> usize {
        self.gates * self.hidden
    }
    /// Layer `l`'s input features.
    fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input
        } else {
            self.dirs * self.hidden
        }
    }
    /// Step `k` of direction `d` reads time `t` (the reverse direction, the
    /// last step first).
    fn time(&self, d: usize, k: usize) -> usize {
        if d == 1 {
            self.steps - 1 - k
        } else {
            k
        }
    }
    /// The caller's shape of a sequence of `f` features (its first `len`
    /// entries: an array, so that a step allocates nothing).
    fn shape(&self, f: usize) -> ([usize; 3], usize) {
        if self.unbatched {
            ([self.steps, f, 0], 2)
        } else if self.batch_first {
            ([self.batch, self.steps, f], 3)
        } else {
            ([self.steps, self.batch, f], 3)
        }
    }
    /// The tensor in `slot` for a sequence of `f` features in the caller's
    /// shape, made there unless the one it holds fits.
    fn sequence<'s, T: Host>(&self, slot: &'s mut Option<Tensor>, f: usize) -> &'s Tensor {
        let (shape, len) = self.shape(f);
        let shape = &shape[..len];
        let fits = slot.as_ref().is_some_and(|t| {
            t.shape() == shape
                && t.dtype() == T::DTYPE
                && t.is_contiguous()
                && !t.device().is_cuda()
        });
        if !fits {
            *slot = Some(Tensor::zeros_opts(
                shape,
                &TensorOptions::new().dtype(T::DTYPE),
            ));
        }
        slot.as_ref().expect("set above")
    }
    /// Copies a sequence of `f` features from the caller's layout to
    /// time-major `[T·N, f]` (or back, with `back`).
    fn relayout<T: Copy>(&self, src: &[T], dst: &mut [T], f: usize, back: bool) {
        if !self.batch_first {
            dst.copy_from_slice(src);
            return;
        }
        for n in 0..self.batch {
            for t in 0..self.steps {
                let (caller, major) = ((n * self.steps + t) * f, (t * self.batch + n) * f);
                let (from, to) = if back {
                    (major, caller)
                } else {
                    (caller, major)
                };
                dst[to..to + f].copy_from_slice(&src[from..from + f]);
            }
        }
    }
}

/// `out = a · wᵀ (+ b)`: `ops::Linear`'s forward on slices, `a` `[rows, k]`,
/// `w` `[n, k]`, `out` `[rows, n]`.
fn project<T: Gemm + Host>(op: &str, a: &[T], w: &Tensor, b: Option<&Tensor>, out: &mut [T]) {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let rows = out.len() / n;
    if let Some(b) = b {
        read(b, |bs: &[T]| {
            out.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(bs))
        });
    }
    read(w, |ws: &[T]| {
        let (a, w) = (Mat::new(a, 0, k, 1), Mat::new(ws, 0, k, 1).t());
        // SAFETY: both operands are live slices (gemm checks their bounds)
        // and `out` is ours.
        unsafe { gemm(op, rows, n, k, a, w, out, b.is_some()) }
    });
}

/// Adds what `f` computes into `p`'s `.grad()` (in place: `f` gets the
/// buffer and `true`, to add), then runs its hooks; a parameter without
/// `requires_grad` is skipped.
fn add_grad<T: Host + Default + Copy>(p: &Tensor, f: impl FnOnce(&mut [T], bool)) {
    if !p.requires_grad() {
        return;
    }
    match grad_buffer(p) {
        Some(g) => {
            write(&g, |gs| f(gs, true));
            grad_accumulated(p);
        }
        // A `.grad()` of another layout or dtype: a fresh sum, added.
        None => {
            let mut v = vec![T::default(); p.numel()];
            f(&mut v, false);
            accumulate_grad(p, Tensor::from_vec(v, p.shape()));
        }
    }
}

/// `out (+)= Σ_rows m`, `m` `[rows, cols]`: a bias's gradient.
fn add_column_sums<T: Gemm>(m: &[T], cols: usize, out: &mut [T], acc: bool) {
    if !acc {
        out.fill(T::ZERO);
    }
    for row in m.chunks_exact(cols) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// One dtype's buffers. Per layer: its output (time-major `[T·N, dirs·H]`);
/// per layer and direction (`l·dirs + d`): the input projection (`[T·N,
/// gates·H]`, rows by time), the hidden projection and the `h` (and LSTM
/// `c`) each step read (rows by step).
#[derive(Default)]
struct Buffers<T> {
    dims: Dims,
    x: Vec<T>,
    outs: Vec<Vec<T>>,
    xg: Vec<Vec<T>>,
    hg: Vec<Vec<T>>,
    hin: Vec<Vec<T>>,
    cin: Vec<Vec<T>>,
    step_out: Vec<T>,
    // Backward's: the gradients of a layer's output and input (time-major),
    // of the projections, of one step's output, and of the state.
    g: Vec<T>,
    din: Vec<T>,
    dxg: Vec<T>,
    dhg: Vec<T>,
    gy: Vec<T>,
    dh: Vec<T>,
    dc: Vec<T>,
    dprev: Vec<T>,
}

impl<T: Gemm + Host + Default> Buffers<T> {
    /// Sizes every buffer for `d` (allocating only when the sizes change).
    fn prepare(&mut self, d: Dims) {
        if self.dims == d && !self.outs.is_empty() {
            return;
        }
        let (rows, h, n) = (d.rows(), d.hidden, d.batch);
        let per = |count: usize, len: usize| -> Vec<Vec<T>> {
            (0..count).map(|_| vec![T::ZERO; len]).collect()
        };
        let lstm = d.outs == 2;
        self.x = vec![T::ZERO; rows * d.input];
        self.outs = per(d.layers, rows * d.dirs * h);
        self.xg = per(d.layers * d.dirs, rows * d.gh());
        self.hg = per(d.layers * d.dirs, rows * d.gh());
        self.hin = per(d.layers * d.dirs, rows * h);
        self.cin = per(if lstm { d.layers * d.dirs } else { 0 }, rows * h);
        self.step_out = vec![T::ZERO; n * d.outs * h];
        let widest = rows * d.input.max(d.dirs * h);
        (self.g, self.din) = (Vec::with_capacity(widest), Vec::with_capacity(widest));
        (self.dxg, self.dhg) = (vec![T::ZERO; rows * d.gh()], vec![T::ZERO; rows * d.gh()]);
        self.gy = vec![T::ZERO; n * d.outs * h];
        (self.dh, self.dc, self.dprev) = (
            vec![T::ZERO; n * h],
            vec![T::ZERO; n * h],
            vec![T::ZERO; n * h],
        );
        self.dims = d;
    }

    /// The pass over every layer and direction, keeping what backward
    /// needs; the output, in the caller's layout, into `y`.
    fn forward<K: RecurrentState>(&mut self, m: &Recurrent<K>, x: &Tensor, y: &mut Option<Tensor>) {
        let d = self.dims;
        let (n, h, gh, cell) = (d.batch, d.hidden, d.gh(), m.cell);
        read(x, |xs: &[T]| d.relayout(xs, &mut self.x, d.input, false));
        for l in 0..d.layers {
            let (below, rest) = self.outs.split_at_mut(l);
            let (input, out) = (if l == 0 { &self.x } else { &below[l - 1] }, &mut rest[0]);
            for dir in 0..d.dirs {
                let i = l * d.dirs + dir;
                let (xg, hg, hin) = (&mut self.xg[i], &mut self.hg[i], &mut self.hin[i]);
                project(K::NAME, input, &m.weight_ih[i], m.bias_ih.get(i), xg);
                // The zero initial state.
                hin[..n * h].fill(T::ZERO);
                if let Some(c) = self.cin.get_mut(i) {
                    c[..n * h].fill(T::ZERO);
                }
                for k in 0..d.steps {
                    let t = d.time(dir, k);
                    let (h_k, hg_k) = (k * n * h..(k + 1) * n * h, k * n * gh..(k + 1) * n * gh);
                    project(
                        K::NAME,
                        &hin[h_k.clone()],
                        &m.weight_hh[i],
                        m.bias_hh.get(i),
                        &mut hg[hg_k.clone()],
                    );
                    let prev = match cell {
                        CellKind::Lstm => Some(&self.cin[i][h_k.clone()]),
                        CellKind::Gru => Some(&hin[h_k]),
                        _ => None,
                    };
                    let xg_t = &xg[t * n * gh..][..n * gh];
                    forward_rows(cell, [xg_t, &hg[hg_k]], prev, &mut self.step_out, n, false);
                    // The new state: this step's output and the next step's input.
                    for (s, row) in self.step_out.chunks_exact(d.outs * h).enumerate() {
                        let at = (t * n + s) * d.dirs * h + dir * h;
                        out[at..at + h].copy_from_slice(&row[..h]);
                        if k + 1 < d.steps {
                            let next = ((k + 1) * n + s) * h;
                            hin[next..next + h].copy_from_slice(&row[..h]);
                            if let Some(c) = self.cin.get_mut(i) {
                                c[next..next + h].copy_from_slice(&row[h..2 * h]);
                            }
                        }
                    }
                }
            }
        }
        let last = &self.outs[d.layers - 1];
        write(d.sequence::<T>(y, d.dirs * h), |o| {
            d.relayout(last, o, d.dirs * h, true)
        });
    }

    /// Backpropagation through time from the output's gradient `grad_out`
    /// (contiguous, the output's shape and dtype): each layer from the top,
    /// each step from the last; the parameters' gradients added into their
    /// `.grad()`, the input's into `dx` when `input_grad`.
    fn backward<K: RecurrentState>(
        &mut self,
        m: &Recurrent<K>,
        grad_out: &Tensor,
        input_grad: bool,
        dx: &mut Option<Tensor>,
    ) {
        let d = self.dims;
        let (n, h, gh, rows, cell) = (d.batch, d.hidden, d.gh(), d.rows(), m.cell);
        let lstm = cell == CellKind::Lstm;
        fit(&mut self.g, rows * d.dirs * h);
        read(grad_out, |gs: &[T]| {
            d.relayout(gs, &mut self.g, d.dirs * h, false)
        });
        for l in (0..d.layers).rev() {
            let width = d.layer_input(l);
            let need_input = l > 0 || input_grad;
            fit(&mut self.din, if need_input { rows * width } else { 0 });
            let input = if l == 0 { &self.x } else { &self.outs[l - 1] };
            for dir in 0..d.dirs {
                let i = l * d.dirs + dir;
                let (xg, hg, hin) = (&self.xg[i], &self.hg[i], &self.hin[i]);
                self.dh.fill(T::ZERO);
                self.dc.fill(T::ZERO);
                for k in (0..d.steps).rev() {
                    let t = d.time(dir, k);
                    // The step's output gradient: the layer output's plus what
                    // the later step sent back through `h` (and `c`).
                    for (s, gy) in self.gy.chunks_exact_mut(d.outs * h).enumerate() {
                        let g = &self.g[(t * n + s) * d.dirs * h + dir * h..][..h];
                        let dh = &self.dh[s * h..][..h];
                        for ((o, &a), &b) in gy[..h].iter_mut().zip(g).zip(dh) {
                            *o = a + b;
                        }
                        if lstm {
                            gy[h..].copy_from_slice(&self.dc[s * h..][..h]);
                        }
                    }
                    let h_k = k * n * h..(k + 1) * n * h;
                    let prev = match cell {
                        CellKind::Lstm => Some(&self.cin[i][h_k]),
                        CellKind::Gru => Some(&hin[h_k]),
                        _ => None,
                    };
                    let (t_rows, k_rows) =
                        (t * n * gh..(t + 1) * n * gh, k * n * gh..(k + 1) * n * gh);
                    let dprev: &mut [T] = if cell.takes_prev() {
                        &mut self.dprev
                    } else {
                        &mut []
                    };
                    grad_rows(
                        cell,
                        [&xg[t_rows.clone()], &hg[k_rows.clone()], &self.gy],
                        prev,
                        n,
                        [&mut self.dxg[t_rows], &mut self.dhg[k_rows.clone()], dprev],
                    );
                    // To the step before: through `h·W_hhᵀ`, and the state.
                    let dhg_k = &self.dhg[k_rows];
                    read(&m.weight_hh[i], |w: &[T]| {
                        let (a, b) = (Mat::new(dhg_k, 0, gh, 1), Mat::new(w, 0, h, 1));
                        // SAFETY: live slices (bounds checked by gemm); `dh` is ours.
                        unsafe { gemm(K::NAME, n, h, gh, a, b, &mut self.dh, false) }
                    });
                    match cell {
                        CellKind::Gru => {
                            for (a, &b) in self.dh.iter_mut().zip(&self.dprev) {
                                *a += b;
                            }
                        }
                        CellKind::Lstm => self.dc.copy_from_slice(&self.dprev),
                        _ => {}
                    }
                }
                // The weights' gradients, for all steps at once.
                let (dxg, dhg) = (&self.dxg, &self.dhg);
                add_grad(&m.weight_hh[i], |gw: &mut [T], acc| {
                    let (a, b) = (Mat::new(dhg, 0, gh, 1).t(), Mat::new(hin, 0, h, 1));
                    // SAFETY: live slices (bounds checked by gemm); `gw` is locked for us.
                    unsafe { gemm(K::NAME, gh, h, rows, a, b, gw, acc) }
                });
                add_grad(&m.weight_ih[i], |gw: &mut [T], acc| {
                    let (a, b) = (Mat::new(dxg, 0, gh, 1).t(), Mat::new(input, 0, width, 1));
                    // SAFETY: as above.
                    unsafe { gemm(K::NAME, gh, width, rows, a, b, gw, acc) }
                });
                if let (Some(b_ih), Some(b_hh)) = (m.bias_ih.get(i), m.bias_hh.get(i)) {
                    add_grad(b_hh, |gb: &mut [T], acc| add_column_sums(dhg, gh, gb, acc));
                    add_grad(b_ih, |gb: &mut [T], acc| add_column_sums(dxg, gh, gb, acc));
                }
                if need_input {
                    read(&m.weight_ih[i], |w: &[T]| {
                        let (a, b) = (Mat::new(dxg, 0, gh, 1), Mat::new(w, 0, width, 1));
                        // SAFETY: as above; `din` is ours.
                        unsafe { gemm(K::NAME, rows, width, gh, a, b, &mut self.din, dir > 0) }
                    });
                }
            }
            // The layer below's output gradient is this layer's input's.
            std::mem::swap(&mut self.g, &mut self.din);
        }
        if input_grad {
            let g = &self.g;
            write(d.sequence::<T>(dx, d.input), |o| {
                d.relayout(g, o, d.input, true)
            });
        }
    }
}

/// [`Recurrent`]'s [`TrainStep`] workspace: the fused kernels' buffers per
/// dtype, the output and input gradient, and the allocating path's results
/// for the inputs those kernels do not cover.
pub struct RecurrentWorkspace<K: RecurrentState> {
    fallback: Fallback<Recurrent<K>>,
    f32: Buffers<f32>,
    f64: Buffers<f64>,
    y: Option<Tensor>,
    dx: Option<Tensor>,
    /// The dtype the last forward ran the fused kernels in (`None`: the
    /// allocating path).
    fused: Option<DType>,
}

impl<K: RecurrentState> Default for RecurrentWorkspace<K> {
    fn default() -> Self {
        RecurrentWorkspace {
            fallback: Fallback::default(),
            f32: Buffers::default(),
            f64: Buffers::default(),
            y: None,
            dx: None,
            fused: None,
        }
    }
}

impl<K: RecurrentState> Recurrent<K> {
    /// The sizes of a pass over `x` on the fused kernels, or `None` where
    /// the allocating path runs it (see the module's comment; an invalid
    /// input goes there too, for its error).
    fn fused_dims(&self, x: &Tensor) -> Option<Dims> {
        let dtype = x.dtype();
        let host = |t: &Tensor| !t.device().is_cuda() && t.is_contiguous() && t.dtype() == dtype;
        let params = self
            .weight_ih
            .iter()
            .chain(&self.weight_hh)
            .chain(&self.bias_ih)
            .chain(&self.bias_hh);
        let unbatched = x.ndim() == 2;
        let ok = matches!(dtype, DType::F32 | DType::F64)
            && host(x)
            && params.into_iter().all(host)
            && matches!(x.ndim(), 2 | 3)
            && x.shape()[x.ndim() - 1] == self.input_size
            && !(self.training && self.dropout > 0.0 && self.num_layers() > 1);
        if !ok {
            return None;
        }
        let s = x.shape();
        let (steps, batch) = if unbatched {
            (s[0], 1)
        } else if self.batch_first {
            (s[1], s[0])
        } else {
            (s[0], s[1])
        };
        (steps > 0 && batch > 0 && self.hidden_size > 0).then_some(Dims {
            steps,
            batch,
            input: self.input_size,
            hidden: self.hidden_size,
            gates: self.cell.gates(),
            outs: self.cell.outs(),
            dirs: self.directions(),
            layers: self.num_layers(),
            batch_first: self.batch_first && !unbatched,
            unbatched,
        })
    }
}

impl<K: RecurrentState> TrainStep for Recurrent<K> {
    type Workspace = RecurrentWorkspace<K>;

    #[track_caller]
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut RecurrentWorkspace<K>) -> &'w Tensor {
        let Some(dims) = self.fused_dims(x) else {
            ws.fused = None;
            return ws.fallback.forward_train(self, x);
        };
        let _guard = crate::autograd::NoGradGuard::new();
        if x.dtype() == DType::F32 {
            ws.f32.prepare(dims);
            ws.f32.forward(self, x, &mut ws.y);
        } else {
            ws.f64.prepare(dims);
            ws.f64.forward(self, x, &mut ws.y);
        }
        ws.fused = Some(x.dtype());
        ws.y.as_ref().expect("written by forward")
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut RecurrentWorkspace<K>,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let Some(dtype) = ws.fused else {
            return ws.fallback.backward(self, grad_out, input_grad);
        };
        let _guard = crate::autograd::NoGradGuard::new();
        let y = ws.y.as_ref().expect("a forward ran");
        assert!(
            grad_out.shape() == y.shape(),
            "{}: the output's gradient has shape {:?}, the output {:?}",
            K::NAME,
            grad_out.shape(),
            y.shape()
        );
        // Another layout, dtype or device: a copy (this step allocates).
        let copy;
        let g = if grad_out.is_contiguous()
            && grad_out.dtype() == dtype
            && !grad_out.device().is_cuda()
        {
            grad_out
        } else {
            copy = grad_out
                .to(&crate::Device::Cpu)
                .to_dtype(dtype)
                .contiguous();
            &copy
        };
        if dtype == DType::F32 {
            ws.f32.backward(self, g, input_grad, &mut ws.dx);
        } else {
            ws.f64.backward(self, g, input_grad, &mut ws.dx);
        }
        ws.dx.as_ref().filter(|_| input_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Module, RecurrentOptions, GRU, LSTM, RNN};
    use crate::Device;

    /// The fused step against the allocating path, in `x`'s dtype.
    fn assert_fused_matches<K: RecurrentState>(m: &Recurrent<K>, x: &Tensor, tol: f64) {
        let dtype = x.dtype();
        crate::test_util::assert_step_matches_allocating(m, x, tol, K::NAME, |ws| {
            ws.fused == Some(dtype)
        });
    }

    #[test]
    fn fused_step_matches_the_allocating_path_in_both_dtypes() {
        let two_ways = RecurrentOptions {
            num_layers: 2,
            bidirectional: true,
            batch_first: true,
            ..Default::default()
        };
        let relu = RecurrentOptions {
            nonlinearity: crate::nn::Nonlinearity::Relu,
            bias: false,
            ..Default::default()
        };
        // Under Miri (which runs this ~50x slower): the LSTM, both ways, in
        // f32 on a shorter batch.
        let (dtypes, shape) = if cfg!(miri) {
            (&[(DType::F32, 1e-5)][..], [1, 3, 3])
        } else {
            (&[(DType::F32, 1e-5), (DType::F64, 1e-12)][..], [2, 5, 3])
        };
        for &(dtype, tol) in dtypes {
            let mut rng = crate::Generator::new(3);
            let x = Tensor::randn_with(shape, &mut rng).to_dtype(dtype);
            let mut lstm = LSTM::with_options(3, 4, &two_ways, &Device::Cpu);
            lstm.to_dtype(dtype);
            assert_fused_matches(&lstm, &x, tol);
            if cfg!(miri) {
                continue;
            }
            let mut gru = GRU::with_options(3, 4, &two_ways, &Device::Cpu);
            gru.to_dtype(dtype);
            assert_fused_matches(&gru, &x, tol);
            let mut rnn = RNN::with_options(3, 4, &relu, &Device::Cpu);
            rnn.to_dtype(dtype);
            assert_fused_matches(&rnn, &x, tol);
        }
    }

    /// Dropout between layers while training draws its masks on the
    /// allocating path; in eval mode the fused kernels run.
    #[test]
    fn dropout_while_training_takes_the_allocating_path() {
        let opts = RecurrentOptions {
            num_layers: 2,
            dropout: 0.5,
            ..Default::default()
        };
        let mut gru = GRU::with_options(3, 4, &opts, &Device::Cpu);
        let x = Tensor::randn([3, 1, 3]);
        let mut ws = gru.workspace();
        gru.forward_train_ws(&x, &mut ws);
        assert_eq!(ws.fused, None);
        gru.set_training(false);
        gru.forward_train_ws(&x, &mut ws);
        assert_eq!(ws.fused, Some(DType::F32));
    }
}
