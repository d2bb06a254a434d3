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
    // As 4-D (a 1-D convolution's tensors are a row of one).
    let (x, w) = (
        &x.reshape([d.n, d.c, d.h, d.w]),
        &w.reshape([d.o, d.c / d.groups, d.kh, d.kw]),
    );
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
    let (x_shape, x) = (x.shape(), &x.reshape([d.n, d.c, d.h, d.w]));
    let w4 = &w.reshape([d.o, d.c / d.groups, d.kh, d.kw]);
    let g = &g.reshape([d.n, d.o, d.ho, d.wo]);
    let idx = unfold_index(op, d, x);
    let gy = g.reshape([d.n, d.groups, d.o / d.groups, d.ho * d.wo]);
    if grads[0].needed() {
        let (hp, wp) = d.padded(op);
        let dcols = weight_mats(d, w4)
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
                .contiguous()
                .reshape(x_shape),
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

// ---------------------------------------------------------------- pooling

use super::pool::Pool2d;

/// `(planes, h, w, ho, wo)`.
type PoolDims = (usize, usize, usize, usize, usize);

/// The fixed windows' geometry: kernel, stride, padding.
fn fixed(op: &Pool2d) -> Option<([usize; 2], [usize; 2], [usize; 2])> {
    match *op {
        Pool2d::Max {
            kernel,
            stride,
            padding,
        }
        | Pool2d::Avg {
            kernel,
            stride,
            padding,
            ..
        } => Some((kernel, stride, padding)),
        Pool2d::AdaptiveAvg { .. } => None,
    }
}

/// For each window (row-major) and each of its cells, the element of a
/// padded plane (`[Hp, Wp]` flattened) it reads.
fn window_index(op: &Pool2d, (_, h, w, ho, wo): PoolDims, device: &crate::Device) -> Tensor {
    let (k, s, p) = fixed(op).expect("fixed windows");
    let wp = w + 2 * p[1];
    let _ = h;
    let mut idx = Vec::with_capacity(ho * wo * k[0] * k[1]);
    for oy in 0..ho {
        for ox in 0..wo {
            for i in 0..k[0] {
                for j in 0..k[1] {
                    idx.push(((oy * s[0] + i) * wp + ox * s[1] + j) as i64);
                }
            }
        }
    }
    Tensor::from_vec(idx, [ho * wo * k[0] * k[1]]).to(device)
}

/// The windows' cells of `x` padded with `fill`, `[planes, ho·wo, kh·kw]`.
fn windows(op: &Pool2d, d: PoolDims, x: &Tensor, idx: &Tensor, fill: f64) -> Tensor {
    let (planes, h, w, ho, wo) = d;
    let (k, _, p) = fixed(op).expect("fixed windows");
    let (hp, wp) = (h + 2 * p[0], w + 2 * p[1]);
    let xp = Tensor::full_opts([planes, hp, wp], fill, &x.options());
    xp.narrow(1, p[0], h)
        .narrow(2, p[1], w)
        .copy_(&x.reshape([planes, h, w]));
    xp.reshape([planes, hp * wp])
        .index_select(1, idx)
        .reshape([planes, ho * wo, k[0] * k[1]])
}

/// Each window's divisor, `[ho·wo, 1]`: the cells that are not padding,
/// or all of them with `count_include_pad`.
fn divisors(op: &Pool2d, d: PoolDims, x: &Tensor, idx: &Tensor) -> Tensor {
    let (_, h, w, ho, wo) = d;
    let (k, _, _) = fixed(op).expect("fixed windows");
    match op {
        Pool2d::Avg {
            count_include_pad: false,
            ..
        } => {
            let ones = Tensor::ones_opts([1, h, w], &x.options());
            windows(op, (1, h, w, ho, wo), &ones, idx, 0.0)
                .sum_dim(2, false)
                .reshape([ho * wo, 1])
        }
        _ => Tensor::full_opts([ho * wo, 1], (k[0] * k[1]) as f64, &x.options()),
    }
}

/// The 1-D pooling matrix of adaptive average pooling, `[out, n]`.
fn adaptive_matrix(n: usize, out: usize, x: &Tensor) -> Tensor {
    let mut m = vec![0.0; out * n];
    for i in 0..out {
        let (lo, hi) = (i * n / out.max(1), ((i + 1) * n).div_ceil(out.max(1)));
        for j in lo..hi {
            m[i * n + j] = 1.0 / (hi - lo) as f64;
        }
    }
    Tensor::from_vec(m, [out, n])
        .to_dtype(x.dtype())
        .to(&x.device())
}

pub(crate) fn pool2d_forward(op: &Pool2d, d: PoolDims, x: &Tensor) -> Tensor {
    let (planes, h, w, ho, wo) = d;
    let nd = x.ndim();
    let mut shape = x.shape()[..nd - 2].to_vec();
    shape.extend([ho, wo]);
    let flat = match op {
        Pool2d::AdaptiveAvg { .. } => {
            let (ph, pw) = (adaptive_matrix(h, ho, x), adaptive_matrix(w, wo, x));
            ph.matmul(&x.reshape([planes, h, w])).matmul(&pw.t())
        }
        Pool2d::Max { .. } => {
            let idx = window_index(op, d, &x.device());
            windows(op, d, x, &idx, f64::NEG_INFINITY)
                .max_dim(2, false)
                .0
        }
        Pool2d::Avg { .. } => {
            let idx = window_index(op, d, &x.device());
            let sums = windows(op, d, x, &idx, 0.0).sum_dim(2, true);
            (sums / divisors(op, d, x, &idx)).reshape([planes, ho * wo])
        }
    };
    flat.reshape(shape)
}

/// Each window's winning cell, `[planes, ho·wo, 1]`, as the CPU kernel
/// and PyTorch pick it: the first largest, or the last NaN where the window
/// holds one (`max_dim` alone picks the first NaN).
fn window_argmax(win: &Tensor) -> Tensor {
    let (best, first) = win.max_dim(2, true);
    let cells = win.shape()[2];
    // The last NaN: the largest `cell + 1` over the NaN cells (0: none).
    let position = Tensor::arange_opts(1.0, cells as f64 + 1.0, 1.0, &win.options());
    let last_nan = (Tensor::where_cond(&win.ne(win), &position, &win.zeros_like())
        .max_dim(2, true)
        .0
        - 1.0)
        .to_dtype(crate::tensor::DType::I64);
    Tensor::where_cond(&best.ne(&best), &last_nan, &first)
}

pub(crate) fn pool2d_backward(op: &Pool2d, d: PoolDims, x: &Tensor, g: &Tensor) -> Tensor {
    let (planes, h, w, ho, wo) = d;
    if let Pool2d::AdaptiveAvg { .. } = op {
        let (ph, pw) = (adaptive_matrix(h, ho, x), adaptive_matrix(w, wo, x));
        let dx = ph.t().matmul(&g.reshape([planes, ho, wo])).matmul(&pw);
        return dx.reshape(x.shape());
    }
    let (k, _, p) = fixed(op).expect("fixed windows");
    let (hp, wp) = (h + 2 * p[0], w + 2 * p[1]);
    let idx = window_index(op, d, &x.device());
    let cells = k[0] * k[1];
    let g3 = g.reshape([planes, ho * wo, 1]);
    let dcells = match op {
        Pool2d::Max { .. } => {
            let at = window_argmax(&windows(op, d, x, &idx, f64::NEG_INFINITY));
            Tensor::zeros_opts([planes, ho * wo, cells], &g.options()).scatter_add(2, &at, &g3)
        }
        _ => (g3 / divisors(op, d, x, &idx)).expand([planes, ho * wo, cells]),
    };
    let spread = idx.unsqueeze(0).expand([planes, idx.numel()]).contiguous();
    Tensor::zeros_opts([planes, hp * wp], &g.options())
        .scatter_add(1, &spread, &dcells.reshape([planes, idx.numel()]))
        .reshape([planes, hp, wp])
        .narrow(1, p[0], h)
        .narrow(2, p[1], w)
        .contiguous()
        .reshape(x.shape())
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

    /// Every pooling's composed path against the CPU kernels, on the CPU,
    /// with ties and padding.
    #[test]
    fn composed_pooling_matches_the_kernels() {
        let mut rng = crate::Generator::new(9);
        // Few distinct values: ties inside windows. Enough samples that the
        // kernels split their planes across the pool.
        let n = if cfg!(miri) { 2 } else { 800 };
        let v: Vec<f64> = (0..n * 126)
            .map(|k| ((k * 7 + 3) % 5) as f64 - 2.0)
            .collect();
        let x = Tensor::from_vec(v, [n, 3, 7, 6]);
        let ops = [
            Pool2d::Max {
                kernel: [3, 2],
                stride: [2, 2],
                padding: [1, 1],
            },
            Pool2d::Avg {
                kernel: [3, 3],
                stride: [2, 1],
                padding: [1, 1],
                count_include_pad: true,
            },
            Pool2d::Avg {
                kernel: [2, 3],
                stride: [1, 2],
                padding: [1, 1],
                count_include_pad: false,
            },
            Pool2d::AdaptiveAvg { output: [3, 4] },
        ];
        for op in ops {
            let y = apply(op, &[&x]);
            let d = (n * 3, 7, 6, y.shape()[2], y.shape()[3]);
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                crate::test_util::assert_close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), 1e-12, what)
            };
            close(
                &no_grad(|| pool2d_forward(&op, d, &x)),
                &y,
                &format!("{op:?} forward"),
            );
            let g = Tensor::randn_with(y.shape(), &mut rng).to_dtype(DType::F64);
            let mut sum = None;
            no_grad(|| op.backward(&x, &g, &mut [GradSlot::new(&mut sum, true)]));
            let kernel = sum.expect("needed");
            close(
                &no_grad(|| pool2d_backward(&op, d, &x, &g)),
                &kernel,
                &format!("{op:?} backward"),
            );
        }
    }

    /// NaNs inside windows, two in most: the composed backward sends each
    /// window's gradient to its last NaN, as the CPU kernel (and PyTorch's
    /// max_pool2d) does.
    #[test]
    fn composed_max_pooling_picks_the_last_nan() {
        let v: Vec<f64> = (0..84)
            .map(|k| {
                if k % 4 == 1 {
                    f64::NAN
                } else {
                    ((k * 7 + 3) % 5) as f64 - 2.0
                }
            })
            .collect();
        let x = Tensor::from_vec(v, [2, 1, 7, 6]);
        let op = Pool2d::Max {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        };
        let y = apply(op, &[&x]);
        let d = (2, 7, 6, y.shape()[2], y.shape()[3]);
        // A distinct gradient per window: where each one lands shows.
        let g = Tensor::arange(1.0, y.numel() as f64 + 1.0, 1.0)
            .to_dtype(DType::F64)
            .reshape(y.shape());
        let mut sum = None;
        no_grad(|| op.backward(&x, &g, &mut [GradSlot::new(&mut sum, true)]));
        let kernel = sum.expect("needed").to_vec::<f64>();
        assert_eq!(
            no_grad(|| pool2d_backward(&op, d, &x, &g)).to_vec::<f64>(),
            kernel
        );
        // Plane 0's top row of windows (rows 0-1): the first (columns 0-1)
        // holds one NaN, at (0, 1); the second (columns 1-3) and the third
        // (3-5) two each, the later being (1, 3) in both, which so takes
        // their gradients 2 + 3 (the first NaN would give (0, 1) 1 + 2).
        assert_eq!(kernel[1], 1.0);
        assert_eq!(kernel[6 + 3], 5.0);
    }

    /// The 1-D form (3-D tensors, one row) through the composed path.
    #[test]
    fn composed_path_matches_the_kernels_in_1d() {
        let mut rng = crate::Generator::new(11);
        let mut randn = |s: &[usize]| Tensor::randn_with(s, &mut rng).to_dtype(DType::F64);
        let (x, w) = (randn(&[2, 4, 9]), randn(&[4, 2, 3]));
        let op = Conv2d {
            stride: [1, 2],
            padding: [0, 0, 1, 2],
            dilation: [1, 2],
            groups: 2,
        };
        let y = apply(op, &[&x, &w]);
        assert_eq!(y.ndim(), 3);
        let d = Dims {
            n: 2,
            c: 4,
            h: 1,
            w: 9,
            o: 4,
            kh: 1,
            kw: 3,
            ho: 1,
            wo: y.shape()[2],
            groups: 2,
        };
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            crate::test_util::assert_close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), 1e-12, what)
        };
        close(
            &no_grad(|| conv2d_forward(&op, &d, &x, &w, None)),
            &y,
            "forward",
        );
        let g = randn(y.shape());
        let grads = |composed: bool| {
            let (mut dx, mut dw) = (None, None);
            {
                let mut slots = [GradSlot::new(&mut dx, true), GradSlot::new(&mut dw, true)];
                no_grad(|| {
                    if composed {
                        conv2d_backward(&op, &d, &x, &w, &g, &mut slots)
                    } else {
                        op.backward(&(x.clone(), w.clone()), &g, &mut slots)
                    }
                });
            }
            [dx.expect("needed"), dw.expect("needed")]
        };
        for ((kernel, composed), what) in grads(false).iter().zip(grads(true)).zip(["dx", "dw"]) {
            assert_eq!(composed.shape(), kernel.shape(), "{what}");
            close(&composed, kernel, what);
        }
    }
}
