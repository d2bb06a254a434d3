//! Creating tensors: from data, filled, ranges, identity and random.

use super::checked_numel;
use super::literal::{Scalar, TensorLiteral};
use super::{DType, Element, Tensor};
use crate::backend::{memory, Buffer, Device};
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

/// A buffer of `n` (the checked count of `shape`) copies of `value`
/// converted to `dtype`, for op `op`: allocated fallibly, zeros from a
/// zeroed allocation (as `vec![0.0; n]` does).
fn try_filled(
    op: &'static str,
    shape: &[usize],
    dtype: DType,
    n: usize,
    value: f64,
) -> Result<Buffer> {
    fn fill<T: memory::ZeroBits>(
        op: &'static str,
        shape: &[usize],
        n: usize,
        v: T,
        zero: bool,
    ) -> Result<Vec<T>> {
        if zero {
            return memory::try_zeros(op, shape, n);
        }
        let mut out = memory::try_alloc(op, shape, n)?;
        out.resize(n, v);
        Ok(out)
    }
    // +0.0 is all-zero bits in every dtype.
    let zero = value.to_bits() == 0;
    Ok(match dtype {
        DType::F32 => Buffer::F32(fill(op, shape, n, value as f32, zero)?),
        DType::F64 => Buffer::F64(fill(op, shape, n, value, zero)?),
        DType::I64 => Buffer::I64(fill(op, shape, n, value as i64, zero)?),
        DType::Bool => Buffer::Bool(fill(op, shape, n, value != 0.0, zero)?),
    })
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

/// `n` values `f(i)` for `i` in `0..n`, the data of `op`'s tensor of
/// `shape` (checked by the caller): allocated fallibly.
fn try_generate<T>(
    op: &'static str,
    shape: &[usize],
    n: usize,
    f: impl FnMut(usize) -> T,
) -> Result<Vec<T>> {
    let mut v = memory::try_alloc(op, shape, n)?;
    v.extend((0..n).map(f));
    Ok(v)
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

    /// Fallible [`from_vec`](Self::from_vec): an `Error::Shape` when the
    /// lengths disagree or the shape's element count overflows.
    pub fn try_from_vec<T: Element>(data: Vec<T>, shape: impl AsRef<[usize]>) -> Result<Tensor> {
        let shape = shape.as_ref();
        // Checked: a wrapped count could match a short vector.
        let n = checked_numel("from_vec", shape)?;
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

    /// [`full_opts`](Self::full_opts) named `op` in its errors.
    fn try_full_named(
        op: &'static str,
        shape: &[usize],
        value: f64,
        opts: &TensorOptions,
    ) -> Result<Tensor> {
        let n = checked_numel(op, shape)?;
        #[cfg(feature = "cuda")]
        if let Device::Cuda(i) = opts.device {
            let t =
                Tensor::from_array(crate::backend::cuda::ops::full(i, opts.dtype, shape, value));
            if opts.requires_grad {
                t.set_requires_grad(true);
            }
            return Ok(t);
        }
        Ok(Self::finish(
            try_filled(op, shape, opts.dtype, n, value)?,
            shape,
            opts,
        ))
    }

    /// A tensor of `shape` filled with `value`, with the given options.
    ///
    /// Panics when the shape's element count overflows, or when its buffer
    /// cannot be allocated, with a message naming the shape (and the bytes);
    /// see [`try_full_opts`](Self::try_full_opts).
    #[track_caller]
    pub fn full_opts(shape: impl AsRef<[usize]>, value: f64, opts: &TensorOptions) -> Tensor {
        Self::try_full_named("full", shape.as_ref(), value, opts).or_panic()
    }

    /// Fallible [`full_opts`](Self::full_opts): `Error::Shape` when the
    /// shape's element count overflows, `Error::OutOfMemory` (naming the
    /// shape and the bytes) when its buffer cannot be allocated. For sizes
    /// that come from a file or a computation.
    ///
    /// ```
    /// use deriv_runtime::{Error, Tensor, TensorOptions};
    /// let opts = TensorOptions::new();
    /// assert_eq!(Tensor::try_full_opts([2, 3], 1.5, &opts).unwrap().shape(), &[2, 3]);
    /// // 2^32 x 2^32 elements cannot be counted in a usize.
    /// let err = Tensor::try_full_opts([1 << 32, 1 << 32], 0.0, &opts).unwrap_err();
    /// assert!(matches!(err, Error::Shape { op: "full", .. }));
    /// // 2^62 f32s can be counted, but not allocated (2^64 bytes).
    /// let err = Tensor::try_full_opts([1 << 31, 1 << 31], 0.0, &opts).unwrap_err();
    /// assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    /// ```
    pub fn try_full_opts(
        shape: impl AsRef<[usize]>,
        value: f64,
        opts: &TensorOptions,
    ) -> Result<Tensor> {
        Self::try_full_named("full", shape.as_ref(), value, opts)
    }

    /// An f32 tensor of `shape` filled with `value` (`torch.full`).
    #[track_caller]
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
    ///
    /// Panics naming the shape when its element count overflows (the
    /// product of the sizes must fit in `isize::MAX`) or its buffer cannot
    /// be allocated; [`try_zeros`](Self::try_zeros) returns the error.
    #[track_caller]
    pub fn zeros(shape: impl AsRef<[usize]>) -> Tensor {
        Self::zeros_opts(shape, &TensorOptions::default())
    }

    /// Fallible [`zeros`](Self::zeros): `Error::Shape` when the element
    /// count overflows, `Error::OutOfMemory` when the buffer cannot be
    /// allocated.
    pub fn try_zeros(shape: impl AsRef<[usize]>) -> Result<Tensor> {
        Self::try_full_named("zeros", shape.as_ref(), 0.0, &TensorOptions::default())
    }

    /// f32 ones (`torch.ones`).
    #[track_caller]
    pub fn ones(shape: impl AsRef<[usize]>) -> Tensor {
        Self::ones_opts(shape, &TensorOptions::default())
    }

    /// Zeros with the given options.
    #[track_caller]
    pub fn zeros_opts(shape: impl AsRef<[usize]>, opts: &TensorOptions) -> Tensor {
        Self::try_full_named("zeros", shape.as_ref(), 0.0, opts).or_panic()
    }

    /// Ones with the given options.
    #[track_caller]
    pub fn ones_opts(shape: impl AsRef<[usize]>, opts: &TensorOptions) -> Tensor {
        Self::try_full_named("ones", shape.as_ref(), 1.0, opts).or_panic()
    }

    /// f32 zeros created on `device`.
    #[track_caller]
    pub fn zeros_on(shape: impl AsRef<[usize]>, device: &Device) -> Tensor {
        Self::zeros_opts(shape, &TensorOptions::new().device(device))
    }

    /// f32 ones created on `device`.
    #[track_caller]
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
        // Saturating: a count past usize (or infinite) is refused below.
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        checked_numel("arange", &[n]).or_panic();
        let v = try_generate("arange", &[n], n, |i| start + i as f64 * step).or_panic();
        Self::finish(from_f64s(opts.dtype, v), &[n], opts)
    }

    /// `steps` evenly spaced f32 values from `start` to `end` inclusive (`torch.linspace`).
    #[track_caller]
    pub fn linspace(start: f64, end: f64, steps: usize) -> Tensor {
        checked_numel("linspace", &[steps]).or_panic();
        let step = (end - start) / (steps.max(2) - 1) as f64;
        let v = try_generate("linspace", &[steps], steps, |i| {
            // Fill from both ends, as PyTorch does, so `end` is exact (one
            // step gives `start`).
            if steps == 1 || i < steps / 2 {
                start + step * i as f64
            } else {
                end - step * (steps - 1 - i) as f64
            }
        })
        .or_panic();
        Tensor::from_buffer(from_f64s(DType::F32, v), &[steps], Device::Cpu)
    }

    /// The n x n f32 identity matrix (`torch.eye`).
    #[track_caller]
    pub fn eye(n: usize) -> Tensor {
        let count = checked_numel("eye", &[n, n]).or_panic();
        let mut v: Vec<f32> = memory::try_zeros("eye", &[n, n], count).or_panic();
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        Tensor::from_vec(v, [n, n])
    }

    /// Uniform samples from [0, 1) as f32, from the global generator (`torch.rand`).
    ///
    /// Panics naming the shape when its element count overflows or its
    /// buffer cannot be allocated (as [`zeros`](Self::zeros)).
    #[track_caller]
    pub fn rand(shape: impl AsRef<[usize]>) -> Tensor {
        with_global_generator(|g| Self::rand_with(shape, g))
    }

    /// Standard normal samples as f32, from the global generator (`torch.randn`).
    ///
    /// Panics naming the shape when its element count overflows, or naming
    /// the shape and the bytes when its buffer cannot be allocated:
    /// `Tensor::randn([1 << 31, 1 << 31])` asks for 2^64 bytes and panics
    /// with "randn: cannot allocate 18446744073709551616 bytes (16.0 EiB)
    /// for a tensor of shape [2147483648, 2147483648]: ..." instead of
    /// aborting the process.
    #[track_caller]
    pub fn randn(shape: impl AsRef<[usize]>) -> Tensor {
        with_global_generator(|g| Self::randn_with(shape, g))
    }

    /// Uniform samples from [0, 1) drawn from `rng`.
    #[track_caller]
    pub fn rand_with(shape: impl AsRef<[usize]>, rng: &mut Generator) -> Tensor {
        let shape = shape.as_ref();
        let n = checked_numel("rand", shape).or_panic();
        let v = try_generate("rand", shape, n, |_| rng.uniform() as f32).or_panic();
        Tensor::from_vec(v, shape)
    }

    /// Standard normal samples drawn from `rng`.
    #[track_caller]
    pub fn randn_with(shape: impl AsRef<[usize]>, rng: &mut Generator) -> Tensor {
        let shape = shape.as_ref();
        let n = checked_numel("randn", shape).or_panic();
        let v = try_generate("randn", shape, n, |_| rng.normal() as f32).or_panic();
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
        let n = checked_numel("randint", shape).or_panic();
        let v = with_global_generator(|g| {
            try_generate("randint", shape, n, |_| g.int_range(low, high))
        })
        .or_panic();
        Tensor::from_vec(v, shape)
    }

    /// A random permutation of `0..n` as i64, from the global generator (`torch.randperm`).
    #[track_caller]
    pub fn randperm(n: usize) -> Tensor {
        checked_numel("randperm", &[n]).or_panic();
        // `Generator::permutation`'s draws, into one fallible buffer.
        let mut p = try_generate("randperm", &[n], n, |i| i as i64).or_panic();
        with_global_generator(|g| g.shuffle(&mut p));
        Tensor::from_vec(p, [n])
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
