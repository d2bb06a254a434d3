//! Creating tensors: from data, filled, ranges, identity and random.

use super::literal::{Scalar, TensorLiteral};
use super::{DType, Element, Tensor};
use crate::backend::{Buffer, Device};
use crate::error::{Error, OrPanic, Result};
use crate::random::{with_global_generator, Generator};

/// dtype, device and requires_grad for the `_opts` creation functions
/// (PyTorch's keyword arguments).
///
/// ```
/// use deriv_runtime::{DType, Device, Tensor, TensorOptions};
/// let opts = TensorOptions::new().dtype(DType::F64).device(&Device::Cpu).requires_grad(true);
/// let w = Tensor::zeros_opts([3, 2], &opts);
/// assert_eq!(w.dtype(), DType::F64);
/// assert!(w.requires_grad());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorOptions {
    dtype: DType,
    device: Device,
    requires_grad: bool,
}

impl Default for TensorOptions {
    fn default() -> Self {
        TensorOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            requires_grad: false,
        }
    }
}

impl TensorOptions {
    /// f32 on the CPU, not requiring grad.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the dtype.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Sets the device.
    pub fn device(mut self, device: &Device) -> Self {
        self.device = *device;
        self
    }
    /// Sets whether the created tensor is a leaf that requires grad.
    pub fn requires_grad(mut self, requires_grad: bool) -> Self {
        self.requires_grad = requires_grad;
        self
    }
}

/// A buffer of `n` copies of `value` converted to `dtype`.
pub(crate) fn filled(dtype: DType, n: usize, value: f64) -> Buffer {
    match dtype {
        DType::F32 => Buffer::F32(vec![value as f32; n]),
        DType::F64 => Buffer::F64(vec![value; n]),
        DType::I64 => Buffer::I64(vec![value as i64; n]),
        DType::Bool => Buffer::Bool(vec![value != 0.0; n]),
    }
}

/// A buffer of `dtype` from f64 values.
pub(crate) fn from_f64s(dtype: DType, v: Vec<f64>) -> Buffer {
    match dtype {
        DType::F32 => Buffer::F32(v.into_iter().map(|x| x as f32).collect()),
        DType::F64 => Buffer::F64(v),
        DType::I64 => Buffer::I64(v.into_iter().map(|x| x as i64).collect()),
        DType::Bool => Buffer::Bool(v.into_iter().map(|x| x != 0.0).collect()),
    }
}

impl Tensor {
    fn finish(buf: Buffer, shape: &[usize], opts: &TensorOptions) -> Tensor {
        let t = Tensor::from_buffer(buf, shape, opts.device);
        if opts.requires_grad {
            t.set_requires_grad(true);
        }
        t
    }

    /// A tensor of `shape` holding `data` in row-major order; the dtype is `T`'s.
    ///
    /// Panics when the lengths disagree; see [`try_from_vec`](Self::try_from_vec).
    ///
    /// ```
    /// use deriv_runtime::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2., 3., 4., 5., 6.], [2, 3]);
    /// assert_eq!(t.shape(), &[2, 3]);
    /// ```
    #[track_caller]
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl AsRef<[usize]>) -> Tensor {
        Self::try_from_vec(data, shape).or_panic()
    }

    /// Fallible [`from_vec`](Self::from_vec).
    pub fn try_from_vec<T: Element>(data: Vec<T>, shape: impl AsRef<[usize]>) -> Result<Tensor> {
        let shape = shape.as_ref();
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "{} values cannot fill shape {:?}, which holds {} elements; \
                     pass a shape whose product is {}",
                    data.len(),
                    shape,
                    n,
                    data.len()
                ),
            ));
        }
        Ok(Tensor::from_buffer(
            Buffer::from_vec(data),
            shape,
            Device::Cpu,
        ))
    }

    /// A tensor of `shape` copying `data` (row-major).
    #[track_caller]
    pub fn from_slice<T: Element>(data: &[T], shape: impl AsRef<[usize]>) -> Tensor {
        Self::from_vec(data.to_vec(), shape)
    }

    /// A zero-dimensional tensor holding `value` (dtype `T`'s).
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::from_buffer(Buffer::from_vec(vec![value]), &[], Device::Cpu)
    }

    /// Used by [`tensor!`](crate::tensor!): float literals give f32, integers i64.
    pub fn from_literal<L: TensorLiteral>(lit: &L) -> Tensor {
        Self::from_literal_dtype(lit, L::DTYPE)
    }

    /// Used by [`tensor!`](crate::tensor!) with an explicit dtype.
    pub fn from_literal_dtype<L: TensorLiteral>(lit: &L, dtype: DType) -> Tensor {
        let mut shape = Vec::new();
        lit.push_shape(&mut shape);
        let mut values = Vec::with_capacity(shape.iter().product());
        lit.push_values(&mut values);
        Tensor::from_buffer(from_f64s(dtype, values), &shape, Device::Cpu)
    }

    /// A tensor of `shape` filled with `value`, with the given options.
    pub fn full_opts(shape: impl AsRef<[usize]>, value: f64, opts: &TensorOptions) -> Tensor {
        let shape = shape.as_ref();
        #[cfg(feature = "cuda")]
        if let Device::Cuda(i) = opts.device {
            let t = crate::backend::cuda::ops::full(i, opts.dtype, shape, value);
            if opts.requires_grad {
                t.set_requires_grad(true);
            }
            return t;
        }
        let n = shape.iter().product();
        Self::finish(filled(opts.dtype, n, value), shape, opts)
    }

    /// An f32 tensor of `shape` filled with `value` (`torch.full`).
    pub fn full(shape: impl AsRef<[usize]>, value: f64) -> Tensor {
        Self::full_opts(shape, value, &TensorOptions::default())
    }

    /// f32 zeros (`torch.zeros`).
    ///
    /// ```
    /// use deriv_runtime::Tensor;
    /// // A minibatch of 8 one-second videos: 25 frames of 400x400 RGB.
    /// let videos = Tensor::zeros([8, 25, 400, 400, 3]);
    /// assert_eq!(videos.numel(), 96_000_000);
    /// ```
    pub fn zeros(shape: impl AsRef<[usize]>) -> Tensor {
        Self::full(shape, 0.0)
    }

    /// f32 ones (`torch.ones`).
    pub fn ones(shape: impl AsRef<[usize]>) -> Tensor {
        Self::full(shape, 1.0)
    }

    /// Zeros with the given options.
    pub fn zeros_opts(shape: impl AsRef<[usize]>, opts: &TensorOptions) -> Tensor {
        Self::full_opts(shape, 0.0, opts)
    }

    /// Ones with the given options.
    pub fn ones_opts(shape: impl AsRef<[usize]>, opts: &TensorOptions) -> Tensor {
        Self::full_opts(shape, 1.0, opts)
    }

    /// f32 zeros created on `device`.
    pub fn zeros_on(shape: impl AsRef<[usize]>, device: &Device) -> Tensor {
        Self::zeros_opts(shape, &TensorOptions::new().device(device))
    }

    /// f32 ones created on `device`.
    pub fn ones_on(shape: impl AsRef<[usize]>, device: &Device) -> Tensor {
        Self::ones_opts(shape, &TensorOptions::new().device(device))
    }

    /// The options (dtype, device) of this tensor, not requiring grad.
    pub fn options(&self) -> TensorOptions {
        TensorOptions::new()
            .dtype(self.dtype())
            .device(&self.device())
    }

    /// Zeros of this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Tensor {
        Self::zeros_opts(self.shape(), &self.options())
    }

    /// Ones of this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Tensor {
        Self::ones_opts(self.shape(), &self.options())
    }

    /// `value` repeated in this tensor's shape, dtype and device.
    pub fn full_like(&self, value: f64) -> Tensor {
        Self::full_opts(self.shape(), value, &self.options())
    }

    /// Values from `start` to `end` (exclusive) by `step`, like `torch.arange`:
    /// integer arguments give an i64 tensor, float arguments an f32 one.
    ///
    /// ```
    /// use deriv_runtime::{DType, Tensor};
    /// assert_eq!(Tensor::arange(0, 5, 1).to_vec::<i64>(), vec![0, 1, 2, 3, 4]);
    /// assert_eq!(Tensor::arange(0., 1., 0.25).dtype(), DType::F32);
    /// ```
    #[track_caller]
    pub fn arange<S: Scalar>(start: S, end: S, step: S) -> Tensor {
        Self::arange_opts(
            start.to_f64(),
            end.to_f64(),
            step.to_f64(),
            &TensorOptions::new().dtype(S::DTYPE),
        )
    }

    /// [`arange`](Self::arange) with explicit options.
    #[track_caller]
    pub fn arange_opts(start: f64, end: f64, step: f64, opts: &TensorOptions) -> Tensor {
        assert!(
            step != 0.0 && step.is_finite(),
            "arange: step must be finite and non-zero, got {step}"
        );
        assert!(
            (end - start) * step.signum() >= 0.0,
            "arange: upper bound and larger bound inconsistent with step sign \
             (start {start}, end {end}, step {step})"
        );
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Self::finish(from_f64s(opts.dtype, v), &[n], opts)
    }

    /// `steps` evenly spaced f32 values from `start` to `end` inclusive (`torch.linspace`).
    pub fn linspace(start: f64, end: f64, steps: usize) -> Tensor {
        let v: Vec<f64> = match steps {
            0 => vec![],
            1 => vec![start],
            _ => {
                let step = (end - start) / (steps - 1) as f64;
                (0..steps)
                    .map(|i| {
                        // Fill from both ends, as PyTorch does, so `end` is exact.
                        if i < steps / 2 {
                            start + step * i as f64
                        } else {
                            end - step * (steps - 1 - i) as f64
                        }
                    })
                    .collect()
            }
        };
        Tensor::from_buffer(from_f64s(DType::F32, v), &[steps], Device::Cpu)
    }

    /// The n x n f32 identity matrix (`torch.eye`).
    pub fn eye(n: usize) -> Tensor {
        let mut v = vec![0f32; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        Tensor::from_vec(v, [n, n])
    }

    /// Uniform samples from [0, 1) as f32, from the global generator (`torch.rand`).
    pub fn rand(shape: impl AsRef<[usize]>) -> Tensor {
        with_global_generator(|g| Self::rand_with(shape, g))
    }

    /// Standard normal samples as f32, from the global generator (`torch.randn`).
    pub fn randn(shape: impl AsRef<[usize]>) -> Tensor {
        with_global_generator(|g| Self::randn_with(shape, g))
    }

    /// Uniform samples from [0, 1) drawn from `gen`.
    pub fn rand_with(shape: impl AsRef<[usize]>, gen: &mut Generator) -> Tensor {
        let shape = shape.as_ref();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| gen.uniform() as f32).collect();
        Tensor::from_vec(v, shape)
    }

    /// Standard normal samples drawn from `gen`.
    pub fn randn_with(shape: impl AsRef<[usize]>, gen: &mut Generator) -> Tensor {
        let shape = shape.as_ref();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| gen.normal() as f32).collect();
        Tensor::from_vec(v, shape)
    }

    /// Uniform integers in `[low, high)` as i64, from the global generator (`torch.randint`).
    #[track_caller]
    pub fn randint(low: i64, high: i64, shape: impl AsRef<[usize]>) -> Tensor {
        assert!(
            low < high,
            "randint: low ({low}) must be below high ({high})"
        );
        let shape = shape.as_ref();
        let n: usize = shape.iter().product();
        let v: Vec<i64> =
            with_global_generator(|g| (0..n).map(|_| g.int_range(low, high)).collect());
        Tensor::from_vec(v, shape)
    }

    /// A random permutation of `0..n` as i64, from the global generator (`torch.randperm`).
    pub fn randperm(n: usize) -> Tensor {
        let p = with_global_generator(|g| g.permutation(n));
        Tensor::from_vec(p.into_iter().map(|i| i as i64).collect(), [n])
    }

    /// Uniform samples of this tensor's shape, dtype and device.
    pub fn rand_like(&self) -> Tensor {
        Self::rand(self.shape())
            .to_dtype(self.dtype())
            .to(&self.device())
    }

    /// Normal samples of this tensor's shape, dtype and device.
    pub fn randn_like(&self) -> Tensor {
        Self::randn(self.shape())
            .to_dtype(self.dtype())
            .to(&self.device())
    }
}

impl<T: Element> From<Vec<T>> for Tensor {
    /// A 1-D tensor.
    fn from(v: Vec<T>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(v, [n])
    }
}

impl From<f32> for Tensor {
    fn from(v: f32) -> Tensor {
        Tensor::scalar(v)
    }
}

impl From<f64> for Tensor {
    fn from(v: f64) -> Tensor {
        Tensor::scalar(v)
    }
}
