//! The convolution composed of tensor ops (the GPU's path): the padded
//! input unfolded by one gather with a precomputed index, a batched matmul
//! per group, and for backward the same pieces transposed, the columns'
//! gradient scatter-added back. The CPU runs its own kernels; the unit
//! test below holds the two to each other on the CPU.

use super::conv2d::Conv2d;
use crate::autograd::GradSlot;
use crate::tensor::Tensor;

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) groups: usize,
}

impl Dims {
    fn padded(&self, op: &Conv2d) -> (usize, usize) {
        let [pt, pb, pl, pr] = op.padding;
        (self.h + pt + pb, self.w + pl + pr)
    }
    fn k(&self) -> usize {
        self.c / self.groups * self.kh * self.kw
    }
}

/// For each `(c, i, j, oy, ox)` in im2col's order, the element of a padded
/// sample (`[C, Hp, Wp]` flattened) it reads.
fn unfold_index(op: &Conv2d, d: &Dims, x: &Tensor) -> Tensor {
    let (hp, wp) = d.padded(op);
    let (s, dl) = (op.stride, op.dilation);
    let mut idx = Vec::with_capacity(d.c * d.kh * d.kw * d.ho * d.wo);
    for c in 0..d.c {
        for i in 0..d.kh {
            for j in 0..d.kw {
                for oy in 0..d.ho {
                    for ox in 0..d.wo {
                        let (y, xx) = (oy * s[0] + i * dl[0], ox * s[1] + j * dl[1]);
                        idx.push(((c * hp + y) * wp + xx) as i64);
                    }
                }
            }
        }
    }
    Tensor::from_vec(idx, [d.c * d.kh * d.kw * d.ho * d.wo]).to(&x.device())
}

/// `x` with its zero padding, `[N, C, Hp, Wp]`.
fn pad(op: &Conv2d, d: &Dims, x: &Tensor) -> Tensor {
    let (hp, wp) = d.padded(op);
    let xp = Tensor::zeros_opts([d.n, d.c, hp, wp], &x.options());
    xp.narrow(2, op.padding[0], d.h)
        .narrow(3, op.padding[2], d.w)
        .copy_(x);
    xp
}

/// The columns of every sample and group, `[N, groups, K, Ho·Wo]`.
fn columns(op: &Conv2d, d: &Dims, x: &Tensor, idx: &Tensor) -> Tensor {
    let (hp, wp) = d.padded(op);
    pad(op, d, x)
        .reshape([d.n, d.c * hp * wp])
        .index_select(1, idx)
        .reshape([d.n, d.groups, d.k(), d.ho * d.wo])
}

/// The weight as one matrix per group, `[groups, O/g, K]`.
fn weight_mats(d: &Dims, w: &Tensor) -> Tensor {
    w.reshape([d.groups, d.o / d.groups, d.k()])
}

pub(crate) fn conv2d_forward(
    op: &Conv2d,
    d: &Dims,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Tensor {
    let idx = unfold_index(op, d, x);
    let y = weight_mats(d, w)
        .matmul(&columns(op, d, x, &idx))
        .reshape([d.n, d.o, d.ho, d.wo]);
    match b {
        Some(b) => y + b.reshape([1, d.o, 1, 1]),
        None => y,
    }
}

pub(crate) fn conv2d_backward(
    op: &Conv2d,
    d: &Dims,
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    grads: &mut [GradSlot<'_>],
) {
    let idx = unfold_index(op, d, x);
    let gy = g.reshape([d.n, d.groups, d.o / d.groups, d.ho * d.wo]);
    if grads[0].needed() {
        let (hp, wp) = d.padded(op);
        let dcols = weight_mats(d, w)
            .transpose(-1, -2)
            .matmul(&gy)
            .reshape([d.n, idx.numel()]);
        let spread = idx.unsqueeze(0).expand([d.n, idx.numel()]).contiguous();
        let dxp = Tensor::zeros_opts([d.n, d.c * hp * wp], &g.options())
            .scatter_add(1, &spread, &dcols)
            .reshape([d.n, d.c, hp, wp]);
        grads[0].add(
            dxp.narrow(2, op.padding[0], d.h)
                .narrow(3, op.padding[2], d.w)
                .contiguous(),
        );
    }
    if grads[1].needed() {
        let cols = columns(op, d, x, &idx);
        let dw = gy.matmul(&cols.transpose(-1, -2)).sum_dim(0, false);
        grads[1].add(dw.reshape(w.shape()));
    }
    if grads.get(2).is_some_and(|s| s.needed()) {
        grads[2].add(g.sum_dim([0, 2, 3], false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{apply, no_grad, Op};
    use crate::tensor::DType;

    /// The composed path against the CPU kernels, on the CPU: groups,
    /// stride, dilation and asymmetric padding at once.
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(8);
        let mut randn = |s: &[usize]| Tensor::randn_with(s, &mut rng).to_dtype(DType::F64);
        let (x, w, b) = (randn(&[2, 4, 7, 6]), randn(&[6, 2, 3, 2]), randn(&[6]));
        let op = Conv2d {
            stride: [2, 1],
            padding: [1, 2, 0, 1],
            dilation: [1, 2],
            groups: 2,
        };
        let y = apply(op, &[&x, &w, &b]);
        let d = Dims {
            n: 2,
            c: 4,
            h: 7,
            w: 6,
            o: 6,
            kh: 3,
            kw: 2,
            ho: y.shape()[2],
            wo: y.shape()[3],
            groups: 2,
        };
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            crate::test_util::assert_close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), 1e-12, what)
        };
        close(
            &no_grad(|| conv2d_forward(&op, &d, &x, &w, Some(&b))),
            &y,
            "forward",
        );
        let g = randn(y.shape());
        let grads = |composed: bool| {
            let mut sums = [None, None, None];
            {
                let [s0, s1, s2] = &mut sums;
                let mut slots = [
                    GradSlot::new(s0, true),
                    GradSlot::new(s1, true),
                    GradSlot::new(s2, true),
                ];
                no_grad(|| {
                    if composed {
                        conv2d_backward(&op, &d, &x, &w, &g, &mut slots)
                    } else {
                        op.backward(&(x.clone(), w.clone()), &g, &mut slots)
                    }
                });
            }
            sums.map(|s| s.expect("every gradient is needed"))
        };
        for ((kernel, composed), what) in
            grads(false).iter().zip(grads(true)).zip(["dx", "dw", "db"])
        {
            close(&composed, kernel, what);
        }
    }
}
