//! Normalisation ops: `layer_norm`, `group_norm` and `batch_norm`.
//!
//! All three normalise groups of elements to mean 0 and variance 1 (biased
//! variance, `eps` added) and then scale and shift each element by a weight
//! and bias element. They differ only in which elements form a group and
//! which weight element each uses, which `Groups` describes. So they share
//! one set of CPU kernels (statistics accumulated in f64, recomputed in
//! backward rather than saved) and one composed form of GPU ops, here; each
//! op's file holds its checks and its grouping.

mod batch_norm;
mod cpu;
mod group_norm;
mod layer_norm;

pub(crate) use batch_norm::count_batch_;
pub use batch_norm::{update_running_stats_, BatchNorm};
pub use group_norm::GroupNorm;
pub use layer_norm::LayerNorm;

use crate::autograd::{GradSlot, Out, Spec};
use crate::backend::Host;
use crate::tensor::{DType, Float, Tensor};

/// Where a norm op's groups lie in its contiguous input, and which weight
/// element each element uses.
///
/// Group `k` is `reps` runs of `seg` contiguous elements, the first at
/// `k * step` and the next ones `stride` apart; the element at position `j`
/// of a run uses weight element `(k % period) * block + j / div`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Groups {
    count: usize,
    reps: usize,
    seg: usize,
    stride: usize,
    step: usize,
    period: usize,
    block: usize,
    div: usize,
}

impl Groups {
    /// `count` rows of `n` contiguous elements, column `j` using weight
    /// element `j` (`layer_norm`).
    pub(crate) fn rows(count: usize, n: usize) -> Self {
        Groups {
            count,
            reps: 1,
            seg: n,
            stride: 0,
            step: n,
            period: 1,
            block: 0,
            div: 1,
        }
    }

    /// `[n, c, s]` in `g` groups of `c / g` channels per sample, each channel
    /// using its own weight element (`group_norm`).
    pub(crate) fn channel_groups(n: usize, c: usize, s: usize, g: usize) -> Self {
        let per = c.checked_div(g).unwrap_or(0);
        Groups {
            count: n * g,
            reps: 1,
            seg: per * s,
            stride: 0,
            step: per * s,
            period: g.max(1),
            block: per,
            div: s.max(1),
        }
    }

    /// `[n, c, s]` per channel across the batch, each channel using its own
    /// weight element (`batch_norm`).
    pub(crate) fn channels(n: usize, c: usize, s: usize) -> Self {
        Groups {
            count: c,
            reps: n,
            seg: s,
            stride: c * s,
            step: s,
            period: c.max(1),
            block: 1,
            div: s.max(1),
        }
    }

    /// The number of groups.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The elements in one group.
    pub(crate) fn len(&self) -> usize {
        self.reps * self.seg
    }
}

/// A norm's statistics: computed from each group (training), or given per
/// group (`batch_norm` with running statistics).
#[derive(Clone, Copy)]
enum Stats<'a, T> {
    Batch,
    Given(&'a [T], &'a [T]),
}

impl<T: Float> Stats<'_, T> {
    /// Group `k`'s mean and 1/sqrt(variance + eps).
    #[inline]
    fn of(&self, grp: &Groups, xs: &[T], k: usize, eps: f64) -> (f64, f64) {
        let (mean, var) = match *self {
            Stats::Batch => grp.mean_var(xs, k),
            Stats::Given(m, v) => (m[k].to_f64(), v[k].to_f64()),
        };
        (mean, 1.0 / (var + eps).sqrt())
    }
}

/// One call of a norm op: its input, optional weight and bias, optional
/// given statistics, grouping and `eps`. The ops build it from their
/// inputs; the kernels and the composed form read it.
pub(crate) struct Norm<'a> {
    pub x: &'a Tensor,
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub stats: Option<(&'a Tensor, &'a Tensor)>,
    pub groups: Groups,
    pub eps: f64,
    /// The composed form's view of the input, in which each group is
    /// reduced over `dims`.
    pub view: Dims<usize>,
    pub dims: Dims<isize>,
    /// The weight's own shape, that shape broadcast against the input, and
    /// the input's dims summed for the weight's gradient.
    pub param: Dims<usize>,
    pub param_shape: Dims<usize>,
    pub param_reduce: Dims<isize>,
}

/// A short list of sizes or dims, inline (a norm call allocates nothing).
pub(crate) type Dims<T> = smallvec::SmallVec<[T; 6]>;

/// What a norm op saves: its input, its weight when the input needs a
/// gradient, and the given statistics.
pub type NormSaved = (Tensor, Option<Tensor>, Option<(Tensor, Tensor)>);

/// The elements a contiguous tensor views, from its buffer.
fn elems<'b, T: Host>(b: &'b crate::backend::Buffer, t: &Tensor) -> &'b [T] {
    &T::of(b)[t.layout().offset..][..t.numel()]
}

impl Norm<'_> {
    /// The forward into `out`: the CPU kernel, or the composed ops on a GPU.
    pub(crate) fn forward(&self, out: &mut Out<'_>) {
        if self.x.device().is_cuda() {
            return out.set(self.forward_composed());
        }
        let x = self.x.contiguous();
        let [w, b] = [self.weight, self.bias].map(|t| t.map(Tensor::contiguous));
        let (m, v) = self.contiguous_stats();
        match x.dtype() {
            DType::F32 => {
                self.forward_cpu::<f32>(&x, w.as_ref(), b.as_ref(), m.as_ref(), v.as_ref(), out)
            }
            _ => self.forward_cpu::<f64>(&x, w.as_ref(), b.as_ref(), m.as_ref(), v.as_ref(), out),
        }
    }

    /// What backward needs, given which inputs need gradients (the input's first).
    pub(crate) fn save(&self, need_input: bool) -> NormSaved {
        (
            self.x.clone(),
            self.weight.filter(|_| need_input).cloned(),
            self.stats.map(|(m, v)| (m.clone(), v.clone())),
        )
    }

    /// The gradients into `grads` (`[input, weight, bias]`, any present).
    pub(crate) fn backward(&self, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let need = |i: usize| grads.get(i).is_some_and(|s| s.needed());
        let (need_w, need_b) = (need(1), need(2));
        if self.x.device().is_cuda() {
            return self.backward_composed(g, grads);
        }
        let (x, g) = (self.x.contiguous(), g.contiguous());
        let w = self.weight.map(Tensor::contiguous);
        let (m, v) = self.contiguous_stats();
        macro_rules! run {
            ($t:ty) => {{
                if grads[0].needed() {
                    grads[0].add_into(Spec::shaped(x.shape(), &g), |out| {
                        self.input_grad::<$t>(&x, w.as_ref(), &g, m.as_ref(), v.as_ref(), out)
                    });
                }
                for (i, weight) in [(1, true), (2, false)] {
                    if (weight && need_w) || (!weight && need_b) {
                        grads[i].add_into(Spec::shaped(&self.param, &g), |out| {
                            self.param_grad::<$t>(&x, &g, m.as_ref(), v.as_ref(), weight, out)
                        });
                    }
                }
            }};
        }
        match g.dtype() {
            DType::F32 => run!(f32),
            _ => run!(f64),
        }
    }

    fn contiguous_stats(&self) -> (Option<Tensor>, Option<Tensor>) {
        match self.stats {
            Some((m, v)) => (Some(m.contiguous()), Some(v.contiguous())),
            None => (None, None),
        }
    }

    /// The inputs of a CPU kernel, from the tensors' buffers.
    fn kernel_inputs<'b, T: Float + Host>(
        &self,
        x: &Tensor,
        [w, b]: [Option<&Tensor>; 2],
        [m, v]: [Option<&Tensor>; 2],
        [xb, wb, bb, mb, vb]: [&'b crate::backend::Buffer; 5],
    ) -> cpu::NormInputs<'b, T> {
        cpu::NormInputs {
            x: elems::<T>(xb, x),
            w: w.map(|w| elems::<T>(wb, w)),
            b: b.map(|b| elems::<T>(bb, b)),
            stats: stats_of(m, v, mb, vb),
            grp: self.groups,
            eps: self.eps,
        }
    }

    fn forward_cpu<T: Float + Host>(
        &self,
        x: &Tensor,
        w: Option<&Tensor>,
        b: Option<&Tensor>,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
        out: &mut Out<'_>,
    ) {
        // Absent tensors stand in as `x` (locked once, never read as them).
        let inputs = [
            x,
            w.unwrap_or(x),
            b.unwrap_or(x),
            m.unwrap_or(x),
            v.unwrap_or(x),
        ];
        out.host_slice::<T, 5>(inputs, |bufs, o, acc| {
            cpu::forward(self.kernel_inputs(x, [w, b], [m, v], bufs), o, acc)
        });
    }

    /// The input's gradient (see [`cpu::input_grad`]).
    fn input_grad<T: Float + Host>(
        &self,
        x: &Tensor,
        w: Option<&Tensor>,
        g: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
        out: &mut Out<'_>,
    ) {
        let inputs = [x, w.unwrap_or(x), g, m.unwrap_or(x), v.unwrap_or(x)];
        out.host_slice::<T, 5>(inputs, |[xb, wb, gb, mb, vb], o, acc| {
            let inp = self.kernel_inputs(x, [w, None], [m, v], [xb, wb, xb, mb, vb]);
            cpu::input_grad(inp, elems::<T>(gb, g), o, acc)
        });
    }

    /// `dw (+)= Σ g·x̂` (`weight`), or `db (+)= Σ g` (see [`cpu::param_grad`]).
    fn param_grad<T: Float + Host>(
        &self,
        x: &Tensor,
        g: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
        weight: bool,
        out: &mut Out<'_>,
    ) {
        let inputs = [x, g, m.unwrap_or(x), v.unwrap_or(x)];
        out.host_slice::<T, 4>(inputs, |[xb, gb, mb, vb], o, acc| {
            let inp = self.kernel_inputs(x, [None, None], [m, v], [xb, xb, xb, mb, vb]);
            cpu::param_grad(inp, elems::<T>(gb, g), weight, o, acc)
        });
    }

    /// The input's view in which each group is reduced over `dims`.
    fn viewed(&self, t: &Tensor) -> Tensor {
        t.reshape(self.view.as_slice())
    }

    /// `(x - mean) / sqrt(var + eps)` with ops, in the view, and 1/std
    /// (broadcasting against the view).
    fn normalized(&self) -> (Tensor, Tensor) {
        match self.stats {
            Some((m, v)) => {
                let shape = self.param_shape.as_slice();
                let rstd = 1.0 / &(v.reshape(shape) + self.eps).sqrt();
                (&(self.x - &m.reshape(shape)) * &rstd, rstd)
            }
            None => {
                let xv = self.viewed(self.x);
                let dims = self.dims.as_slice();
                let centered = &xv - &xv.mean_dim(dims, true);
                let var = centered.square().mean_dim(dims, true);
                let rstd = 1.0 / &(var + self.eps).sqrt();
                (&centered * &rstd, rstd)
            }
        }
    }

    /// The forward with ops (the GPU's path).
    pub(crate) fn forward_composed(&self) -> Tensor {
        let xhat = self.normalized().0.reshape(self.x.shape());
        let shape = self.param_shape.as_slice();
        let y = match self.weight {
            Some(w) => &xhat * &w.reshape(shape),
            None => xhat,
        };
        match self.bias {
            Some(b) => &y + &b.reshape(shape),
            None => y,
        }
    }

    /// The gradients with ops (the GPU's path): `dx` as in
    /// [`input_grad`](Self::input_grad), `dw = Σ g·x̂`, `db = Σ g`.
    pub(crate) fn backward_composed(&self, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let (xhat, rstd) = self.normalized();
        let shape = self.param_shape.as_slice();
        if grads[0].needed() {
            let gw = match self.weight {
                Some(w) => g * &w.reshape(shape),
                None => g.clone(),
            };
            let dx = if self.stats.is_some() {
                &gw * &rstd
            } else {
                let (gw, dims) = (self.viewed(&gw), self.dims.as_slice());
                let a = gw.mean_dim(dims, true);
                let b = (&gw * &xhat).mean_dim(dims, true);
                (&(&(&gw - &a) - &(&xhat * &b)) * &rstd).reshape(self.x.shape())
            };
            grads[0].add(dx);
        }
        let param = self.param.as_slice();
        let reduce = self.param_reduce.as_slice();
        if grads.get(1).is_some_and(|s| s.needed()) {
            let xhat = xhat.reshape(self.x.shape());
            let dw = (g * &xhat).sum_dim(reduce, false);
            grads[1].add(dw.reshape(param));
        }
        if grads.get(2).is_some_and(|s| s.needed()) {
            grads[2].add(g.sum_dim(reduce, false).reshape(param));
        }
    }
}

/// The statistics a kernel reads: the given ones' elements, or none.
fn stats_of<'b, T: Host>(
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    mb: &'b crate::backend::Buffer,
    vb: &'b crate::backend::Buffer,
) -> Stats<'b, T> {
    match (m, v) {
        (Some(m), Some(v)) => Stats::Given(elems::<T>(mb, m), elems::<T>(vb, v)),
        _ => Stats::Batch,
    }
}

/// The checks every norm op makes: a float input, and a weight and bias (and
/// statistics) of `shape` with the input's dtype on its device.
pub(crate) fn check_params(
    op: &'static str,
    input: &Tensor,
    params: &[(&str, Option<&Tensor>)],
    shape: &[usize],
    what: &str,
) -> crate::error::Result<()> {
    use crate::error::Error;
    if !input.dtype().is_float() {
        return Err(Error::dtype(
            op,
            format!(
                "expected a float input, got {}; convert it with .to_dtype(DType::F32)",
                input.dtype()
            ),
        ));
    }
    for (name, t) in params.iter().filter_map(|(n, t)| Some((n, (*t)?))) {
        if t.shape() != shape || t.dtype() != input.dtype() {
            return Err(Error::shape(
                op,
                format!(
                    "the {name} must be a {} tensor of {what} {shape:?}, got a {} tensor of \
                     shape {:?}",
                    input.dtype(),
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        crate::ops::same_device(op, input, t)?;
    }
    Ok(())
}

/// The composed path against the CPU kernels, both run here on the CPU:
/// the forward and every gradient of `op` on `inputs` (input first, then
/// the weight and bias), whose call is `norm`.
#[cfg(test)]
pub(crate) fn assert_composed_matches_kernels<O>(op: O, inputs: &[&Tensor], norm: &Norm<'_>)
where
    O: crate::autograd::Op<Saved = NormSaved> + Copy,
{
    use crate::autograd::{apply, no_grad};
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        crate::test_util::assert_close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), 1e-12, what)
    };
    let y = apply(op, inputs);
    close(&no_grad(|| norm.forward_composed()), &y, "forward");
    let g = Tensor::randn_with(y.shape(), &mut crate::Generator::new(11)).to_dtype(y.dtype());
    let saved = norm.save(true);
    let n = inputs.len().min(3);
    let grads = |composed: bool| {
        let mut sums = [None, None, None];
        {
            let mut slots: Vec<GradSlot<'_>> = sums
                .iter_mut()
                .take(n)
                .map(|s| GradSlot::new(s, true))
                .collect();
            no_grad(|| {
                if composed {
                    norm.backward_composed(&g, &mut slots)
                } else {
                    op.backward(&saved, &g, &mut slots)
                }
            });
        }
        sums
    };
    let (kernel, composed) = (grads(false), grads(true));
    for ((k, c), what) in kernel.iter().zip(&composed).zip(["dx", "dw", "db"]).take(n) {
        close(
            c.as_ref().expect("every gradient is needed"),
            k.as_ref().expect("every gradient is needed"),
            what,
        );
    }
}
