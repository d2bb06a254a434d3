//! softmax and log_softmax along a dim, computed stably (shifted by the max),
//! with backward kernels shared by the tape and the compile-time path.

use crate::autograd::{apply, GradSlot, Op, Out, Spec};
use crate::backend::cpu::rows::{lane_dot, lane_max, lane_sum, lane_sum_of, par_rows};
use crate::backend::cpu::{run_vectorized, Kernel};
use crate::backend::Host;
use crate::error::Result;
use crate::tensor::{norm_dim, DType, Float, Tensor};

/// dL/dx of `y = softmax(x, dim)` from the output: `y * (dy - Σ_dim dy·y)`.
pub fn softmax_backward(y: &Tensor, dy: &Tensor, dim: isize) -> Tensor {
    let dot = (dy * y).sum_dim(dim, true);
    y * &(dy - &dot)
}

/// dL/dx of `y = log_softmax(x, dim)` from the output: `dy - exp(y) · Σ_dim dy`.
pub fn log_softmax_backward(y: &Tensor, dy: &Tensor, dim: isize) -> Tensor {
    let total = dy.sum_dim(dim, true);
    dy - &(y.exp() * &total)
}

/// `softmax(x, dim)` (`log: false`) or `log_softmax(x, dim)` (`log: true`),
/// computed stably (shifted by the max along `dim`).
#[derive(Clone, Copy, Debug)]
pub struct Softmax {
    /// The dim normalised over (negative counting from the end).
    pub dim: isize,
    /// log_softmax instead.
    pub log: bool,
}

impl Softmax {
    /// Softmax over `dim`.
    pub fn new(dim: isize) -> Self {
        Softmax { dim, log: false }
    }
}

/// `log_softmax(x, dim)`: [`Softmax`] in log space, as its own op type
/// (`network!`'s `log_softmax(x, dim)`).
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax(Softmax);

impl LogSoftmax {
    /// Log-softmax over `dim`.
    pub fn new(dim: isize) -> Self {
        LogSoftmax(Softmax { dim, log: true })
    }
}

impl Op for LogSoftmax {
    const NAME: &'static str = "LogSoftmaxBackward";
    const OP: &'static str = "log_softmax";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    type Saved = Tensor;
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        self.0.spec(x)
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        self.0.forward(x, out)
    }
    fn save(&self, x: &[&Tensor], y: &Tensor, need: &[bool]) -> Tensor {
        self.0.save(x, y, need)
    }
    fn backward(&self, y: &Tensor, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        self.0.backward(y, g, grads)
    }
}

impl Op for Softmax {
    const NAME: &'static str = "SoftmaxBackward";
    const OP: &'static str = "softmax";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    type Saved = Tensor;

    fn name(&self, _: &[&Tensor]) -> &'static str {
        if self.log {
            "LogSoftmaxBackward"
        } else {
            "SoftmaxBackward"
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        norm_dim(self.op(), self.dim, x.ndim())?;
        Ok(Spec {
            shape: crate::autograd::Shape::from_slice(x.shape()),
            dtype: if x.dtype().is_float() {
                x.dtype()
            } else {
                crate::tensor::DType::F32
            },
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let d = norm_dim(self.op(), self.dim, x[0].ndim()).expect("checked by spec") as isize;
        let x = super::as_float(x[0]);
        if x.numel() == 0 {
            // Nothing to normalise (a size-0 dim has no max): an empty result
            // of the input's shape, as in PyTorch.
            return out.set(x.detach());
        }
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() && x.dtype() == crate::tensor::DType::F32 && x.ndim() > 0 {
            let y = crate::backend::cuda::ops::softmax(x.array(), d as usize, self.log);
            return out.set(Tensor::from_array(y));
        }
        if x.device().is_cpu() && x.is_contiguous() && x.ndim() > 0 {
            let dims = split_at_dim(x.shape(), d as usize);
            let off = x.layout().offset;
            let log = self.log;
            return match x.dtype() {
                DType::F32 => out.host_slice::<f32, 1>([&x], |[g], o, acc| {
                    rows(&f32::of(g)[off..off + o.len()], o, dims, log, acc)
                }),
                _ => out.host_slice::<f64, 1>([&x], |[g], o, acc| {
                    rows(&f64::of(g)[off..off + o.len()], o, dims, log, acc)
                }),
            };
        }
        let shifted = &x - &x.max_dim(d, true).0;
        out.set(if self.log {
            let lse = shifted.exp().sum_dim(d, true).log();
            &shifted - &lse
        } else {
            let e = shifted.exp();
            let s = e.sum_dim(d, true);
            &e / &s
        })
    }

    fn save(&self, _: &[&Tensor], y: &Tensor, _: &[bool]) -> Tensor {
        y.clone()
    }

    fn backward(&self, y: &Tensor, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let d = norm_dim(self.op(), self.dim, y.ndim()).expect("checked by spec");
        let fused = y.device().is_cpu()
            && y.is_contiguous()
            && g.is_contiguous()
            && crate::tensor::same_shape(y.shape(), g.shape())
            && y.dtype() == g.dtype()
            && y.ndim() > 0;
        if !fused {
            return grads[0].add(if self.log {
                log_softmax_backward(y, g, d as isize)
            } else {
                softmax_backward(y, g, d as isize)
            });
        }
        let dims = split_at_dim(y.shape(), d);
        let log = self.log;
        grads[0].add_into(Spec::like(y), |out| {
            let (oy, og, n) = (y.layout().offset, g.layout().offset, y.numel());
            match y.dtype() {
                DType::F32 => out.host_slice::<f32, 2>([y, g], |[yb, gb], o, acc| {
                    rows_backward(
                        &f32::of(yb)[oy..oy + n],
                        &f32::of(gb)[og..og + n],
                        o,
                        dims,
                        log,
                        acc,
                    )
                }),
                _ => out.host_slice::<f64, 2>([y, g], |[yb, gb], o, acc| {
                    rows_backward(
                        &f64::of(yb)[oy..oy + n],
                        &f64::of(gb)[og..og + n],
                        o,
                        dims,
                        log,
                        acc,
                    )
                }),
            }
        })
    }
}

/// `(outer, n, inner)` of a contiguous shape split at `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product();
    (outer, shape[dim], inner)
}

/// The fused CPU kernel: `o = softmax(x)` or `log_softmax(x)` along the
/// middle dim of contiguous `[outer, n, inner]` data, shifted by the row's
/// max (a NaN in a row makes it NaN); added into `o` when `acc`.
fn rows<T: Float>(
    x: &[T],
    o: &mut [T],
    (outer, n, inner): (usize, usize, usize),
    log: bool,
    acc: bool,
) {
    if n == 0 {
        return;
    }
    if inner == 1 {
        return last_dim_rows(x, o, n, log, acc);
    }
    let put = |o: &mut T, v: T| *o = if acc { *o + v } else { v };
    for a in 0..outer {
        for c in 0..inner {
            let at = |i: usize| a * n * inner + i * inner + c;
            let mut m = x[at(0)];
            for i in 1..n {
                let v = x[at(i)];
                if v > m || v.is_nan() {
                    m = v;
                }
            }
            let mut s = T::ZERO;
            if !log && !acc {
                // The exponentials go straight into the output, then scale.
                for i in 0..n {
                    let e = (x[at(i)] - m).exp();
                    s += e;
                    o[at(i)] = e;
                }
                for i in 0..n {
                    o[at(i)] = o[at(i)] / s;
                }
                continue;
            }
            for i in 0..n {
                s += (x[at(i)] - m).exp();
            }
            if log {
                let lse = s.ln();
                for i in 0..n {
                    put(&mut o[at(i)], (x[at(i)] - m) - lse);
                }
            } else {
                for i in 0..n {
                    put(&mut o[at(i)], (x[at(i)] - m).exp() / s);
                }
            }
        }
    }
}

/// The fused CPU gradient from the output `y` and `g` (contiguous, one
/// shape): softmax `y·(g - Σ g·y)`, log-softmax `g - exp(y)·Σ g`.
fn rows_backward<T: Float>(
    y: &[T],
    g: &[T],
    o: &mut [T],
    (outer, n, inner): (usize, usize, usize),
    log: bool,
    acc: bool,
) {
    if inner == 1 && n > 0 {
        return last_dim_rows_backward(y, g, o, n, log, acc);
    }
    for a in 0..outer {
        for c in 0..inner {
            let at = |i: usize| a * n * inner + i * inner + c;
            let mut s = T::ZERO;
            for i in 0..n {
                s += if log { g[at(i)] } else { g[at(i)] * y[at(i)] };
            }
            for i in 0..n {
                let (yv, gv) = (y[at(i)], g[at(i)]);
                let v = if log {
                    gv - yv.exp() * s
                } else {
                    yv * (gv - s)
                };
                let slot = &mut o[at(i)];
                *slot = if acc { *slot + v } else { v };
            }
        }
    }
}

/// [`rows`] over the last dim (`inner == 1`), the common case: rows of `n`
/// contiguous elements, blocks of them on each core, and each row's max,
/// exponentials and sum vectorised (the sums in lanes).
fn last_dim_rows<T: Float>(x: &[T], o: &mut [T], n: usize, log: bool, acc: bool) {
    par_rows(o, n, |rows, block| {
        run_vectorized(LastDimRows {
            x,
            y: &[],
            block,
            rows,
            n,
            log,
            acc,
        })
    });
}

/// [`rows_backward`] over the last dim, as [`last_dim_rows`].
fn last_dim_rows_backward<T: Float>(y: &[T], g: &[T], o: &mut [T], n: usize, log: bool, acc: bool) {
    par_rows(o, n, |rows, block| {
        run_vectorized(LastDimRows {
            x: g,
            y,
            block,
            rows,
            n,
            log,
            acc,
        })
    });
}

/// `o = softmax(x)` over rows of `n` contiguous elements, on the calling
/// thread: [`last_dim_rows`]'s kernel for a caller that splits the work
/// itself (the attention layer's fused step, one head at a time).
pub(crate) fn softmax_rows_serial<T: Float>(x: &[T], o: &mut [T], n: usize) {
    run_vectorized(LastDimRows {
        x,
        y: &[],
        rows: 0..o.len() / n,
        block: o,
        n,
        log: false,
        acc: false,
    })
}

/// Softmax's gradient `o = y·(g − Σ g·y)` over rows of `n`, on the calling
/// thread (as [`softmax_rows_serial`]).
pub(crate) fn softmax_rows_backward_serial<T: Float>(y: &[T], g: &[T], o: &mut [T], n: usize) {
    run_vectorized(LastDimRows {
        x: g,
        y,
        rows: 0..o.len() / n,
        block: o,
        n,
        log: false,
        acc: false,
    })
}

/// One block of rows of [`last_dim_rows`] (`y` empty: `x` is the input)
/// or of [`last_dim_rows_backward`] (`x` is the output's gradient, `y`
/// the output), written into `block`.
struct LastDimRows<'a, T> {
    x: &'a [T],
    y: &'a [T],
    block: &'a mut [T],
    rows: std::ops::Range<usize>,
    n: usize,
    log: bool,
    acc: bool,
}

impl<T: Float> Kernel for LastDimRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let LastDimRows {
            x,
            y,
            block,
            rows,
            n,
            log,
            acc,
        } = self;
        let put = |o: &mut T, v: T| *o = if acc { *o + v } else { v };
        for (r, o) in rows.zip(block.chunks_exact_mut(n)) {
            let x = &x[r * n..][..n];
            if !y.is_empty() {
                // Backward: softmax `y·(g − Σ g·y)`, log-softmax `g − exp(y)·Σ g`.
                let y = &y[r * n..][..n];
                let s = if log { lane_sum(x) } else { lane_dot(x, y) };
                for ((o, &yv), &gv) in o.iter_mut().zip(y).zip(x) {
                    put(
                        o,
                        if log {
                            gv - yv.exp() * s
                        } else {
                            yv * (gv - s)
                        },
                    );
                }
                continue;
            }
            let m = lane_max(x);
            if !log && !acc {
                // The exponentials go straight into the output, then scale.
                o.iter_mut().zip(x).for_each(|(o, &v)| *o = (v - m).exp());
                let s = lane_sum(o);
                o.iter_mut().for_each(|o| *o = *o / s);
                continue;
            }
            let s = lane_sum_of(x, |v| (v - m).exp());
            let lse = if log { s.ln() } else { T::ZERO };
            for (o, &v) in o.iter_mut().zip(x) {
                put(
                    o,
                    if log {
                        (v - m) - lse
                    } else {
                        (v - m).exp() / s
                    },
                );
            }
        }
    }
}

impl Softmax {
    fn op(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
}

impl Tensor {
    /// `exp(x) / Σ_dim exp(x)`, computed stably (`torch.softmax`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let p = tensor![[1., 2., 3.]].softmax(1);
    /// assert!((p.sum().item() - 1.0).abs() < 1e-6);
    /// ```
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor {
        apply(Softmax::new(dim), &[self])
    }

    /// `x - log Σ_dim exp(x)`, computed stably (`torch.log_softmax`).
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        apply(LogSoftmax::new(dim), &[self])
    }
}
