//! Reductions over all elements or chosen dims: sum and mean (`sum.rs`),
//! logsumexp, cumsum, max/min (values and indices), argmax/argmin, var, std,
//! and `sum_to` (the backward of broadcasting).

mod cumsum;
mod extremum;
mod logsumexp;
mod sum;
mod var;

pub use cumsum::Cumsum;
pub use logsumexp::Logsumexp;
pub use sum::{Mean, MeanDim, Sum, SumDim};
pub use var::Var;

use rayon::prelude::*;

use crate::autograd::no_grad;
use crate::backend::{cpu, memory, Buffer};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{norm_dim, Float, Layout, Tensor};

/// One or several dimensions, negative ones counting from the end:
/// `1`, `-1`, `[0, 2]`, `&[1, 2][..]`, `vec![0]`.
pub trait Dims {
    /// The dimensions as given.
    fn to_dims(&self) -> Vec<isize>;
}

macro_rules! impl_dims {
    ($($t:ty),*) => {$(
        impl Dims for $t {
            fn to_dims(&self) -> Vec<isize> {
                vec![*self as isize]
            }
        }
        impl<const N: usize> Dims for [$t; N] {
            fn to_dims(&self) -> Vec<isize> {
                self.iter().map(|&d| d as isize).collect()
            }
        }
        impl Dims for &[$t] {
            fn to_dims(&self) -> Vec<isize> {
                self.iter().map(|&d| d as isize).collect()
            }
        }
        impl Dims for Vec<$t> {
            fn to_dims(&self) -> Vec<isize> {
                self.iter().map(|&d| d as isize).collect()
            }
        }
    )*};
}
impl_dims!(i32, i64, isize, usize);

/// Normalised, sorted, de-duplicated dims; an empty list means all dims.
#[track_caller]
fn resolve_dims(op: &'static str, dims: &impl Dims, ndim: usize) -> Vec<usize> {
    try_resolve_dims(op, &dims.to_dims(), ndim).or_panic()
}

/// Fallible [`resolve_dims`] of dims as given.
pub(crate) fn try_resolve_dims(
    op: &'static str,
    given: &[isize],
    ndim: usize,
) -> Result<Vec<usize>> {
    if given.is_empty() {
        return Ok((0..ndim).collect());
    }
    let mut out: Vec<usize> = given
        .iter()
        .map(|&d| norm_dim(op, d, ndim))
        .collect::<Result<_>>()?;
    out.sort_unstable();
    let before = out.len();
    out.dedup();
    if out.len() != before {
        return Err(Error::shape(
            op,
            format!("dim {given:?} appears more than once in the list of dims to reduce"),
        ));
    }
    // A 0-d tensor reduces over "dim 0" as over nothing.
    if ndim == 0 {
        out.clear();
    }
    Ok(out)
}

/// The result shape with reduced dims kept as 1.
pub(crate) fn keepdim_shape(shape: &[usize], dims: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &s)| if dims.contains(&i) { 1 } else { s })
        .collect()
}

pub(crate) fn final_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    if keepdim {
        keepdim_shape(shape, dims)
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !dims.contains(i))
            .map(|(_, &s)| s)
            .collect()
    }
}

/// Splits a layout into the kept part and the reduced part.
fn split(l: &Layout, dims: &[usize]) -> (Layout, Layout) {
    let mut kept = Layout {
        shape: Default::default(),
        strides: Default::default(),
        offset: l.offset,
    };
    let mut red = Layout {
        shape: Default::default(),
        strides: Default::default(),
        offset: 0,
    };
    for d in 0..l.ndim() {
        let part = if dims.contains(&d) {
            &mut red
        } else {
            &mut kept
        };
        part.shape.push(l.shape[d]);
        part.strides.push(l.strides[d]);
    }
    (kept, red)
}

/// Folds every reduced block: `out[o] = finish(fold(init, elements of block o))`;
/// `step` also receives the row-major position of the element within its block.
#[track_caller]
pub(super) fn reduce_blocks<T: Copy + Sync, Acc: Clone + Send + Sync, A: Send>(
    op: &'static str,
    src: &[T],
    l: &Layout,
    dims: &[usize],
    init: Acc,
    step: impl Fn(Acc, T, usize) -> Acc + Sync,
    finish: impl Fn(Acc) -> A + Sync,
) -> Vec<A> {
    l.assert_within(op, src.len());
    let (kept, red) = split(l, dims);
    let n_out = kept.numel();
    let n_red = red.numel();
    let fold_at = |base: usize| {
        let mut acc = init.clone();
        let mut pos = 0;
        cpu::walk(&red.shape, [&red.strides], [base], 0, n_red, |[o]| {
            acc = step(acc.clone(), src[o], pos);
            pos += 1;
        });
        finish(acc)
    };
    let fill = |start: usize, chunk: &mut [std::mem::MaybeUninit<A>]| {
        let mut i = 0;
        cpu::walk(
            &kept.shape,
            [&kept.strides],
            [kept.offset],
            start,
            chunk.len(),
            |[b]| {
                chunk[i].write(fold_at(b));
                i += 1;
            },
        );
    };
    if n_out * n_red >= cpu::PAR_THRESHOLD && n_out > 1 {
        let per = (n_out / (4 * rayon::current_num_threads())).max(1);
        let mut out: Vec<A> = memory::alloc(op, &kept.shape, n_out);
        out.spare_capacity_mut()[..n_out]
            .par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, c)| fill(i * per, c));
        // SAFETY: `fill` writes every slot of every chunk.
        unsafe { out.set_len(n_out) };
        out
    } else {
        cpu::build_vec(op, &kept.shape, n_out, fill)
    }
}

/// Sum of a contiguous slice with eight running partial sums (vectorises, and
/// loses less precision than one running sum).
fn sum_slice<T: Float>(s: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = s.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut total = T::ZERO;
    for a in acc {
        total += a;
    }
    for &x in rest {
        total += x;
    }
    total
}

/// Sums over `dims` of a float buffer, with fast paths for contiguous inputs
/// reduced over trailing dims (slices) or leading dims (rows added together).
#[track_caller]
pub(super) fn sum_float<T: Float + memory::ZeroBits>(
    src: &[T],
    l: &Layout,
    dims: &[usize],
) -> Vec<T> {
    let nd = l.ndim();
    if l.is_contiguous() && !dims.is_empty() {
        l.assert_within("sum", src.len());
        let n = l.numel();
        let s = &src[l.offset..l.offset + n];
        let k = dims.len();
        // The counts below are partial products of a checked shape.
        if dims.iter().enumerate().all(|(i, &d)| d == nd - k + i) {
            let r: usize = l.shape[nd - k..].iter().product();
            let kept = &l.shape[..nd - k];
            if r == 0 {
                return memory::try_zeros("sum", kept, kept.iter().product()).or_panic();
            }
            let mut out = memory::alloc("sum", kept, n / r);
            if n >= cpu::PAR_THRESHOLD {
                out.par_extend(s.par_chunks(r).map(sum_slice));
            } else {
                out.extend(s.chunks(r).map(sum_slice));
            }
            return out;
        }
        if dims.iter().enumerate().all(|(i, &d)| d == i) {
            let o: usize = l.shape[k..].iter().product();
            let mut out = memory::try_zeros("sum", &l.shape[k..], o).or_panic();
            if o > 0 {
                for row in s.chunks(o) {
                    for (a, &x) in out.iter_mut().zip(row) {
                        *a += x;
                    }
                }
            }
            return out;
        }
    }
    reduce_blocks("sum", src, l, dims, T::ZERO, |a, x, _| a + x, |a| a)
}

/// dL/dx of a sum (`scale` 1) or mean (`scale` 1/count) over some dims of an
/// input of `input_shape`: `g·scale`, viewed with the reduced dims kept as 1
/// (`keep_shape`) and broadcast back without a copy.
pub fn sum_backward(g: &Tensor, input_shape: &[usize], keep_shape: &[usize], scale: f64) -> Tensor {
    let g = g.reshape(keep_shape);
    let g = if scale != 1.0 { &g * scale } else { g };
    g.expand(input_shape)
}

/// The keepdim shape of a reduction over `dims` (given as the user gave them;
/// empty means all) of an input of `input_shape`.
pub(crate) fn reduced_keep_shape(input_shape: &[usize], dims: &[isize]) -> Vec<usize> {
    let resolved = resolve_dims("sum", &dims.to_vec(), input_shape.len());
    keepdim_shape(input_shape, &resolved)
}

impl Tensor {
    /// Largest or smallest element along `dim`, with its index (the first one on ties).
    fn extremum_dim(
        &self,
        op: &'static str,
        dim: isize,
        keepdim: bool,
        largest: bool,
    ) -> (Tensor, Tensor) {
        let d = norm_dim(op, dim, self.ndim()).or_panic();
        let dims = if self.ndim() == 0 { vec![] } else { vec![d] };
        assert!(
            self.ndim() == 0 || self.shape()[d] > 0,
            "{op}: cannot reduce over dimension {d} of size 0 (shape {:?})",
            self.shape()
        );
        let out_shape = final_shape(self.shape(), &dims, keepdim);
        #[cfg(feature = "cuda")]
        let gpu = self.device().is_cuda().then(|| {
            let (v, i) =
                crate::backend::cuda::ops::extremum_dim(self.array(), &dims, largest, &out_shape);
            (Tensor::from_array(v), Tensor::from_array(i))
        });
        #[cfg(not(feature = "cuda"))]
        let gpu: Option<(Tensor, Tensor)> = None;
        let l = self.layout();
        // A NaN wins (PyTorch propagates NaN); otherwise strictly better replaces.
        fn pick<T: PartialOrd + Copy>(
            largest: bool,
        ) -> impl Fn((T, usize, bool), T, usize) -> (T, usize, bool) + Sync {
            move |(best, bi, started), x, i| {
                #[allow(clippy::eq_op)]
                let x_nan = x != x;
                #[allow(clippy::eq_op)]
                let best_nan = best != best;
                if !started || (!best_nan && (x_nan || if largest { x > best } else { x < best })) {
                    (x, i, true)
                } else {
                    (best, bi, true)
                }
            }
        }
        let (values, indices) = if let Some(vi) = gpu {
            vi
        } else {
            let (values, indices): (Buffer, Vec<i64>) = {
                let b = self.storage().read();
                macro_rules! run {
                    ($v:expr, $variant:ident, $zero:expr) => {{
                        let r = reduce_blocks(
                            op,
                            $v,
                            l,
                            &dims,
                            ($zero, 0usize, false),
                            pick(largest),
                            |a| a,
                        );
                        (
                            Buffer::$variant(r.iter().map(|a| a.0).collect()),
                            r.iter().map(|a| a.1 as i64).collect(),
                        )
                    }};
                }
                match &*b {
                    Buffer::F32(v) => run!(v, F32, 0f32),
                    Buffer::F64(v) => run!(v, F64, 0f64),
                    Buffer::I64(v) => run!(v, I64, 0i64),
                    Buffer::Bool(v) => run!(v, Bool, false),
                }
            };
            (
                Tensor::from_buffer(values, &out_shape, self.device()),
                Tensor::from_vec(indices, &out_shape),
            )
        };
        if !crate::autograd::needs_grad(&[self]) {
            return (values, indices);
        }
        // On the tape: the values again, as the input's elements at the
        // indices (the op whose gradient goes to the chosen elements).
        let keep = indices.reshape(keepdim_shape(self.shape(), &dims));
        let op = extremum::ExtremumValues {
            dim: d,
            keepdim,
            largest,
        };
        (crate::autograd::apply(op, &[self, &keep]), indices)
    }

    /// The largest or smallest element without recording (NaN wins).
    pub(crate) fn extremum_all_nograd(&self, largest: bool) -> Tensor {
        assert!(
            self.numel() > 0,
            "{}: cannot reduce an empty tensor (shape {:?}); pass a dim with max_dim/min_dim",
            if largest { "max" } else { "min" },
            self.shape()
        );
        no_grad(|| {
            let flat = self.reshape([self.numel()]);
            flat.extremum_dim("max", 0, false, largest).0
        })
    }

    /// The largest element: a 0-d tensor (NaN if any element is NaN).
    #[track_caller]
    pub fn max(&self) -> Tensor {
        crate::autograd::apply(extremum::ExtremumAll { largest: true }, &[self])
    }

    /// The smallest element: a 0-d tensor.
    #[track_caller]
    pub fn min(&self) -> Tensor {
        crate::autograd::apply(extremum::ExtremumAll { largest: false }, &[self])
    }

    /// Largest values along `dim` and their indices (`torch.max(x, dim)`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let (v, i) = tensor![[1., 5.], [7., 2.]].max_dim(1, false);
    /// assert_eq!(v.to_vec::<f32>(), vec![5., 7.]);
    /// assert_eq!(i.to_vec::<i64>(), vec![1, 0]);
    /// ```
    #[track_caller]
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> (Tensor, Tensor) {
        self.extremum_dim("max", dim, keepdim, true)
    }

    /// Smallest values along `dim` and their indices.
    #[track_caller]
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> (Tensor, Tensor) {
        self.extremum_dim("min", dim, keepdim, false)
    }

    /// Index of the largest element of the flattened tensor (0-d i64).
    pub fn argmax(&self) -> Tensor {
        no_grad(|| {
            self.reshape([self.numel()])
                .extremum_dim("argmax", 0, false, true)
                .1
        })
    }

    /// Index of the smallest element of the flattened tensor (0-d i64).
    pub fn argmin(&self) -> Tensor {
        no_grad(|| {
            self.reshape([self.numel()])
                .extremum_dim("argmin", 0, false, false)
                .1
        })
    }

    /// Indices of the largest values along `dim` (i64).
    #[track_caller]
    pub fn argmax_dim(&self, dim: isize, keepdim: bool) -> Tensor {
        no_grad(|| self.extremum_dim("argmax", dim, keepdim, true).1)
    }

    /// Indices of the smallest values along `dim` (i64).
    #[track_caller]
    pub fn argmin_dim(&self, dim: isize, keepdim: bool) -> Tensor {
        no_grad(|| self.extremum_dim("argmin", dim, keepdim, false).1)
    }

    /// Unbiased variance of all elements (Bessel's correction, PyTorch's default).
    pub fn var(&self) -> Tensor {
        crate::autograd::apply(Var::new(Vec::<isize>::new(), 1, false), &[self])
    }

    /// Variance over `dims` with `correction` (1: unbiased, 0: population).
    #[track_caller]
    pub fn var_dim(&self, dims: impl Dims, correction: usize, keepdim: bool) -> Tensor {
        crate::autograd::apply(Var::new(dims, correction, keepdim), &[self])
    }

    /// Unbiased standard deviation of all elements (PyTorch's default).
    pub fn std(&self) -> Tensor {
        crate::autograd::apply(Var::std(Vec::<isize>::new(), 1, false), &[self])
    }

    /// Standard deviation over `dims` with `correction` (1: unbiased).
    #[track_caller]
    pub fn std_dim(&self, dims: impl Dims, correction: usize, keepdim: bool) -> Tensor {
        crate::autograd::apply(Var::std(dims, correction, keepdim), &[self])
    }

    /// Sums `self` down to `shape`, which it was broadcast from: the backward of
    /// broadcasting, shared by every broadcasting op's gradient.
    ///
    /// ```
    /// use deriv_runtime::Tensor;
    /// let g = Tensor::ones([4, 3]);
    /// assert_eq!(g.sum_to(&[1, 3]).to_vec::<f32>(), vec![4., 4., 4.]);
    /// ```
    #[track_caller]
    pub fn sum_to(&self, shape: &[usize]) -> Tensor {
        sum_to(self, shape)
    }
}

/// See [`Tensor::sum_to`].
pub(crate) fn sum_to(g: &Tensor, shape: &[usize]) -> Tensor {
    if crate::tensor::same_shape(g.shape(), shape) {
        return g.clone();
    }
    let lead = g.ndim() - shape.len();
    let mut dims: Vec<usize> = (0..lead).collect();
    for (i, &s) in shape.iter().enumerate() {
        if s == 1 && g.shape()[lead + i] != 1 {
            dims.push(lead + i);
        }
    }
    let summed = if dims.is_empty() {
        g.clone()
    } else {
        g.sum_dim(dims, true)
    };
    summed.reshape(shape)
}
