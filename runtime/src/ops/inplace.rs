//! In-place ops, named with a trailing `_` as in PyTorch. They write into the
//! tensor's storage (so every view of it sees the change) and record nothing:
//! on a tensor that requires grad they are refused outside `no_grad`.

use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use super::elementwise::{cast, Operand};
use crate::autograd::is_grad_enabled;
use crate::backend::{cpu, lock_storages, Buffer};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{broadcast_shapes, DType, Tensor};

/// Read-locks `src` and write-locks `dst` (distinct storages) in the global
/// lock order, so `a.add_(&b)` on one thread and `b.mul_(&a)` on another
/// cannot deadlock.
#[track_caller]
fn lock_operand<'a>(
    src: &'a Tensor,
    dst: &'a Tensor,
) -> (RwLockReadGuard<'a, Buffer>, RwLockWriteGuard<'a, Buffer>) {
    let ([r], [w]) = lock_storages([Some(&**src.storage())], [Some(dst.storage())]);
    (
        r.expect("a named storage is locked"),
        w.expect("a named storage is locked"),
    )
}

impl Tensor {
    #[track_caller]
    fn check_inplace(&self, op: &'static str, other: Option<&Tensor>) {
        if !is_grad_enabled() {
            return;
        }
        if self.requires_grad() {
            if self.is_leaf() {
                panic!(
                    "{op}: a leaf tensor that requires grad is being used in an in-place \
                     operation. Update parameters inside no_grad, e.g. \
                     `no_grad(|| w.sub_(&(w.grad().unwrap() * lr)))`, or write through \
                     `w.detach()`, which shares w's storage (PyTorch's `w.data`)"
                );
            }
            panic!(
                "{op}: in-place operations on a tensor that is part of the autograd graph \
                 (grad_fn {}) are not supported; use the out-of-place form (e.g. `x.add(..)` \
                 for `x.add_(..)`), or detach() first",
                self.grad_fn().unwrap_or("?")
            );
        }
        if let Some(o) = other
            && o.requires_grad()
        {
            panic!(
                "{op}: the source requires grad, but an in-place op on a tensor that does \
                     not cannot record it; use the out-of-place form, or run it under no_grad"
            );
        }
    }

    /// The operand broadcast-checked against self's shape and cast to its dtype,
    /// copied when it aliases self's storage.
    fn inplace_operand(&self, op: &'static str, other: &Tensor) -> Result<Tensor> {
        super::same_device(op, self, other)?;
        // Equal shapes (the common case) need no broadcast shape built.
        let shape = if crate::tensor::same_shape(self.shape(), other.shape()) {
            None
        } else {
            Some(broadcast_shapes(op, self.shape(), other.shape())?)
        };
        if let Some(shape) = shape.filter(|s| !crate::tensor::same_shape(s, self.shape())) {
            return Err(Error::shape(
                op,
                format!(
                    "output with shape {:?} doesn't match the broadcast shape {shape:?}: an \
                     in-place op cannot grow the tensor it writes into; use the out-of-place form",
                    self.shape()
                ),
            ));
        }
        // A number (0-d CPU tensor) joins a GPU tensor on its device.
        let o = super::on_device(&cast(other, self.dtype()), self.device());
        Ok(if o.shares_storage(self) {
            o.clone_data_nograd()
        } else {
            o
        })
    }

    #[track_caller]
    fn update_with(
        &self,
        op: &'static str,
        other: &Tensor,
        f32f: impl Fn(f32, f32) -> f32 + Sync,
        f64f: impl Fn(f64, f64) -> f64 + Sync,
        i64f: Option<fn(i64, i64) -> i64>,
        gpu: (crate::backend::Ew, f64),
    ) -> &Tensor {
        self.check_inplace(op, Some(other));
        // As in PyTorch, a result of a higher category (a float operand into an
        // integer tensor) cannot be stored in place: it would be truncated.
        if !self.dtype().is_float() && super::result_type(self, other) != self.dtype() {
            panic!(
                "{op}: result type {} can't be cast to the desired output type {} of this \
                 tensor; use the out-of-place form, or convert with .to_dtype(..) first",
                super::result_type(self, other),
                self.dtype()
            );
        }
        let o = self.inplace_operand(op, other).or_panic();
        let lo = o.layout().broadcast_to(self.shape());
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            use crate::backend::Ew;
            let g = gpu.0;
            if self.dtype() == DType::Bool
                || (!self.dtype().is_float() && !matches!(g, Ew::Add | Ew::Sub | Ew::Mul))
            {
                panic!(
                    "{op}: not supported for {} tensors; convert with .to_dtype(DType::F32)",
                    self.dtype()
                );
            }
            crate::backend::cuda::ops::update(g, self.array(), o.array(), &lo, gpu.1);
            return self;
        }
        let _ = gpu;
        let (ob, mut sb) = lock_operand(&o, self);
        match (&mut *sb, &*ob) {
            (Buffer::F32(d), Buffer::F32(s)) => cpu::update(op, d, self.layout(), s, &lo, f32f),
            (Buffer::F64(d), Buffer::F64(s)) => cpu::update(op, d, self.layout(), s, &lo, f64f),
            (Buffer::I64(d), Buffer::I64(s)) if i64f.is_some() => {
                cpu::update(op, d, self.layout(), s, &lo, i64f.expect("checked"))
            }
            _ => panic!(
                "{op}: not supported for {} tensors; convert with .to_dtype(DType::F32)",
                self.dtype()
            ),
        }
        self
    }

    /// `self += other` in place (other broadcasts to self's shape; a number works too).
    #[track_caller]
    pub fn add_(&self, other: impl Operand) -> &Tensor {
        let o = other.into_operand(self);
        self.update_with(
            "add_",
            &o,
            |x, y| x + y,
            |x, y| x + y,
            Some(i64::wrapping_add),
            (crate::backend::Ew::Add, 0.0),
        )
    }

    /// `self += alpha * other` in place: the optimizer update (`add_(other, alpha=)`).
    ///
    /// ```
    /// use deriv_runtime::{no_grad, tensor};
    /// let w = tensor![1., 1.];
    /// w.add_scaled_(&tensor![2., 4.], -0.5);
    /// assert_eq!(w.to_vec::<f32>(), vec![0., -1.]);
    /// ```
    #[track_caller]
    pub fn add_scaled_(&self, other: &Tensor, alpha: f64) -> &Tensor {
        let (a32, a64) = (alpha as f32, alpha);
        self.update_with(
            "add_",
            other,
            move |x, y| x + a32 * y,
            move |x, y| x + a64 * y,
            None,
            (crate::backend::Ew::AddScaled, alpha),
        )
    }

    /// `self -= other` in place.
    #[track_caller]
    pub fn sub_(&self, other: impl Operand) -> &Tensor {
        let o = other.into_operand(self);
        self.update_with(
            "sub_",
            &o,
            |x, y| x - y,
            |x, y| x - y,
            Some(i64::wrapping_sub),
            (crate::backend::Ew::Sub, 0.0),
        )
    }

    /// `self *= other` in place.
    #[track_caller]
    pub fn mul_(&self, other: impl Operand) -> &Tensor {
        let o = other.into_operand(self);
        self.update_with(
            "mul_",
            &o,
            |x, y| x * y,
            |x, y| x * y,
            Some(i64::wrapping_mul),
            (crate::backend::Ew::Mul, 0.0),
        )
    }

    /// `self /= other` in place (float tensors only, as in PyTorch).
    #[track_caller]
    pub fn div_(&self, other: impl Operand) -> &Tensor {
        let o = other.into_operand(self);
        self.update_with(
            "div_",
            &o,
            |x, y| x / y,
            |x, y| x / y,
            None,
            (crate::backend::Ew::Div, 0.0),
        )
    }

    /// Copies `src` (broadcast to self's shape, converted to self's dtype) into self.
    #[track_caller]
    pub fn copy_(&self, src: &Tensor) -> &Tensor {
        self.check_inplace("copy_", Some(src));
        // Like PyTorch's copy_, the source may live on another device.
        let moved;
        let src = if src.device() != self.device() {
            moved = crate::autograd::no_grad(|| src.to(&self.device()));
            &moved
        } else {
            src
        };
        let o = self.inplace_operand("copy_", src).or_panic();
        let lo = o.layout().broadcast_to(self.shape());
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            crate::backend::cuda::ops::copy_into(self.array(), o.array(), &lo);
            return self;
        }
        let (ob, mut sb) = lock_operand(&o, self);
        match (&mut *sb, &*ob) {
            (Buffer::F32(d), Buffer::F32(s)) => {
                cpu::update("copy_", d, self.layout(), s, &lo, |_, y| y)
            }
            (Buffer::F64(d), Buffer::F64(s)) => {
                cpu::update("copy_", d, self.layout(), s, &lo, |_, y| y)
            }
            (Buffer::I64(d), Buffer::I64(s)) => {
                cpu::update("copy_", d, self.layout(), s, &lo, |_, y| y)
            }
            (Buffer::Bool(d), Buffer::Bool(s)) => {
                cpu::update("copy_", d, self.layout(), s, &lo, |_, y| y)
            }
            _ => unreachable!("the source was cast to self's dtype"),
        }
        self
    }

    /// Sets every element to `value` in place.
    #[track_caller]
    pub fn fill_(&self, value: f64) -> &Tensor {
        self.check_inplace("fill_", None);
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            crate::backend::cuda::ops::update_unary(
                crate::backend::Ew::Fill,
                self.array(),
                value,
                0.0,
            );
            return self;
        }
        let mut sb = self.storage().write();
        let l = self.layout();
        match &mut *sb {
            Buffer::F32(d) => cpu::update_scalar("fill_", d, l, |_| value as f32),
            Buffer::F64(d) => cpu::update_scalar("fill_", d, l, |_| value),
            Buffer::I64(d) => cpu::update_scalar("fill_", d, l, |_| value as i64),
            Buffer::Bool(d) => cpu::update_scalar("fill_", d, l, |_| value != 0.0),
        }
        self
    }

    /// Sets every element to zero in place (`x.grad().unwrap().zero_()`).
    #[track_caller]
    pub fn zero_(&self) -> &Tensor {
        self.fill_(0.0)
    }

    /// Clamps into `[min, max]` in place; either bound may be `None`.
    #[track_caller]
    pub fn clamp_(&self, min: Option<f64>, max: Option<f64>) -> &Tensor {
        self.check_inplace("clamp_", None);
        let lo = min.unwrap_or(f64::NEG_INFINITY);
        let hi = max.unwrap_or(f64::INFINITY);
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            assert!(
                self.dtype() != DType::Bool,
                "clamp_: not supported for bool tensors"
            );
            crate::backend::cuda::ops::update_unary(
                crate::backend::Ew::Clamp,
                self.array(),
                lo,
                hi,
            );
            return self;
        }
        let mut sb = self.storage().write();
        let l = self.layout();
        match &mut *sb {
            // NaN stays NaN, and min > max gives max, as in PyTorch (and `clamp`).
            Buffer::F32(d) => cpu::update_scalar("clamp_", d, l, |x| {
                let y = if x < lo as f32 { lo as f32 } else { x };
                if y > hi as f32 {
                    hi as f32
                } else {
                    y
                }
            }),
            Buffer::F64(d) => cpu::update_scalar("clamp_", d, l, |x| {
                let y = if x < lo { lo } else { x };
                if y > hi {
                    hi
                } else {
                    y
                }
            }),
            Buffer::I64(d) => {
                cpu::update_scalar("clamp_", d, l, |x| (x as f64).max(lo).min(hi) as i64)
            }
            Buffer::Bool(_) => panic!("clamp_: not supported for bool tensors"),
        }
        self
    }

    /// Overwrites self with uniform samples from `[low, high)` (global generator).
    #[track_caller]
    pub fn uniform_(&self, low: f64, high: f64) -> &Tensor {
        let r = Tensor::rand(self.shape()).to_dtype(if self.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        });
        crate::autograd::no_grad(|| {
            let scaled = &r * (high - low) + low;
            self.copy_(&scaled);
        });
        self
    }

    /// Overwrites self with normal samples of the given mean and std (global generator).
    #[track_caller]
    pub fn normal_(&self, mean: f64, std: f64) -> &Tensor {
        let r = Tensor::randn(self.shape());
        crate::autograd::no_grad(|| {
            let scaled = &r * std + mean;
            self.copy_(&scaled);
        });
        self
    }
}
