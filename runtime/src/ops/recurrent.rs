//! The recurrent cells' elementwise step: given one step's input projection
//! `xg = x·W_ihᵀ + b_ih` and hidden projection `hg = h·W_hhᵀ + b_hh`
//! (`ops::Linear`), and the state the cell updates elementwise, the new
//! state. `nn::RNN`/`LSTM`/`GRU` and their cells are these projections and
//! this op, step by step, on every path.
//!
//! PyTorch's gate order: LSTM `i, f, g, o` (`c' = f·c + i·g`,
//! `h' = o·tanh(c')`), GRU `r, z, n` (`n = tanh(xg_n + r·hg_n)`,
//! `h' = (1 − z)·n + z·h`), RNN `h' = tanh(xg + hg)` or `relu(..)`.

use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::backend::cpu::rows::LANES;
use crate::backend::cpu::{run_vectorized, Kernel};
use crate::backend::Host;
use crate::error::{Error, Result};
use crate::tensor::{DType, Float, Math, Tensor};

/// Which cell a [`RecurrentCell`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// `h' = tanh(xg + hg)`.
    RnnTanh,
    /// `h' = relu(xg + hg)`.
    RnnRelu,
    /// Gates `i, f, g, o`; output `[h', c']` side by side.
    Lstm,
    /// Gates `r, z, n`.
    Gru,
}

impl CellKind {
    /// Every kind, in the order `per_kind!` numbers them.
    const ALL: [CellKind; 4] = [
        CellKind::RnnTanh,
        CellKind::RnnRelu,
        CellKind::Lstm,
        CellKind::Gru,
    ];

    /// The gates per hidden unit in each projection.
    pub fn gates(self) -> usize {
        match self {
            CellKind::RnnTanh | CellKind::RnnRelu => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// Whether the step takes the state it updates elementwise as a third
    /// input (LSTM: `c`; GRU: `h`).
    pub fn takes_prev(self) -> bool {
        matches!(self, CellKind::Lstm | CellKind::Gru)
    }

    /// The output's width in hidden sizes (LSTM: `h'` and `c'`).
    pub fn outs(self) -> usize {
        if self == CellKind::Lstm {
            2
        } else {
            1
        }
    }

    /// One hidden unit's new state from its gates' projections `a` (input)
    /// and `b` (hidden) and its previous state (a formula over [`Math`], in
    /// the tensor's own precision).
    #[inline(always)]
    fn unit<M: Math>(self, a: &[M; 4], b: &[M; 4], prev: M) -> [M; 2] {
        let (zero, one) = (M::k(0.0), M::k(1.0));
        match self {
            CellKind::RnnTanh => [(a[0] + b[0]).tanh(), zero],
            CellKind::RnnRelu => [(a[0] + b[0]).max_nan(zero), zero],
            CellKind::Lstm => {
                let [i, f, g, o] = lstm_gates(a, b);
                let c = f * prev + i * g;
                [o * c.tanh(), c]
            }
            CellKind::Gru => {
                let (r, z) = ((a[0] + b[0]).sigmoid(), (a[1] + b[1]).sigmoid());
                let n = (a[2] + r * b[2]).tanh();
                [(one - z) * n + z * prev, zero]
            }
        }
    }

    /// One unit's gradients from the output's (`g`: `h'`, and `c'` for an
    /// LSTM): those of its input and hidden projections, and of its previous
    /// state.
    #[inline(always)]
    fn unit_grad<M: Math>(self, a: &[M; 4], b: &[M; 4], prev: M, g: [M; 2]) -> UnitGrad<M> {
        let (zero, one) = (M::k(0.0), M::k(1.0));
        let mut out = UnitGrad {
            da: [zero; 4],
            db: [zero; 4],
            dprev: zero,
        };
        match self {
            CellKind::RnnTanh | CellKind::RnnRelu => {
                let s = a[0] + b[0];
                let d = if self == CellKind::RnnTanh {
                    let y = s.tanh();
                    g[0] * (one - y * y)
                } else {
                    M::select(s.gt(zero), g[0], zero)
                };
                (out.da[0], out.db[0]) = (d, d);
            }
            CellKind::Lstm => {
                let [i, f, gg, o] = lstm_gates(a, b);
                let tc = (f * prev + i * gg).tanh();
                let dc = g[1] + g[0] * o * (one - tc * tc);
                let d = [
                    dc * gg * i * (one - i),
                    dc * prev * f * (one - f),
                    dc * i * (one - gg * gg),
                    g[0] * tc * o * (one - o),
                ];
                (out.da, out.db, out.dprev) = (d, d, dc * f);
            }
            CellKind::Gru => {
                let (r, z) = ((a[0] + b[0]).sigmoid(), (a[1] + b[1]).sigmoid());
                let n = (a[2] + r * b[2]).tanh();
                let dn = g[0] * (one - z) * (one - n * n);
                let dr = dn * b[2] * r * (one - r);
                let dz = g[0] * (prev - n) * z * (one - z);
                out.da = [dr, dz, dn, zero];
                out.db = [dr, dz, dn * r, zero];
                out.dprev = g[0] * z;
            }
        }
        out
    }
}

struct UnitGrad<M> {
    da: [M; 4],
    db: [M; 4],
    dprev: M,
}

#[inline(always)]
fn lstm_gates<M: Math>(a: &[M; 4], b: &[M; 4]) -> [M; 4] {
    [
        (a[0] + b[0]).sigmoid(),
        (a[1] + b[1]).sigmoid(),
        (a[2] + b[2]).tanh(),
        (a[3] + b[3]).sigmoid(),
    ]
}

/// One recurrent step's elementwise part, inputs `[xg, hg, prev]`: the
/// projections `[N, gates·H]` and, for an LSTM or GRU, the state `[N, H]` it
/// updates. The output is `h'` `[N, H]`, or `[h', c']` `[N, 2H]` for an LSTM.
#[derive(Clone, Copy, Debug)]
pub struct RecurrentCell {
    /// Which cell.
    pub kind: CellKind,
}

impl Op for RecurrentCell {
    const NAME: &'static str = "RnnCellBackward";
    const OP: &'static str = "recurrent_cell";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Unknown;
    /// The projections and the previous state (the gates are recomputed).
    type Saved = (Tensor, Tensor, Option<Tensor>);

    fn name(&self, _: &[&Tensor]) -> &'static str {
        match self.kind {
            CellKind::RnnTanh => "RnnTanhCellBackward",
            CellKind::RnnRelu => "RnnReluCellBackward",
            CellKind::Lstm => "LstmCellBackward",
            CellKind::Gru => "GruCellBackward",
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let want = 2 + self.kind.takes_prev() as usize;
        let bad = |msg: String| Err(Error::shape("recurrent_cell", msg));
        if x.len() != want {
            return bad(format!("expected {want} inputs, got {}", x.len()));
        }
        let (xg, hg) = (x[0], x[1]);
        let g = self.kind.gates();
        if xg.ndim() != 2 || xg.shape()[1] % g != 0 || hg.shape() != xg.shape() {
            return bad(format!(
                "the projections must both be [N, {g}·H], got {:?} and {:?}",
                xg.shape(),
                hg.shape()
            ));
        }
        let (n, h) = (xg.shape()[0], xg.shape()[1] / g);
        if let Some(p) = x.get(2)
            && p.shape() != [n, h]
        {
            return bad(format!(
                "the state must be [N, H] = [{n}, {h}], got {:?}",
                p.shape()
            ));
        }
        for t in &x[1..] {
            if t.dtype() != xg.dtype() || !xg.dtype().is_float() {
                return Err(Error::dtype(
                    "recurrent_cell",
                    format!(
                        "expected float inputs of one dtype, got {} and {}",
                        xg.dtype(),
                        t.dtype()
                    ),
                ));
            }
            crate::ops::same_device("recurrent_cell", xg, t)?;
        }
        Ok(Spec::shaped(&[n, self.kind.outs() * h], xg))
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let prev = x.get(2).copied();
        if x[0].device().is_cuda() {
            return out.set(self.forward_composed(x[0], x[1], prev));
        }
        let [xg, hg] = [x[0], x[1]].map(Tensor::contiguous);
        let prev = prev.map(Tensor::contiguous);
        match xg.dtype() {
            DType::F32 => self.forward_cpu::<f32>(&xg, &hg, prev.as_ref(), out),
            _ => self.forward_cpu::<f64>(&xg, &hg, prev.as_ref(), out),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].clone(), x.get(2).map(|&p| p.clone()))
    }

    fn backward(&self, (xg, hg, prev): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        if xg.device().is_cuda() {
            let parts = self.backward_composed(xg, hg, prev.as_ref(), g);
            for (slot, part) in grads.iter_mut().zip(parts) {
                if let Some(part) = part {
                    slot.add(part);
                }
            }
            return;
        }
        let [xg, hg, g] = [xg, hg, g].map(Tensor::contiguous);
        let prev = prev.as_ref().map(Tensor::contiguous);
        let need: Vec<bool> = grads.iter().map(GradSlot::needed).collect();
        let [da, db, dprev] = match g.dtype() {
            DType::F32 => self.grads_cpu::<f32>(&xg, &hg, prev.as_ref(), &g, &need),
            _ => self.grads_cpu::<f64>(&xg, &hg, prev.as_ref(), &g, &need),
        };
        for (slot, d) in grads.iter_mut().zip([da, db, dprev]) {
            if let Some(d) = d {
                slot.add(d);
            }
        }
    }
}

/// The elements a contiguous tensor views, from its buffer.
fn elems<'b, T: Host>(b: &'b crate::backend::Buffer, t: &Tensor) -> &'b [T] {
    &T::of(b)[t.layout().offset..][..t.numel()]
}

/// Runs the kernel `$S { fields }` with the cell's kind as its constant `K`
/// (the kind's index in [`CellKind::ALL`]): each kind gets its own copy of
/// the loop, in which `unit`'s `match` folds away and the loop over hidden
/// units vectorises.
macro_rules! per_kind {
    ($kind:expr, $S:ident { $($fields:tt)* }) => {
        match $kind {
            CellKind::RnnTanh => run_vectorized($S::<_, 0> { $($fields)* }),
            CellKind::RnnRelu => run_vectorized($S::<_, 1> { $($fields)* }),
            CellKind::Lstm => run_vectorized($S::<_, 2> { $($fields)* }),
            CellKind::Gru => run_vectorized($S::<_, 3> { $($fields)* }),
        }
    };
}

/// A block of lanes of one row: the kernels run 16 hidden units at a time
/// through fixed-size arrays, with no bounds checks inside.
type Lanes<T> = [T; LANES];

/// Lane `l` of each gate's block. (Indexed, not `a.map(|a| a[l])`: `map`
/// copies each 64-byte block with `memcpy` inside the lane loop, and a call
/// there keeps the loop from vectorising.)
#[inline(always)]
fn lane<T: Copy>(v: &[Lanes<T>; 4], l: usize) -> [T; 4] {
    [v[0][l], v[1][l], v[2][l], v[3][l]]
}

/// Sample `n`'s `h` units of each of `g` gates in a `[rows, g·h]` buffer
/// (entries past `g` repeat the last gate and are never used).
#[inline(always)]
fn gate_rows<T>(s: &[T], n: usize, g: usize, h: usize) -> [&[T]; 4] {
    std::array::from_fn(|k| &s[(n * g + k.min(g - 1)) * h..][..h])
}

/// Elements `j0..j0 + w` of `s` (`w ≤ LANES`), zero-padded.
#[inline(always)]
fn load<T: Float>(s: &[T], j0: usize, w: usize) -> Lanes<T> {
    if w == LANES {
        return s[j0..j0 + LANES].try_into().expect("LANES elements");
    }
    let mut v = [T::ZERO; LANES];
    v[..w].copy_from_slice(&s[j0..j0 + w]);
    v
}

/// Writes (or adds, with `acc`) the first `w` lanes of `v` at `j0`.
#[inline(always)]
fn store<T: Float>(s: &mut [T], j0: usize, v: &Lanes<T>, w: usize, acc: bool) {
    for (o, &v) in s[j0..j0 + w].iter_mut().zip(v) {
        *o = if acc { *o + v } else { v };
    }
}

/// Sample `n`'s inputs: its projections per gate and its previous state.
type RowInputs<'a, T> = ([&'a [T]; 4], [&'a [T]; 4], Option<&'a [T]>);

/// [`RowInputs`] of sample `n`, `g` gates of `h` units.
#[inline(always)]
fn row_inputs<'a, T>(
    [xs, hs]: [&'a [T]; 2],
    ps: Option<&'a [T]>,
    n: usize,
    (g, h): (usize, usize),
) -> RowInputs<'a, T> {
    let p = ps.map(|p| &p[n * h..][..h]);
    (gate_rows(xs, n, g, h), gate_rows(hs, n, g, h), p)
}

/// The block of `w` units from `j0` of a row's inputs, in lanes (the rest
/// padding): the projections per gate and the previous state. (The callers
/// loop over blocks themselves: a closure called per block would be a
/// separate function compiled at the baseline width.)
#[inline(always)]
fn block<T: Float>(
    (xa, hb, p): &RowInputs<'_, T>,
    j0: usize,
    w: usize,
) -> ([Lanes<T>; 4], [Lanes<T>; 4], Lanes<T>) {
    (
        std::array::from_fn(|k| load(xa[k], j0, w)),
        std::array::from_fn(|k| load(hb[k], j0, w)),
        p.map_or([T::ZERO; LANES], |p| load(p, j0, w)),
    )
}

/// The step over `rows` samples for the kind `CellKind::ALL[K]`: `o` is
/// `[rows, outs·h]`, added into when `acc`.
struct ForwardRows<'a, T, const K: usize> {
    inputs: [&'a [T]; 2],
    ps: Option<&'a [T]>,
    o: &'a mut [T],
    rows: usize,
    acc: bool,
}

impl<T: Float, const K: usize> Kernel for ForwardRows<'_, T, K> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let ForwardRows {
            inputs,
            ps,
            o,
            rows,
            acc,
        } = self;
        let kind = CellKind::ALL[K];
        let (g, outs) = (kind.gates(), kind.outs());
        let h = inputs[0].len().checked_div(rows * g).unwrap_or(0);
        for n in 0..rows {
            let row = row_inputs(inputs, ps, n, (g, h));
            let (oh, oc) = o[n * outs * h..][..outs * h].split_at_mut(h);
            for j0 in (0..h).step_by(LANES) {
                let w = (h - j0).min(LANES);
                let (a, b, prev) = block(&row, j0, w);
                let mut y = [[T::ZERO; LANES]; 2];
                for l in 0..LANES {
                    let v = kind.unit(&lane(&a, l), &lane(&b, l), prev[l]);
                    (y[0][l], y[1][l]) = (v[0], v[1]);
                }
                store(oh, j0, &y[0], w, acc);
                if outs == 2 {
                    store(oc, j0, &y[1], w, acc);
                }
            }
        }
    }
}

/// The gradients over `rows` samples for the kind `CellKind::ALL[K]`, from
/// the output's `gs`: those of the projections (`da`, and `db` when it
/// differs) and of the state (`dp`); an empty buffer is not written.
struct GradRows<'a, T, const K: usize> {
    inputs: [&'a [T]; 3],
    ps: Option<&'a [T]>,
    rows: usize,
    outs: [&'a mut [T]; 3],
}

impl<T: Float, const K: usize> Kernel for GradRows<'_, T, K> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let GradRows {
            inputs: [xs, hs, gs],
            ps,
            rows,
            outs: [da, db, dp],
        } = self;
        let kind = CellKind::ALL[K];
        let (g, outs) = (kind.gates(), kind.outs());
        let h = xs.len().checked_div(rows * g).unwrap_or(0);
        for n in 0..rows {
            let row = row_inputs([xs, hs], ps, n, (g, h));
            let (gh, gc) = gs[n * outs * h..][..outs * h].split_at(h);
            for j0 in (0..h).step_by(LANES) {
                let w = (h - j0).min(LANES);
                let (a, b, prev) = block(&row, j0, w);
                let gc = if outs == 2 {
                    load(gc, j0, w)
                } else {
                    [T::ZERO; LANES]
                };
                let gy = [load(gh, j0, w), gc];
                let (mut d_a, mut d_b) = ([[T::ZERO; LANES]; 4], [[T::ZERO; LANES]; 4]);
                let mut d_p = [T::ZERO; LANES];
                for l in 0..LANES {
                    let (a, b) = (lane(&a, l), lane(&b, l));
                    let d = kind.unit_grad(&a, &b, prev[l], [gy[0][l], gy[1][l]]);
                    for k in 0..4 {
                        (d_a[k][l], d_b[k][l]) = (d.da[k], d.db[k]);
                    }
                    d_p[l] = d.dprev;
                }
                for k in 0..g {
                    let at = (n * g + k) * h;
                    if !da.is_empty() {
                        store(&mut da[at..at + h], j0, &d_a[k], w, false);
                    }
                    if !db.is_empty() {
                        store(&mut db[at..at + h], j0, &d_b[k], w, false);
                    }
                }
                if !dp.is_empty() {
                    store(&mut dp[n * h..][..h], j0, &d_p, w, false);
                }
            }
        }
    }
}

/// The step on slices: `[xg, hg]` `[rows, gates·h]` and the state `prev`
/// `[rows, h]` (LSTM, GRU) into `o` `[rows, outs·h]`, added into when `acc`.
/// The op's CPU kernel, and the fused layer's (`nn/recurrent/fused.rs`).
pub(crate) fn forward_rows<T: Float>(
    kind: CellKind,
    inputs: [&[T]; 2],
    ps: Option<&[T]>,
    o: &mut [T],
    rows: usize,
    acc: bool,
) {
    per_kind!(
        kind,
        ForwardRows {
            inputs,
            ps,
            o,
            rows,
            acc
        }
    );
}

/// The step's gradients on slices, from `[xg, hg, g]` (`g`: the output's
/// gradient, `[rows, outs·h]`) and the state: those of the input
/// projection, the hidden one (the same values unless a GRU) and the state,
/// each written where its buffer is not empty.
pub(crate) fn grad_rows<T: Float>(
    kind: CellKind,
    inputs: [&[T]; 3],
    ps: Option<&[T]>,
    rows: usize,
    outs: [&mut [T]; 3],
) {
    per_kind!(
        kind,
        GradRows {
            inputs,
            ps,
            rows,
            outs
        }
    );
}

impl RecurrentCell {
    fn forward_cpu<T: Float + Host>(
        &self,
        xg: &Tensor,
        hg: &Tensor,
        prev: Option<&Tensor>,
        out: &mut Out<'_>,
    ) {
        let rows = xg.shape()[0];
        out.host_slice::<T, 3>([xg, hg, prev.unwrap_or(xg)], |[xb, hb, pb], o, acc| {
            let ps = prev.map(|p| elems::<T>(pb, p));
            let inputs = [elems::<T>(xb, xg), elems::<T>(hb, hg)];
            forward_rows(self.kind, inputs, ps, o, rows, acc);
        });
    }

    /// The gradients of the inputs `need` asks for, in one pass: `xg`'s,
    /// `hg`'s (`None` when it equals `xg`'s, as for an RNN or LSTM, whose
    /// projections are added) and the state's.
    fn grads_cpu<T: Float + Host>(
        &self,
        xg: &Tensor,
        hg: &Tensor,
        prev: Option<&Tensor>,
        g: &Tensor,
        need: &[bool],
    ) -> [Option<Tensor>; 3] {
        let gates = self.kind.gates();
        let (rows, h) = (xg.shape()[0], xg.shape()[1] / gates);
        let need = |i: usize| need.get(i).copied().unwrap_or(false);
        let shared = self.kind != CellKind::Gru;
        let want_a = need(0) || (shared && need(1));
        let want_b = !shared && need(1);
        let mut da = vec![T::ZERO; if want_a { rows * gates * h } else { 0 }];
        let mut db = vec![T::ZERO; if want_b { rows * gates * h } else { 0 }];
        let mut dp = vec![T::ZERO; if need(2) { rows * h } else { 0 }];
        let storages = [xg, hg, prev.unwrap_or(xg), g].map(|t| Some(&**t.storage()));
        let (reads, []) = crate::backend::lock_storages(storages, []);
        let buf = |i: usize, t: &Tensor| -> &crate::backend::Buffer {
            let first = [xg, hg, prev.unwrap_or(xg), g][..i]
                .iter()
                .position(|o| o.shares_storage(t))
                .unwrap_or(i);
            reads[first].as_deref().expect("locked")
        };
        let inputs = [
            elems::<T>(buf(0, xg), xg),
            elems::<T>(buf(1, hg), hg),
            elems::<T>(buf(3, g), g),
        ];
        let ps = prev.map(|p| elems::<T>(buf(2, p), p));
        grad_rows(self.kind, inputs, ps, rows, [&mut da, &mut db, &mut dp]);
        drop(reads);
        let a = want_a.then(|| Tensor::from_vec(da, [rows, gates * h]));
        let b = if shared {
            a.clone().filter(|_| need(1))
        } else {
            want_b.then(|| Tensor::from_vec(db, [rows, gates * h]))
        };
        [
            a.filter(|_| need(0)),
            b,
            need(2).then(|| Tensor::from_vec(dp, [rows, h])),
        ]
    }

    /// The step with ops (the GPU's path).
    pub(crate) fn forward_composed(
        &self,
        xg: &Tensor,
        hg: &Tensor,
        prev: Option<&Tensor>,
    ) -> Tensor {
        let prev = || prev.expect("the state is an input");
        match self.kind {
            CellKind::RnnTanh => (xg + hg).tanh(),
            CellKind::RnnRelu => (xg + hg).relu(),
            CellKind::Lstm => {
                let [i, f, g, o] = lstm_gates_composed(xg, hg);
                let c = &(&f * prev()) + &(&i * &g);
                Tensor::cat(&[&o * &c.tanh(), c], 1)
            }
            CellKind::Gru => {
                let (x, h) = (xg.chunk(3, 1), hg.chunk(3, 1));
                let (r, z) = ((&x[0] + &h[0]).sigmoid(), (&x[1] + &h[1]).sigmoid());
                let n = (&x[2] + &(&r * &h[2])).tanh();
                &(&(1.0 - &z) * &n) + &(&z * prev())
            }
        }
    }

    /// The gradients with ops (the GPU's path), as [`CellKind::unit_grad`].
    pub(crate) fn backward_composed(
        &self,
        xg: &Tensor,
        hg: &Tensor,
        prev: Option<&Tensor>,
        g: &Tensor,
    ) -> [Option<Tensor>; 3] {
        let prev = || prev.expect("the state is an input");
        match self.kind {
            CellKind::RnnTanh | CellKind::RnnRelu => {
                let s = xg + hg;
                let d = if self.kind == CellKind::RnnTanh {
                    g * &(1.0 - &s.tanh().square())
                } else {
                    g * &s.gt_scalar(0.0).to_dtype(g.dtype())
                };
                [Some(d.clone()), Some(d), None]
            }
            CellKind::Lstm => {
                let hidden = g.shape()[1] / 2;
                let (gh, gc) = (g.narrow(1, 0, hidden), g.narrow(1, hidden, hidden));
                let [i, f, gg, o] = lstm_gates_composed(xg, hg);
                let tc = (&(&f * prev()) + &(&i * &gg)).tanh();
                let dc = &gc + &(&(&gh * &o) * &(1.0 - &tc.square()));
                let d = Tensor::cat(
                    &[
                        &(&dc * &gg) * &(&i * &(1.0 - &i)),
                        &(&dc * prev()) * &(&f * &(1.0 - &f)),
                        &(&dc * &i) * &(1.0 - &gg.square()),
                        &(&gh * &tc) * &(&o * &(1.0 - &o)),
                    ],
                    1,
                );
                [Some(d.clone()), Some(d), Some(&dc * &f)]
            }
            CellKind::Gru => {
                let (x, h) = (xg.chunk(3, 1), hg.chunk(3, 1));
                let (r, z) = ((&x[0] + &h[0]).sigmoid(), (&x[1] + &h[1]).sigmoid());
                let n = (&x[2] + &(&r * &h[2])).tanh();
                let dn = &(g * &(1.0 - &z)) * &(1.0 - &n.square());
                let dr = &(&dn * &h[2]) * &(&r * &(1.0 - &r));
                let dz = &(g * &(prev() - &n)) * &(&z * &(1.0 - &z));
                let dx = Tensor::cat(&[dr.clone(), dz.clone(), dn.clone()], 1);
                let dh = Tensor::cat(&[dr, dz, &dn * &r], 1);
                [Some(dx), Some(dh), Some(g * &z)]
            }
        }
    }
}

/// An LSTM's activated gates `i, f, g, o` with ops.
fn lstm_gates_composed(xg: &Tensor, hg: &Tensor) -> [Tensor; 4] {
    let s = (xg + hg).chunk(4, 1);
    [s[0].sigmoid(), s[1].sigmoid(), s[2].tanh(), s[3].sigmoid()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{apply, no_grad};

    /// The GPU's composed step and gradients against the CPU kernels (both
    /// run here on the CPU), for every cell.
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(8);
        let mut r = |shape: &[usize]| Tensor::randn_with(shape, &mut rng).to_dtype(DType::F64);
        // 5 units: one partial block of lanes; 37: two full ones and a tail
        // (not under Miri, where one size takes the same paths, slowly).
        let sizes: &[usize] = if cfg!(miri) { &[5] } else { &[5, 37] };
        let cases = CellKind::ALL
            .into_iter()
            .flat_map(|k| sizes.iter().map(move |&h| (k, h)));
        for (kind, h) in cases {
            let op = RecurrentCell { kind };
            let (xg, hg, prev) = (
                r(&[3, kind.gates() * h]),
                r(&[3, kind.gates() * h]),
                r(&[3, h]),
            );
            let mut inputs = vec![&xg, &hg];
            if kind.takes_prev() {
                inputs.push(&prev);
            }
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let what = format!("{kind:?}: {what}");
                crate::test_util::assert_close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), 1e-12, &what)
            };
            let p = kind.takes_prev().then_some(&prev);
            let y = apply(op, &inputs);
            close(&no_grad(|| op.forward_composed(&xg, &hg, p)), &y, "forward");
            let g = r(y.shape());
            let composed = no_grad(|| op.backward_composed(&xg, &hg, p, &g));
            let mut sums = [None, None, None];
            {
                let mut slots: Vec<GradSlot<'_>> = sums
                    .iter_mut()
                    .take(inputs.len())
                    .map(|s| GradSlot::new(s, true))
                    .collect();
                let saved = (xg.clone(), hg.clone(), p.cloned());
                no_grad(|| op.backward(&saved, &g, &mut slots));
            }
            for ((k, c), what) in sums.iter().zip(&composed).zip(["dxg", "dhg", "dprev"]) {
                if let (Some(k), Some(c)) = (k, c) {
                    close(c, k, what);
                }
            }
        }
    }
}
