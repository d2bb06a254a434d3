//! One op, one definition: the [`Op`] trait every path runs an op through.
//!
//! An op is a type (usually a small struct of its constant arguments) that
//! says, once: its `grad_fn` name, the output it makes from its inputs
//! ([`Op::spec`]), how to compute that output into a destination
//! ([`Op::forward`], writing an [`Out`]), what backward needs from the
//! forward pass ([`Op::Saved`], chosen by [`Op::save`] from a need-mask), and
//! the gradient rule ([`Op::backward`], adding each needed input's gradient
//! into a [`GradSlot`]). Three callers use the same four methods:
//!
//! - the tape: [`apply`] allocates the output, runs `forward`, and records an
//!   [`OpNode<O>`] (one generic node type for every op) holding the op and
//!   its `Saved`; backward calls `O::backward`;
//! - the code `network!` generates: `forward_train` calls [`forward_saving`]
//!   and keeps `O::Saved` in the model's `Saved` struct; `backward` calls
//!   [`Op::backward`] with slots over its adjoints;
//! - the buffer-reusing `TrainStep` path: forward writes into a workspace
//!   tensor ([`forward_into`]) and backward's slots reuse workspace buffers,
//!   so a steady-state step allocates nothing.
//!
//! A user's own op implements the same trait and is used in `network!` like
//! a built-in one (docs/network-dsl.md, "Your own op").

use std::sync::Arc;

use smallvec::SmallVec;

use crate::backend::{cpu, lock_storages, Buffer, Device, Host};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

use super::{needs_grad, Backward};

/// A shape held inline up to 4 dims (as layouts are): an op's spec of the
/// usual ranks costs no allocation, and moves little.
pub type Shape = smallvec::SmallVec<[usize; 4]>;

/// The shape, dtype and device of an op's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The output's shape.
    pub shape: Shape,
    /// Its element type.
    pub dtype: DType,
    /// Where it lives.
    pub device: Device,
}

impl Spec {
    /// A tensor of `shape` with `like`'s dtype and device (a gradient's spec).
    pub fn shaped(shape: &[usize], like: &Tensor) -> Spec {
        Spec {
            shape: Shape::from_slice(shape),
            dtype: like.dtype(),
            device: like.device(),
        }
    }

    /// The spec of a tensor like `t`.
    pub fn like(t: &Tensor) -> Spec {
        Spec {
            shape: Shape::from_slice(t.shape()),
            dtype: t.dtype(),
            device: t.device(),
        }
    }

    /// Whether `t` is a contiguous tensor of this spec.
    pub fn fits(&self, t: &Tensor) -> bool {
        crate::tensor::same_shape(t.shape(), &self.shape)
            && t.dtype() == self.dtype
            && t.device() == self.device
            && t.is_contiguous()
    }
}

/// What an op keeps for backward: visited so the tape can stamp the saved
/// tensors' versions (a later in-place write then refuses backward instead of
/// giving a wrong gradient) and detach them (a node never owns its output's
/// `grad_fn`).
pub trait Saved: Send + Sync + 'static {
    /// Calls `f` on every tensor held.
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor));
}

impl Saved for () {
    fn visit_mut(&mut self, _: &mut dyn FnMut(&mut Tensor)) {}
}
impl Saved for Tensor {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        f(self)
    }
}
impl<T: Saved> Saved for Option<T> {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        if let Some(t) = self {
            t.visit_mut(f)
        }
    }
}
impl Saved for Vec<usize> {
    fn visit_mut(&mut self, _: &mut dyn FnMut(&mut Tensor)) {}
}
impl Saved for usize {
    fn visit_mut(&mut self, _: &mut dyn FnMut(&mut Tensor)) {}
}
impl Saved for crate::tensor::DType {
    fn visit_mut(&mut self, _: &mut dyn FnMut(&mut Tensor)) {}
}
impl<A: Saved, B: Saved> Saved for (A, B) {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        self.0.visit_mut(f);
        self.1.visit_mut(f);
    }
}
impl<A: Saved, B: Saved, C: Saved> Saved for (A, B, C) {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        self.0.visit_mut(f);
        self.1.visit_mut(f);
        self.2.visit_mut(f);
    }
}

/// A differentiable operation, defined once for every path and device.
///
/// `x` is the op's tensor inputs in order; constant arguments live in the op
/// value itself (`LeakyRelu { negative_slope }`).
///
/// ```
/// use deriv_runtime::autograd::{apply, GradSlot, Op, Out, Spec};
/// use deriv_runtime::{Result, Tensor};
///
/// /// y = x³, written with tensor ops (a kernel would write into `out` directly).
/// struct Cube;
/// impl Op for Cube {
///     const NAME: &'static str = "CubeBackward";
///     type Saved = Tensor;
///     fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
///         Ok(Spec::like(x[0]))
///     }
///     fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
///         out.set(x[0] * x[0] * x[0]);
///     }
///     fn save(&self, x: &[&Tensor], _y: &Tensor, _need: &[bool]) -> Tensor {
///         x[0].clone()
///     }
///     fn backward(&self, x: &Tensor, g: &Tensor, grads: &mut [GradSlot<'_>]) {
///         grads[0].add(g * &(x * x * 3.0));
///     }
/// }
///
/// let x = deriv_runtime::tensor![1., 2.].requires_grad_(true);
/// let y = apply(Cube, &[&x]);
/// assert_eq!(y.grad_fn(), Some("CubeBackward"));
/// y.sum().backward();
/// assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![3., 12.]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an op: implement `deriv::ops::Op` for it (or `deriv::ops::Unary` and `deriv::unary_op!`)",
    note = "a call `name(x, ..)` in a `network!` body uses the op type `Name` (the name in CamelCase), built with `Name::new(..)` or `Name::default()`"
)]
pub trait Op: Send + Sync + 'static {
    /// The name of the tape node (`grad_fn`), PyTorch's where one exists.
    const NAME: &'static str;
    /// The op's name in messages (`exp`, `matmul`): an output that cannot be
    /// allocated is reported under it.
    const OP: &'static str = "op";
    /// What the op does to the size `network!` checks at compile time
    /// (`Same` for elementwise ops; unknown by default).
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Unknown;
    /// Whether the output is a view of the input (reshape, transpose):
    /// the buffer-reusing path then keeps the view instead of copying it.
    const VIEW: bool = false;
    /// What backward needs from the forward pass.
    type Saved: Saved;
    /// The tape node's name for these inputs (PyTorch names some ops by
    /// their operands: `MmBackward`, `MvBackward`); [`NAME`](Self::NAME) by default.
    fn name(&self, x: &[&Tensor]) -> &'static str {
        let _ = x;
        Self::NAME
    }
    /// The output's shape, dtype and device; an error names the op, the
    /// inputs' shapes and the fix.
    fn spec(&self, x: &[&Tensor]) -> Result<Spec>;
    /// Computes the output into `out` (of [`spec`](Self::spec)).
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>);
    /// What to keep for backward, given the inputs, the output and which
    /// inputs will need a gradient.
    fn save(&self, x: &[&Tensor], y: &Tensor, need: &[bool]) -> Self::Saved;
    /// Adds dL/dx_i into `grads[i]` for every slot that is
    /// [`needed`](GradSlot::needed), from `g` = dL/dy.
    fn backward(&self, saved: &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]);
}

/// Runs `op` on `x` on the tape: a new output, recorded for backward when an
/// input requires grad and grad mode is on. Panics with the op's message
/// when the inputs don't fit it; [`try_apply`] returns the error.
#[track_caller]
pub fn apply<O: Op>(op: O, x: &[&Tensor]) -> Tensor {
    crate::error::OrPanic::or_panic(try_apply(op, x))
}

/// Fallible [`apply`].
pub fn try_apply<O: Op>(op: O, x: &[&Tensor]) -> Result<Tensor> {
    let spec = op.spec(x)?;
    let mut out = Out::fresh(spec).named(O::OP);
    // A forward composed of other ops records nothing of its own.
    super::no_grad(|| op.forward(x, &mut out));
    let y = out.try_finish()?;
    // Integer and bool results (casts, comparisons) carry no gradient.
    if !needs_grad(x) || !y.dtype().is_float() {
        return Ok(y);
    }
    let need: Need = x.iter().map(|t| t.requires_grad()).collect();
    let saved = op.save(x, &y, &need);
    let name = op.name(x);
    Ok(super::record(name, x, y, || OpNode::new(op, saved, need)))
}

/// Runs `op` without recording and returns the output with what backward
/// needs: the compile-time path's forward (`network!`'s `forward_train`).
pub fn forward_saving<O: Op>(op: &O, x: &[&Tensor], need: &[bool]) -> (Tensor, O::Saved) {
    let spec = crate::error::OrPanic::or_panic(op.spec(x));
    let mut out = Out::fresh(spec).named(O::OP);
    op.forward(x, &mut out);
    let y = out.finish();
    let saved = op.save(x, &y, need);
    (y, saved)
}

/// Runs `op` into the tensor kept in `slot` (replaced by a new one when it
/// does not fit the output or is shared), without recording, and keeps what
/// backward needs in `saved`: the buffer-reusing path's forward. Returns the output.
pub fn forward_into<'s, O: Op>(
    op: &O,
    x: &[&Tensor],
    need: &[bool],
    slot: &'s mut Option<Tensor>,
    saved: Option<&mut Option<O::Saved>>,
) -> &'s Tensor {
    let y = forward_into_slot(op, x, slot);
    if let Some(saved) = saved {
        *saved = Some(op.save(x, y, need));
    }
    y
}

fn forward_into_slot<'s, O: Op>(op: &O, x: &[&Tensor], slot: &'s mut Option<Tensor>) -> &'s Tensor {
    let spec = crate::error::OrPanic::or_panic(op.spec(x));
    if O::VIEW {
        let mut out = Out::fresh(spec).named(O::OP);
        op.forward(x, &mut out);
        return slot.insert(out.finish());
    }
    // A workspace's buffers are overwritten step after step (handles to
    // them that other layers of the workspace keep are re-set in the same
    // step); only an input that views the buffer itself forbids it.
    let reusable = slot
        .as_ref()
        .is_some_and(|t| spec.fits(t) && !x.iter().any(|i| i.shares_storage(t)));
    if reusable {
        let t = slot.as_ref().expect("checked above");
        let mut out = Out::into(t, false).named(O::OP);
        op.forward(x, &mut out);
        // A forward that refused its inputs (an index out of range) has
        // left the buffer unfinished: its error, as on the other paths.
        if let Some(e) = out.failed.take() {
            panic!("{e}");
        }
    } else {
        let mut out = Out::fresh(spec).named(O::OP);
        op.forward(x, &mut out);
        *slot = Some(out.finish());
    }
    slot.as_ref().expect("set above")
}

/// Whether `t`'s data is seen only through `handles` handles (the caller's):
/// then writing into it in place changes nothing anyone else holds.
fn exclusive(t: &Tensor, handles: usize) -> bool {
    Arc::strong_count(&t.0) == handles && Arc::strong_count(t.storage()) == 1
}

// ---------------------------------------------------------------- outputs

/// Each input's buffer from `lock_storages`' guards: a storage named twice
/// is locked once, at its first entry.
fn guarded<'g, const N: usize>(
    inputs: &[&Tensor; N],
    reads: &'g [Option<std::sync::RwLockReadGuard<'_, Buffer>>; N],
) -> [&'g Buffer; N] {
    std::array::from_fn(|i| {
        let first = (0..i)
            .find(|&j| inputs[j].shares_storage(inputs[i]))
            .unwrap_or(i);
        &**reads[first]
            .as_ref()
            .expect("the first entry of each storage is locked")
    })
}

/// Where an op's forward (or a gradient kernel) writes: a new tensor, or an
/// existing contiguous one, overwritten or added to.
pub struct Out<'a> {
    spec: Spec,
    target: Target<'a>,
    /// The op, for messages.
    op: &'static str,
    /// An allocation the first write could not make: `try_apply` returns it.
    failed: Option<crate::error::Error>,
}

enum Target<'a> {
    /// A new tensor, made by the first write.
    Fresh(Option<Tensor>),
    /// An existing contiguous tensor of the spec; `true`: add into it.
    Into(&'a Tensor, bool),
}

impl<'a> Out<'a> {
    /// A destination that becomes a new tensor of `spec`.
    pub fn fresh(spec: Spec) -> Out<'static> {
        Out {
            spec,
            target: Target::Fresh(None),
            op: "op",
            failed: None,
        }
    }

    /// Names the op in the messages of a failed allocation.
    pub fn named(mut self, op: &'static str) -> Self {
        self.op = op;
        self
    }

    /// A destination over `t` (contiguous), added into when `accumulate`.
    pub fn into(t: &'a Tensor, accumulate: bool) -> Out<'a> {
        assert!(
            t.is_contiguous(),
            "internal: an op's destination must be contiguous (shape {:?}, strides {:?})",
            t.shape(),
            t.strides()
        );
        Out {
            spec: Spec::like(t),
            target: Target::Into(t, accumulate),
            op: "op",
            failed: None,
        }
    }

    /// The output's shape, dtype and device.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Whether results are added into what the destination holds.
    pub fn accumulates(&self) -> bool {
        matches!(self.target, Target::Into(_, true))
    }

    /// Stores a computed tensor of the output's spec (shape and device; the
    /// dtype is converted): the forward of an op composed of other ops.
    #[track_caller]
    pub fn set(&mut self, t: Tensor) {
        assert!(
            crate::tensor::same_shape(t.shape(), &self.spec.shape),
            "internal: an op produced shape {:?} where its spec says {:?}",
            t.shape(),
            self.spec.shape
        );
        let t = if t.dtype() != self.spec.dtype {
            crate::autograd::no_grad(|| t.to_dtype(self.spec.dtype))
        } else {
            t
        };
        match &mut self.target {
            // A result nobody else holds, with no history, is kept as it is
            // (most composed forwards make one); anything else is detached,
            // so the output is a tensor of its own.
            Target::Fresh(slot) if exclusive(&t, 1) && t.is_leaf() && !t.requires_grad() => {
                *slot = Some(t)
            }
            Target::Fresh(slot) => *slot = Some(t.detach()),
            Target::Into(dst, false) => crate::autograd::no_grad(|| {
                dst.copy_(&t);
            }),
            Target::Into(dst, true) => crate::autograd::no_grad(|| {
                dst.add_(&t);
            }),
        }
    }

    /// Records that the forward could not make its output (an allocation
    /// refused): `try_apply` returns `e`, the other entry points panic with it.
    pub fn fail(&mut self, e: crate::error::Error) {
        self.failed.get_or_insert(e);
    }

    /// Runs a CPU kernel on the destination's elements as `T` (the spec's
    /// dtype), reading `inputs`: `k` gets their buffers (read-locked) and a
    /// [`cpu::Sink`] that writes or accumulates. The inputs and an existing
    /// destination are locked together, in the global lock order
    /// ([`lock_storages`](crate::backend::lock_storages)), so two threads
    /// running ops in opposite directions cannot deadlock.
    pub(crate) fn host<T: Host + std::ops::Add<Output = T>, const N: usize>(
        &mut self,
        inputs: [&Tensor; N],
        k: impl FnOnce([&Buffer; N], cpu::Sink<'_, T>),
    ) {
        debug_assert_eq!(T::DTYPE, self.spec.dtype);
        let op = self.op;
        match &mut self.target {
            Target::Fresh(slot) => {
                let (reads, []) = lock_storages(inputs.map(|t| Some(&**t.storage())), []);
                let bufs = guarded(&inputs, &reads);
                // A result that cannot be allocated is kept as an error for
                // `try_apply` (the kernel does not run).
                let v = crate::tensor::checked_numel(op, &self.spec.shape).and_then(|n| {
                    cpu::try_new_vec(op, &self.spec.shape, n, |dst| {
                        k(bufs, cpu::Sink::Write(dst))
                    })
                });
                match v {
                    Ok(v) => {
                        *slot = Some(Tensor::from_buffer(
                            T::wrap(v),
                            &self.spec.shape,
                            self.spec.device,
                        ))
                    }
                    Err(e) => self.failed = Some(e),
                }
            }
            Target::Into(t, acc) => {
                let t: &Tensor = t;
                if inputs.iter().any(|x| x.shares_storage(t)) {
                    return self.through_fresh(|o| o.host(inputs, k));
                }
                let (reads, [w]) =
                    lock_storages(inputs.map(|t| Some(&**t.storage())), [Some(&**t.storage())]);
                let bufs = guarded(&inputs, &reads);
                let mut w = w.expect("a named storage is locked");
                let (off, n) = (t.layout().offset, t.numel());
                let s = &mut T::of_mut(&mut w)[off..off + n];
                if *acc {
                    k(bufs, cpu::Sink::Add(cpu::Dst::init(s, cpu::Accumulate)))
                } else {
                    k(bufs, cpu::Sink::Write(cpu::Dst::init(s, cpu::Write)))
                }
            }
        }
    }

    /// Runs a CPU kernel that needs the destination as a plain slice (one
    /// that reads back what it wrote, such as a row-wise softmax), reading
    /// `inputs`: `k` gets their buffers, the elements and whether to add
    /// into them. Locks as [`host`](Self::host) does. A fresh output is
    /// zeroed first (a slice of uninitialised memory would not be sound).
    pub(crate) fn host_slice<T: Host + Default, const N: usize>(
        &mut self,
        inputs: [&Tensor; N],
        k: impl FnOnce([&Buffer; N], &mut [T], bool),
    ) {
        debug_assert_eq!(T::DTYPE, self.spec.dtype);
        let op = self.op;
        match &mut self.target {
            Target::Fresh(slot) => {
                let n = match crate::tensor::checked_numel(op, &self.spec.shape) {
                    Ok(n) => n,
                    Err(e) => return self.fail(e),
                };
                let mut v = match crate::backend::memory::try_alloc::<T>(op, &self.spec.shape, n) {
                    Ok(v) => v,
                    Err(e) => return self.fail(e),
                };
                v.resize(n, T::default());
                let (reads, []) = lock_storages(inputs.map(|t| Some(&**t.storage())), []);
                k(guarded(&inputs, &reads), &mut v, false);
                *slot = Some(Tensor::from_buffer(
                    T::wrap(v),
                    &self.spec.shape,
                    self.spec.device,
                ));
            }
            Target::Into(t, acc) => {
                let t: &Tensor = t;
                if inputs.iter().any(|x| x.shares_storage(t)) {
                    return self.through_fresh(|o| o.host_slice(inputs, k));
                }
                let (reads, [w]) =
                    lock_storages(inputs.map(|t| Some(&**t.storage())), [Some(&**t.storage())]);
                let mut w = w.expect("a named storage is locked");
                let (off, n) = (t.layout().offset, t.numel());
                k(
                    guarded(&inputs, &reads),
                    &mut T::of_mut(&mut w)[off..off + n],
                    *acc,
                )
            }
        }
    }

    /// Writes `x`'s elements, read in row-major order, into the destination,
    /// or adds them: a copy between any two layouts of one element count
    /// (a flatten's), on the backend's map kernel. `x` has the destination's
    /// float dtype and lives in main memory.
    #[track_caller]
    pub(crate) fn copy_from(&mut self, x: &Tensor) {
        fn k<T: Host + std::ops::Add<Output = T>>(out: &mut Out<'_>, x: &Tensor) {
            out.host::<T, 1>([x], |[xb], sink| {
                cpu::map_to("copy", sink, T::of(xb), x.layout(), |v| v)
            });
        }
        assert_eq!(
            x.dtype(),
            self.spec.dtype,
            "internal: a copy between dtypes ({} into {})",
            x.dtype(),
            self.spec.dtype
        );
        match x.dtype() {
            DType::F32 => k::<f32>(self, x),
            DType::F64 => k::<f64>(self, x),
            other => panic!("internal: copy_from on a {other} tensor; floats only"),
        }
    }

    /// Runs `k` on a fresh output of this spec, then stores the result in
    /// this destination: for a destination that is also one of the kernel's
    /// inputs (`x.grad` accumulating a gradient that is `x.grad` itself).
    fn through_fresh(&mut self, k: impl FnOnce(&mut Out<'static>)) {
        let mut tmp = Out::fresh(self.spec.clone()).named(self.op);
        k(&mut tmp);
        match tmp.try_finish() {
            Ok(t) => self.set(t),
            Err(e) => self.fail(e),
        }
    }

    /// The destination tensor for a device kernel that writes it (a new,
    /// uninitialised one for a fresh output), and whether to accumulate.
    #[cfg(feature = "cuda")]
    pub(crate) fn device_target(&mut self) -> (Tensor, bool) {
        match &mut self.target {
            Target::Fresh(slot) => {
                let Device::Cuda(i) = self.spec.device else {
                    unreachable!("device_target on a CPU output")
                };
                let t = Tensor::from_array(crate::backend::cuda::ops::empty(
                    &crate::backend::cuda::ctx(i),
                    self.spec.dtype,
                    &self.spec.shape,
                ));
                *slot = Some(t.clone());
                (t, false)
            }
            Target::Into(t, acc) => ((*t).clone(), *acc),
        }
    }

    /// The new tensor a fresh destination holds, or the allocation error.
    pub(crate) fn try_finish(mut self) -> Result<Tensor> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(self.finish()),
        }
    }

    /// The new tensor a fresh destination holds.
    #[track_caller]
    pub(crate) fn finish(mut self) -> Tensor {
        if let Some(e) = self.failed.take() {
            panic!("{e}");
        }
        match self.target {
            Target::Fresh(Some(t)) => t,
            Target::Fresh(None) => panic!(
                "internal: an op's forward wrote nothing (output shape {:?})",
                self.spec.shape
            ),
            Target::Into(t, _) => t.clone(),
        }
    }
}

// ---------------------------------------------------------------- gradients

/// Where backward puts one input's gradient: the adjoint summed so far (none
/// yet, or the contributions of other uses of the same value) and, on the
/// buffer-reusing path, a buffer to compute into.
pub struct GradSlot<'a> {
    need: bool,
    sum: &'a mut Option<Tensor>,
    buf: Option<&'a mut Option<Tensor>>,
}

impl<'a> GradSlot<'a> {
    /// A slot summing into `sum`; `need` false makes it a no-op.
    pub fn new(sum: &'a mut Option<Tensor>, need: bool) -> Self {
        GradSlot {
            need,
            sum,
            buf: None,
        }
    }

    /// A slot that computes into the reusable buffer `buf` where it can.
    pub fn with_buffer(
        sum: &'a mut Option<Tensor>,
        buf: &'a mut Option<Tensor>,
        need: bool,
    ) -> Self {
        GradSlot {
            need,
            sum,
            buf: Some(buf),
        }
    }

    /// Whether this input's gradient is wanted.
    pub fn needed(&self) -> bool {
        self.need
    }

    /// Adds a computed contribution.
    pub fn add(&mut self, g: Tensor) {
        if !self.need {
            return;
        }
        match self.sum.take() {
            // The first contribution is kept as a handle: no copy.
            None => *self.sum = Some(g),
            Some(prev) if crate::tensor::same_shape(prev.shape(), g.shape()) => {
                let spec = Spec::like(&prev);
                self.add_with(spec, |out| out.set(g), Some(prev));
            }
            Some(prev) => *self.sum = Some(crate::autograd::no_grad(|| &prev + &g)),
        }
    }

    /// Adds a contribution of `spec` that `kernel` writes into an [`Out`]
    /// (overwriting or accumulating as the `Out` says): into the summed
    /// adjoint in place when it is this slot's own, into the reused buffer,
    /// or into a new tensor.
    pub fn add_into(&mut self, spec: Spec, kernel: impl FnOnce(&mut Out<'_>)) {
        if !self.need {
            return;
        }
        let prev = self.sum.take();
        self.add_with(spec, kernel, prev);
    }

    fn add_with(&mut self, spec: Spec, kernel: impl FnOnce(&mut Out<'_>), prev: Option<Tensor>) {
        let in_buf = |p: &Tensor, buf: &Option<&mut Option<Tensor>>| {
            buf.as_ref()
                .and_then(|b| b.as_ref())
                .is_some_and(|b| b.shares_storage(p))
        };
        // With a buffer, what is ours is the buffer; without one, a tensor
        // nobody else holds (made by an earlier contribution of this backward).
        let owned = |p: &Tensor, buf: &Option<&mut Option<Tensor>>| {
            if buf.is_some() {
                in_buf(p, buf)
            } else {
                exclusive(p, 1)
            }
        };
        match prev {
            // Ours: accumulate in place.
            Some(p) if spec.fits(&p) && owned(&p, &self.buf) => {
                kernel(&mut Out::into(&p, true));
                *self.sum = Some(p);
            }
            Some(p) => {
                // Someone else's tensor (a handle passed through): copy it into
                // our buffer, then accumulate there.
                match self.reusable_buffer(&spec, Some(&p)) {
                    Some(b) => {
                        crate::autograd::no_grad(|| b.copy_(&p));
                        kernel(&mut Out::into(&b, true));
                        *self.sum = Some(b);
                    }
                    None => {
                        let mut out = Out::fresh(spec);
                        kernel(&mut out);
                        let g = out.finish();
                        *self.sum = Some(crate::autograd::no_grad(|| &p + &g));
                    }
                }
            }
            None => match self.reusable_buffer(&spec, None) {
                Some(b) => {
                    kernel(&mut Out::into(&b, false));
                    *self.sum = Some(b);
                }
                None => {
                    let mut out = Out::fresh(spec);
                    kernel(&mut out);
                    *self.sum = Some(out.finish());
                }
            },
        }
    }

    /// The buffer to compute into, (re)made to fit `spec` when it does not,
    /// or when it is still shared; `None` without a buffer. Never `avoid`'s storage.
    fn reusable_buffer(&mut self, spec: &Spec, avoid: Option<&Tensor>) -> Option<Tensor> {
        let buf = self.buf.as_mut()?;
        let ok = buf
            .as_ref()
            .is_some_and(|b| spec.fits(b) && !avoid.is_some_and(|a| b.shares_storage(a)));
        if !ok {
            **buf = Some(crate::autograd::no_grad(|| {
                Tensor::zeros_opts(
                    spec.shape.as_slice(),
                    &crate::tensor::TensorOptions::new()
                        .dtype(spec.dtype)
                        .device(&spec.device),
                )
            }));
        }
        buf.as_ref().map(|b| (*b).clone())
    }
}

// ---------------------------------------------------------------- the tape node

/// The tape node of any op: the op, what it saved (detached, with the
/// storage versions at save time) and which inputs need a gradient.
pub struct OpNode<O: Op> {
    op: O,
    saved: O::Saved,
    versions: SmallVec<[(Arc<crate::backend::Storage>, u64); 2]>,
    need: Need,
}

/// Which inputs of a node need a gradient; inline up to 4 inputs, so that
/// recording an op (and running its backward) allocates no list.
type Need = SmallVec<[bool; 4]>;

impl<O: Op> OpNode<O> {
    fn new(op: O, mut saved: O::Saved, need: Need) -> Self {
        let mut versions = SmallVec::new();
        saved.visit_mut(&mut |t| {
            // A tensor outside the graph is kept as it is (a new handle
            // would change nothing: backward reads saved tensors without
            // recording); one in the graph loses its link to it.
            if t.requires_grad() {
                *t = t.detach();
            }
            versions.push((t.storage().clone(), t.storage().version()));
        });
        OpNode {
            op,
            saved,
            versions,
            need,
        }
    }
}

impl<O: Op> Backward for OpNode<O> {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        for (storage, version) in &self.versions {
            let now = storage.version();
            assert!(
                now == *version,
                "one of the tensors needed for gradient computation has been modified by an \
                 in-place operation (saved by {}, version {} when saved, {} now); \
                 use the out-of-place form of the op (e.g. `a.add(&b)` instead of \
                 `a.add_(&b)`), or .clone_data() the tensor before modifying it",
                O::NAME,
                version,
                now
            );
        }
        let mut sums: Vec<Option<Tensor>> = vec![None; self.need.len()];
        {
            let mut slots: SmallVec<[GradSlot<'_>; 4]> = sums
                .iter_mut()
                .zip(&self.need)
                .map(|(s, &n)| GradSlot::new(s, n))
                .collect();
            self.op.backward(&self.saved, g, &mut slots);
        }
        sums
    }
}
