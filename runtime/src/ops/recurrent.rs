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

impl RecurrentCell {
    /// Calls `f(n, j, a, b, prev)` for each sample `n` and hidden unit `j`
    /// with the unit's projections and previous state.
    #[inline(always)]
    fn each_unit<T: Float>(
        &self,
        xs: &[T],
        hs: &[T],
        ps: Option<&[T]>,
        rows: usize,
        mut f: impl FnMut(usize, usize, &[T; 4], &[T; 4], T),
    ) {
        let g = self.kind.gates();
        let h = xs.len().checked_div(rows * g).unwrap_or(0);
        let (mut a, mut b) = ([T::ZERO; 4], [T::ZERO; 4]);
        for n in 0..rows {
            for j in 0..h {
                for k in 0..g {
                    a[k] = xs[n * g * h + k * h + j];
                    b[k] = hs[n * g * h + k * h + j];
                }
                let prev = ps.map_or(T::ZERO, |p| p[n * h + j]);
                f(n, j, &a, &b, prev);
            }
        }
    }

    fn forward_cpu<T: Float + Host>(
        &self,
        xg: &Tensor,
        hg: &Tensor,
        prev: Option<&Tensor>,
        out: &mut Out<'_>,
    ) {
        let (rows, h) = (xg.shape()[0], xg.shape()[1] / self.kind.gates());
        let outs = self.kind.outs();
        out.host_slice::<T, 3>([xg, hg, prev.unwrap_or(xg)], |[xb, hb, pb], o, acc| {
            let ps = prev.map(|p| elems::<T>(pb, p));
            let (xs, hs) = (elems::<T>(xb, xg), elems::<T>(hb, hg));
            self.each_unit(xs, hs, ps, rows, |n, j, a, b, p| {
                let y = self.kind.unit(a, b, p);
                for (k, &v) in y.iter().enumerate().take(outs) {
                    let at = n * outs * h + k * h + j;
                    o[at] = if acc { o[at] + v } else { v };
                }
            });
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
        let outs = self.kind.outs();
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
        let (xs, hs, gs) = (
            elems::<T>(buf(0, xg), xg),
            elems::<T>(buf(1, hg), hg),
            elems::<T>(buf(3, g), g),
        );
        let ps = prev.map(|p| elems::<T>(buf(2, p), p));
        self.each_unit(xs, hs, ps, rows, |n, j, a, b, p| {
            let gy = [0, 1].map(|k| {
                if k < outs {
                    gs[n * outs * h + k * h + j]
                } else {
                    T::ZERO
                }
            });
            let d = self.kind.unit_grad(a, b, p, gy);
            for k in 0..gates {
                let at = n * gates * h + k * h + j;
                if want_a {
                    da[at] = d.da[k];
                }
                if want_b {
                    db[at] = d.db[k];
                }
            }
            if need(2) {
                dp[n * h + j] = d.dprev;
            }
        });
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
        for kind in [
            CellKind::RnnTanh,
            CellKind::RnnRelu,
            CellKind::Lstm,
            CellKind::Gru,
        ] {
            let op = RecurrentCell { kind };
            let (xg, hg, prev) = (
                r(&[3, kind.gates() * 5]),
                r(&[3, kind.gates() * 5]),
                r(&[3, 5]),
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
