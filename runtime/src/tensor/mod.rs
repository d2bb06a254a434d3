//! The `Tensor` handle: storage plus a view, a dtype, and autograd metadata.

mod creation;
mod display;
mod dtype;
mod layout;
mod literal;
mod math;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use creation::TensorOptions;
pub use dtype::{DType, Element, Float};
pub(crate) use layout::{
    assert_matrix_within, broadcast_dims, broadcast_shapes, checked_numel, contiguous_strides,
    norm_dim, same_shape, Layout, MAX_NUMEL,
};
pub use literal::TensorLiteral;
pub use math::Math;

use crate::autograd::GradNode;
use crate::backend::{cpu, Array, Buffer, Device, Storage};

/// An N-dimensional array on a [`Device`], with PyTorch-style autograd.
///
/// A `Tensor` is a cheap handle: `clone()` copies a pointer, and views
/// (`reshape` of contiguous data, `transpose`, `permute`, `narrow`, `expand`)
/// share storage with the tensor they view.
///
/// ```
/// use deriv_runtime::{tensor, Tensor};
/// let x = tensor![[1., 2.], [3., 4.]].requires_grad_(true);
/// let y = (&x * &x).sum();
/// y.backward();
/// assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![2., 4., 6., 8.]);
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorImpl>);

pub(crate) struct TensorImpl {
    /// The data: storage, view and element type (all the backend sees).
    pub(crate) array: Array,
    /// The node that produced this tensor; `None` for leaves.
    pub(crate) grad_fn: Option<Arc<GradNode>>,
    /// Set by `requires_grad_` on leaves; non-leaves require grad through `grad_fn`.
    pub(crate) requires_grad: AtomicBool,
    /// The accumulated gradient of a leaf, and a recycled buffer for it.
    pub(crate) grad: Mutex<GradCell>,
    /// Post-accumulate-grad hooks of a leaf; unset (and free) until one is registered.
    pub(crate) hooks: OnceLock<Arc<crate::autograd::Hooks>>,
}

/// A leaf's gradient, and the buffer of one that an optimizer's
/// `zero_grad()` dropped while nobody else held it: the next compile-time
/// backward writes the new gradient into that buffer instead of allocating
/// one (`.grad()` is `None` meanwhile, as in PyTorch; the tape's backward,
/// which computes its gradients apart, frees it when it stores a new one).
#[derive(Default)]
pub(crate) struct GradCell {
    pub(crate) grad: Option<Tensor>,
    pub(crate) spare: Option<Tensor>,
}

impl Tensor {
    /// A new leaf over fresh storage with a contiguous layout. The buffer
    /// must hold exactly the shape's (checked) element count: asserted in
    /// release builds too, once per tensor.
    #[track_caller]
    pub(crate) fn from_buffer(buf: Buffer, shape: &[usize], device: Device) -> Tensor {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(i) = device {
            Array::whole_len_check(buf.len(), shape);
            return Tensor::from_array(crate::backend::cuda::ops::upload(&buf, shape, i));
        }
        let dtype = buf.dtype();
        Tensor::from_array(Array::whole(
            Arc::new(Storage::new(buf, device)),
            shape,
            dtype,
        ))
    }

    /// A new leaf over a backend array.
    pub(crate) fn from_array(array: Array) -> Tensor {
        Tensor(Arc::new(TensorImpl {
            array,
            grad_fn: None,
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(GradCell::default()),
            hooks: OnceLock::new(),
        }))
    }

    /// The data as the backend sees it.
    pub(crate) fn array(&self) -> &Array {
        &self.0.array
    }

    /// A view of the same storage with another layout (no autograd link).
    #[track_caller]
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_array(self.0.array.with_layout(layout))
    }

    pub(crate) fn layout(&self) -> &Layout {
        self.array().layout()
    }

    pub(crate) fn storage(&self) -> &Arc<Storage> {
        self.0.array.storage()
    }

    /// The size of each dimension.
    pub fn shape(&self) -> &[usize] {
        self.0.array.shape()
    }

    /// PyTorch's `size()`: the same as [`shape`](Self::shape).
    pub fn size(&self) -> &[usize] {
        self.shape()
    }

    /// The size of dimension `dim` (negative counts from the end).
    pub fn size_of(&self, dim: isize) -> usize {
        let d = crate::error::OrPanic::or_panic(norm_dim("size_of", dim, self.ndim()));
        self.shape()[d]
    }

    /// Element strides of each dimension.
    pub fn strides(&self) -> &[usize] {
        &self.0.array.layout().strides
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.0.array.ndim()
    }

    /// PyTorch's `dim()`: the number of dimensions.
    pub fn dim(&self) -> usize {
        self.ndim()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.0.array.numel()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.array.dtype()
    }

    /// The device holding the data.
    pub fn device(&self) -> Device {
        self.0.array.device()
    }

    /// Whether the elements are laid out row-major with no gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.array.is_contiguous()
    }

    /// Whether two tensors view the same storage.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(self.0.array.storage(), other.0.array.storage())
    }

    /// A copy on `device` (the same tensor when it is already there).
    ///
    /// Gradients flow back through the move, as in PyTorch. Panics with the
    /// reason when the device is not usable (no `cuda` feature, no driver, no
    /// such GPU).
    ///
    /// ```
    /// use deriv_runtime::{tensor, Device};
    /// let dev = Device::cuda_if_available();
    /// let x = tensor![1., 2., 3.].to(&dev);
    /// assert_eq!((&x * 2.0).to_vec::<f32>(), vec![2., 4., 6.]);
    /// ```
    #[track_caller]
    pub fn to(&self, device: &Device) -> Tensor {
        if self.device() == *device {
            return self.clone();
        }
        crate::autograd::apply(crate::ops::ToCopy::of(self, None, Some(*device)), &[self])
    }

    /// The move itself, unrecorded (`ToCopy`'s forward).
    #[track_caller]
    pub(crate) fn to_device_nograd(&self, device: &Device) -> Tensor {
        if self.device() == *device {
            return self.clone();
        }
        #[cfg(feature = "cuda")]
        {
            use crate::backend::cuda::ops;
            let shape = self.shape();
            match (self.device(), *device) {
                (Device::Cpu, Device::Cuda(i)) => {
                    let host = self.host_buffer();
                    return Tensor::from_array(ops::upload(&host, shape, i));
                }
                (Device::Cuda(_), Device::Cpu) => {
                    let host = ops::to_host_buffer(self.array());
                    return Tensor::from_buffer(host, shape, Device::Cpu);
                }
                (Device::Cuda(_), Device::Cuda(i)) => {
                    let host = ops::to_host_buffer(self.array());
                    return Tensor::from_array(ops::upload(&host, shape, i));
                }
                _ => {}
            }
        }
        panic!(
            "to: cannot move a tensor to {device}: {}",
            Device::cuda_unavailable_reason().unwrap_or_default()
        )
    }

    /// The elements of a CPU tensor in row-major order, in a new buffer of
    /// its dtype.
    #[cfg(feature = "cuda")]
    fn host_buffer(&self) -> Buffer {
        let buf = self.0.array.storage().read();
        let l = self.0.array.layout();
        match &*buf {
            Buffer::F32(v) => Buffer::F32(cpu::map("to", v, l, |x| x)),
            Buffer::F64(v) => Buffer::F64(cpu::map("to", v, l, |x| x)),
            Buffer::I64(v) => Buffer::I64(cpu::map("to", v, l, |x| x)),
            Buffer::Bool(v) => Buffer::Bool(cpu::map("to", v, l, |x| x)),
        }
    }

    /// Copies the elements into a `Vec` in row-major order, converting to `T`.
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// assert_eq!(tensor![[1, 2], [3, 4]].t().to_vec::<i64>(), vec![1, 3, 2, 4]);
    /// ```
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return self.to_device_nograd(&Device::Cpu).to_vec();
        }
        let buf = self.0.array.storage().read();
        let l = self.0.array.layout();
        match &*buf {
            Buffer::F32(v) => cpu::map("to_vec", v, l, |x| T::from_f64(x as f64)),
            Buffer::F64(v) => cpu::map("to_vec", v, l, T::from_f64),
            Buffer::I64(v) => cpu::map("to_vec", v, l, T::from_i64),
            Buffer::Bool(v) => cpu::map("to_vec", v, l, |x| T::from_f64(x as u8 as f64)),
        }
    }

    /// The single value of a one-element tensor, as f64 (PyTorch's `item()`).
    ///
    /// Panics when the tensor has more than one element.
    pub fn item(&self) -> f64 {
        assert!(
            self.numel() == 1,
            "item: a Tensor with {} elements (shape {:?}) cannot be converted to a scalar; \
             reduce it first (e.g. .sum() or .mean()) or index one element",
            self.numel(),
            self.shape()
        );
        self.elem_f64(0)
    }

    /// The element at row-major position `i` of this view, as f64.
    pub(crate) fn elem_f64(&self, i: usize) -> f64 {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return self.to_device_nograd(&Device::Cpu).elem_f64(i);
        }
        let l = self.0.array.layout();
        let mut rem = i;
        let mut off = l.offset;
        for d in (0..l.ndim()).rev() {
            off += (rem % l.shape[d]) * l.strides[d];
            rem /= l.shape[d];
        }
        match &*self.0.array.storage().read() {
            Buffer::F32(v) => v[off] as f64,
            Buffer::F64(v) => v[off],
            Buffer::I64(v) => v[off] as f64,
            Buffer::Bool(v) => v[off] as u8 as f64,
        }
    }

    /// A copy converted to `dtype` (the same tensor when it already has it).
    /// Differentiable between float types.
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        crate::ops::elementwise::cast(self, dtype)
    }

    // ----- autograd metadata -----

    /// Whether operations on this tensor are recorded for backward.
    pub fn requires_grad(&self) -> bool {
        self.0.grad_fn.is_some() || self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Marks a leaf as requiring grad (or not) and returns it, like PyTorch's
    /// `requires_grad_`.
    ///
    /// Panics on a non-leaf, or on a tensor whose dtype cannot carry gradients.
    pub fn requires_grad_(self, requires_grad: bool) -> Tensor {
        self.set_requires_grad(requires_grad);
        self
    }

    /// In-place form of [`requires_grad_`](Self::requires_grad_) on a borrowed handle.
    pub fn set_requires_grad(&self, requires_grad: bool) {
        assert!(
            self.is_leaf() || requires_grad,
            "requires_grad_: you can only change requires_grad flags of leaf tensors; \
             use .detach() to get a leaf that shares this tensor's data"
        );
        assert!(
            !requires_grad || self.dtype().is_float(),
            "requires_grad_: only floating point tensors can require gradients, \
             this one is {}; convert it first with .to_dtype(DType::F32)",
            self.dtype()
        );
        self.0.requires_grad.store(requires_grad, Ordering::Relaxed);
    }

    /// Whether this tensor is a leaf of the graph (created by the user, not by a
    /// recorded op).
    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }

    /// The name of the backward node that produced this tensor
    /// (`"MulBackward"`, `"MeanBackward"`, ...), `None` for leaves.
    pub fn grad_fn(&self) -> Option<&'static str> {
        self.0.grad_fn.as_ref().map(|n| n.name())
    }

    pub(crate) fn grad_node(&self) -> Option<&Arc<GradNode>> {
        self.0.grad_fn.as_ref()
    }

    /// The accumulated gradient of a leaf, a handle sharing its storage, so
    /// `x.grad().unwrap().zero_()` resets it as in PyTorch.
    pub fn grad(&self) -> Option<Tensor> {
        self.grad_slot().grad.clone()
    }

    /// Replaces the stored gradient (`None` drops it, like `x.grad = None`).
    pub fn set_grad(&self, grad: Option<Tensor>) {
        if let Some(g) = &grad {
            assert!(
                same_shape(g.shape(), self.shape()),
                "set_grad: assigned grad has shape {:?} but the tensor has shape {:?}",
                g.shape(),
                self.shape()
            );
        }
        *self.grad_slot() = GradCell { grad, spare: None };
    }

    /// Drops the stored gradient as `set_grad(None)` does, but keeps its
    /// buffer for the next backward to write into when nothing else holds
    /// it (no handle, no view): what an optimizer's `zero_grad()` does.
    pub(crate) fn set_grad_none_recycling(&self) {
        let mut cell = self.grad_slot();
        cell.spare = cell.grad.take().filter(|g| {
            Arc::strong_count(&g.0) == 1
                && Arc::strong_count(g.storage()) == 1
                && g.is_contiguous()
                && g.is_leaf()
        });
    }

    /// Zeroes the stored gradient in place, keeping its buffer for the next
    /// backward (a no-op when there is none).
    pub fn zero_grad(&self) {
        if let Some(g) = self.grad() {
            crate::autograd::no_grad(|| g.zero_());
        }
    }

    pub(crate) fn grad_slot(&self) -> std::sync::MutexGuard<'_, GradCell> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new leaf sharing this tensor's data, cut from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor::from_array(self.0.array.clone())
    }

    /// Installs `node` as this freshly made tensor's grad_fn.
    pub(crate) fn with_grad_fn(mut self, node: Arc<GradNode>) -> Tensor {
        match Arc::get_mut(&mut self.0) {
            Some(inner) => {
                inner.grad_fn = Some(node);
                self
            }
            None => {
                let t = self.with_layout(self.0.array.layout().clone());
                t.with_grad_fn(node)
            }
        }
    }
}

// Tensors are handed between threads (data loaders, rayon).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tensor>();
};
