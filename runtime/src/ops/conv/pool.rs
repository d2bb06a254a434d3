//! 2-D pooling over `[N, C, H, W]` (or `[C, H, W]`) inputs as one op:
//! max pooling, average pooling (`count_include_pad`) and adaptive average
//! pooling. The CPU kernels walk each output's window; backward walks it
//! again (max: the first largest element, or the last NaN, as PyTorch
//! picks it, gets the gradient; average: each element its share). On the GPU,
//! fixed windows are composed of the gather (one index for every window)
//! and a reduction; adaptive ones of two matmuls with pooling matrices.

use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::backend::cpu::rows::par_rows;
use crate::backend::Host;
use crate::error::{Error, Result};
use crate::tensor::{checked_numel, DType, Float, Tensor};

/// Which pooling, with its windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool2d {
    /// The largest element of each `kernel` window, windows `stride` apart,
    /// `padding` (never chosen) on both sides.
    Max {
        /// Window (rows, columns).
        kernel: [usize; 2],
        /// Steps between windows.
        stride: [usize; 2],
        /// Implicit padding on both sides.
        padding: [usize; 2],
    },
    /// The mean of each window; padding zeros count when
    /// `count_include_pad` (PyTorch's default).
    Avg {
        /// Window (rows, columns).
        kernel: [usize; 2],
        /// Steps between windows.
        stride: [usize; 2],
        /// Zero padding on both sides.
        padding: [usize; 2],
        /// Whether padding zeros count in the divisor.
        count_include_pad: bool,
    },
    /// The mean over windows that split the input into `output` (rows,
    /// columns) as evenly as PyTorch does.
    AdaptiveAvg {
        /// The output size.
        output: [usize; 2],
    },
}

/// One output's window along a dim: `[start, end)` in input coordinates
/// (the padding's cells included for fixed windows), clipped to the input.
#[derive(Clone, Copy)]
struct Window {
    lo: usize,
    hi: usize,
    /// The divisor of an average.
    count: usize,
}

impl Pool2d {
    fn name(&self) -> &'static str {
        match self {
            Pool2d::Max { .. } => "max_pool2d",
            Pool2d::Avg { .. } => "avg_pool2d",
            Pool2d::AdaptiveAvg { .. } => "adaptive_avg_pool2d",
        }
    }

    /// The output size along dim `d` (0: rows, 1: columns) of an input of `n`.
    fn out_len(&self, d: usize, n: usize) -> Result<usize> {
        match *self {
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
            } => {
                if kernel[d] == 0 || stride[d] == 0 {
                    return Err(Error::Invalid(format!(
                        "{}: kernel {kernel:?} and stride {stride:?} must be positive",
                        self.name()
                    )));
                }
                if padding[d] * 2 > kernel[d] {
                    return Err(Error::Invalid(format!(
                        "{}: pad should be at most half of effective kernel size, but got \
                         pad={}, kernel_size={} (PyTorch's rule)",
                        self.name(),
                        padding[d],
                        kernel[d]
                    )));
                }
                let span = n + 2 * padding[d];
                if span < kernel[d] {
                    return Err(Error::shape(
                        self.name(),
                        format!(
                            "the window {kernel:?} is larger than the padded input ({span} along \
                             dim {}); use a smaller kernel or more padding",
                            d + 2
                        ),
                    ));
                }
                Ok((span - kernel[d]) / stride[d] + 1)
            }
            Pool2d::AdaptiveAvg { output } => Ok(output[d]),
        }
    }

    /// Output `i`'s window along dim `d` of an input of `n`.
    fn window(&self, d: usize, i: usize, n: usize) -> Window {
        match *self {
            Pool2d::Max {
                kernel,
                stride,
                padding,
            } => {
                let start = (i * stride[d]) as isize - padding[d] as isize;
                let end = start + kernel[d] as isize;
                let (lo, hi) = (start.max(0) as usize, (end.min(n as isize)).max(0) as usize);
                Window { lo, hi, count: 0 }
            }
            Pool2d::Avg {
                kernel,
                stride,
                padding,
                count_include_pad,
            } => {
                let start = (i * stride[d]) as isize - padding[d] as isize;
                let end = (start + kernel[d] as isize).min((n + padding[d]) as isize);
                let (lo, hi) = (start.max(0) as usize, (end.min(n as isize)).max(0) as usize);
                let count = if count_include_pad {
                    (end - start) as usize
                } else {
                    hi - lo
                };
                Window { lo, hi, count }
            }
            Pool2d::AdaptiveAvg { output } => {
                let o = output[d].max(1);
                let lo = i * n / o;
                let hi = ((i + 1) * n).div_ceil(o);
                Window {
                    lo,
                    hi,
                    count: hi - lo,
                }
            }
        }
    }

    /// `(planes, h, w, ho, wo)` of an input (`[.., H, W]`, 3-D or 4-D).
    fn dims(&self, x: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
        let nd = x.ndim();
        if nd != 3 && nd != 4 {
            return Err(Error::shape(
                self.name(),
                format!(
                    "expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got shape {:?}",
                    x.shape()
                ),
            ));
        }
        let (h, w) = (x.shape()[nd - 2], x.shape()[nd - 1]);
        let planes = x.shape()[..nd - 2].iter().product();
        Ok((planes, h, w, self.out_len(0, h)?, self.out_len(1, w)?))
    }

    /// Runs `f(plane, k, rows, cols)` on every output position of the
    /// planes `planes`, `k` being the output's flat index.
    fn for_each_window(
        &self,
        (_, h, w, ho, wo): Dims,
        planes: std::ops::Range<usize>,
        mut f: impl FnMut(usize, usize, Window, Window),
    ) {
        for p in planes {
            for oy in 0..ho {
                let rows = self.window(0, oy, h);
                for ox in 0..wo {
                    let cols = self.window(1, ox, w);
                    f(p, (p * ho + oy) * wo + ox, rows, cols);
                }
            }
        }
    }
}

/// A window's largest element and whether it holds a NaN (`None` when
/// empty). Branch-free: on real data which element wins is a coin toss,
/// and a mispredicted branch per element was most of the pooling's time.
fn window_max<T: Float>(plane: &[T], w: usize, rows: Window, cols: Window) -> Option<(T, bool)> {
    if rows.lo >= rows.hi || cols.lo >= cols.hi {
        return None;
    }
    let (mut top, mut nan) = (plane[rows.lo * w + cols.lo], false);
    for y in rows.lo..rows.hi {
        for &v in &plane[y * w..][cols.lo..cols.hi] {
            top = if v > top { v } else { top };
            nan |= v.is_nan();
        }
    }
    Some((top, nan))
}

/// The flat index (within its plane) of a window's first largest element,
/// or of its last NaN (PyTorch's `val > max || isnan(val)` picks both);
/// `None` for an empty window. (The maximum first, then its position, with
/// selects: no branch on the data.)
fn argmax<T: Float>(plane: &[T], w: usize, rows: Window, cols: Window) -> Option<usize> {
    let (top, nan) = window_max(plane, w, rows, cols)?;
    let mut best = 0;
    if nan {
        for y in rows.lo..rows.hi {
            for (x, &v) in plane[y * w..][cols.lo..cols.hi].iter().enumerate() {
                best = if v.is_nan() {
                    y * w + cols.lo + x
                } else {
                    best
                };
            }
        }
        return Some(best);
    }
    for y in (rows.lo..rows.hi).rev() {
        let row = &plane[y * w..][cols.lo..cols.hi];
        for (x, &v) in row.iter().enumerate().rev() {
            best = if v == top { y * w + cols.lo + x } else { best };
        }
    }
    Some(best)
}

impl Op for Pool2d {
    const NAME: &'static str = "MaxPool2DWithIndicesBackward";
    const OP: &'static str = "pool2d";
    /// Pooling keeps the channels `network!` tracks.
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    /// The input.
    type Saved = Tensor;

    fn name(&self, _: &[&Tensor]) -> &'static str {
        match self {
            Pool2d::Max { .. } => Self::NAME,
            Pool2d::Avg { .. } => "AvgPool2DBackward",
            Pool2d::AdaptiveAvg { .. } => "AdaptiveAvgPool2DBackward",
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        let (_, _, _, ho, wo) = self.dims(x)?;
        if !x.dtype().is_float() {
            return Err(Error::dtype(
                self.name(),
                format!(
                    "expected a float input, got {}; convert it with .to_dtype(DType::F32)",
                    x.dtype()
                ),
            ));
        }
        let nd = x.ndim();
        let mut shape = crate::autograd::Shape::from_slice(&x.shape()[..nd - 2]);
        shape.extend([ho, wo]);
        checked_numel(self.name(), &shape)?;
        Ok(Spec {
            shape,
            dtype: x.dtype(),
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let x = x[0];
        let dims = self.dims(x).expect("checked by spec");
        if x.device().is_cuda() {
            return out.set(super::composed::pool2d_forward(self, dims, x));
        }
        let xc = x.contiguous();
        match x.dtype() {
            DType::F32 => forward_cpu::<f32>(self, dims, &xc, out),
            _ => forward_cpu::<f64>(self, dims, &xc, out),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Tensor {
        x[0].clone()
    }

    fn backward(&self, x: &Tensor, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let dims = self.dims(x).expect("checked by spec");
        if x.device().is_cuda() {
            return grads[0].add(super::composed::pool2d_backward(self, dims, x, g));
        }
        let (xc, gc) = (x.contiguous(), g.contiguous());
        let spec = Spec::like(x);
        grads[0].add_into(spec, |out| match g.dtype() {
            DType::F32 => backward_cpu::<f32>(self, dims, &xc, &gc, out),
            _ => backward_cpu::<f64>(self, dims, &xc, &gc, out),
        });
    }
}

/// The elements a contiguous tensor views, from its buffer.
fn elems<'b, T: Host>(b: &'b crate::backend::Buffer, t: &Tensor) -> &'b [T] {
    &T::of(b)[t.layout().offset..][..t.numel()]
}

type Dims = (usize, usize, usize, usize, usize);

fn forward_cpu<T: Float + Host>(op: &Pool2d, dims: Dims, x: &Tensor, out: &mut Out<'_>) {
    let (_, h, w, ho, wo) = dims;
    out.host_slice::<T, 1>([x], |[xb], o, acc| {
        let xs = elems::<T>(xb, x);
        // Each plane's outputs are its own: planes split across the pool.
        par_rows(o, ho * wo, |planes, block| {
            let first = planes.start * ho * wo;
            op.for_each_window(dims, planes, |p, k, rows, cols| {
                let plane = &xs[p * h * w..][..h * w];
                let v = match op {
                    Pool2d::Max { .. } => match window_max(plane, w, rows, cols) {
                        Some((_, true)) => T::from_f64(f64::NAN),
                        Some((top, false)) => top,
                        None => T::from_f64(f64::NEG_INFINITY),
                    },
                    _ => {
                        let mut s = 0.0;
                        for y in rows.lo..rows.hi {
                            s += plane[y * w + cols.lo..y * w + cols.hi]
                                .iter()
                                .map(|v| v.to_f64())
                                .sum::<f64>();
                        }
                        T::from_f64(s / (rows.count * cols.count).max(1) as f64)
                    }
                };
                let o = &mut block[k - first];
                *o = if acc { *o + v } else { v };
            });
        });
    });
}

fn backward_cpu<T: Float + Host>(
    op: &Pool2d,
    dims: Dims,
    x: &Tensor,
    g: &Tensor,
    out: &mut Out<'_>,
) {
    let (_, h, w, _, _) = dims;
    out.host_slice::<T, 2>([x, g], |[xb, gb], o, acc| {
        let (xs, gs) = (elems::<T>(xb, x), elems::<T>(gb, g));
        // A plane's windows add into that plane only: planes split across
        // the pool.
        par_rows(o, h * w, |planes, block| {
            if !acc {
                block.fill(T::ZERO);
            }
            let first = planes.start;
            op.for_each_window(dims, planes, |p, k, rows, cols| {
                let o = &mut block[(p - first) * h * w..][..h * w];
                match op {
                    Pool2d::Max { .. } => {
                        if let Some(i) = argmax(&xs[p * h * w..][..h * w], w, rows, cols) {
                            o[i] += gs[k];
                        }
                    }
                    _ => {
                        let share = gs[k] / T::from_f64((rows.count * cols.count).max(1) as f64);
                        for y in rows.lo..rows.hi {
                            for v in &mut o[y * w + cols.lo..y * w + cols.hi] {
                                *v += share;
                            }
                        }
                    }
                }
            });
        });
    });
}

impl Pool2d {
    /// Where each output of a max pooling of `x` came from: the flat index
    /// within its `H·W` plane of the window's first largest element (or its
    /// last NaN), as i64 in the output's shape: PyTorch's `return_indices`.
    /// Computed without recording; an average pooling is an `Err`.
    pub fn max_indices(&self, x: &Tensor) -> Result<Tensor> {
        if !matches!(self, Pool2d::Max { .. }) {
            return Err(Error::Invalid(format!(
                "{}: indices come from max pooling only; use max_pool2d_with_indices",
                self.name()
            )));
        }
        let dims = self.dims(x)?;
        let (planes, h, w, ho, wo) = dims;
        let host = crate::autograd::no_grad(|| x.to(&crate::Device::Cpu).contiguous());
        let mut idx = vec![-1i64; planes * ho * wo];
        let guard = host.storage().read();
        macro_rules! walk {
            ($t:ty) => {{
                let xs = elems::<$t>(&guard, &host);
                self.for_each_window(dims, 0..planes, |p, k, rows, cols| {
                    let plane = &xs[p * h * w..][..h * w];
                    idx[k] = argmax(plane, w, rows, cols).map_or(-1, |i| i as i64);
                });
            }};
        }
        match host.dtype() {
            DType::F32 => walk!(f32),
            DType::F64 => walk!(f64),
            d => {
                return Err(Error::dtype(
                    self.name(),
                    format!("expected a float input, got {d}"),
                ))
            }
        }
        drop(guard);
        let mut shape = x.shape()[..x.ndim() - 2].to_vec();
        shape.extend([ho, wo]);
        Ok(Tensor::from_vec(idx, shape).to(&x.device()))
    }
    /// Max pooling with `kernel` windows `stride` apart (PyTorch's default
    /// stride is the kernel) and `padding` on both sides.
    pub fn max(
        kernel: impl super::Pair,
        stride: impl super::Pair,
        padding: impl super::Pair,
    ) -> Self {
        Pool2d::Max {
            kernel: kernel.pair(),
            stride: stride.pair(),
            padding: padding.pair(),
        }
    }

    /// Average pooling; `count_include_pad` is PyTorch's (true by default).
    pub fn avg(
        kernel: impl super::Pair,
        stride: impl super::Pair,
        padding: impl super::Pair,
        count_include_pad: bool,
    ) -> Self {
        Pool2d::Avg {
            kernel: kernel.pair(),
            stride: stride.pair(),
            padding: padding.pair(),
            count_include_pad,
        }
    }

    /// Adaptive average pooling to `output` (rows, columns).
    pub fn adaptive_avg(output: impl super::Pair) -> Self {
        Pool2d::AdaptiveAvg {
            output: output.pair(),
        }
    }
}
