//! How a collective runs: its plan (which contiguous host buffers MPI
//! reads and writes, and what happens to them afterwards), the blocking
//! executor, and [`Work`], the handle of a non-blocking one.
//!
//! Soundness of the non-blocking path. rsmpi ties a request to a scope
//! whose lifetime the borrowed buffers must outlive; a `Work` instead owns
//! what MPI uses, so it can be kept, moved and returned:
//!
//! - the buffers are the storages of tensors the `Work` holds handles to
//!   (`Arc`s), so they stay allocated while the request lives, even when
//!   the caller drops every handle of its own; a storage's `Vec` never
//!   changes length or moves its heap block while anything refers to it
//!   (only `Deliver::Swap`, after completion, exchanges two `Vec`s);
//! - before the request starts, each storage is marked in flight under its
//!   write lock, and every read or write of a marked storage panics with a
//!   message saying to `wait()` first: nothing in Rust touches the memory
//!   MPI may be writing;
//! - the mark is cleared only after MPI reports completion (`wait`, a
//!   successful `is_completed`, or `Drop`, which waits): MPI never writes
//!   into freed or reused memory, even when the `Work` is dropped unwaited.
//!   A `Work` that is leaked (`mem::forget`) leaks its tensors with it, so
//!   the memory is never freed while MPI may still use it.

use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::env::{issue_lock, watched, Group};
use crate::autograd::no_grad;
use crate::backend::Buffer;
use crate::tensor::Tensor;

/// Which collective, with its operation or root.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    AllReduce(SystemOperation),
    Broadcast(usize),
    AllGather,
    ReduceScatter(SystemOperation),
}

/// Where the result goes once MPI is done.
pub(crate) enum Deliver {
    /// `recv` is the result's final place (broadcast in place, a new output).
    Nothing,
    /// `recv` holds the new contents of this tensor, which owns its whole
    /// storage: the two buffers are exchanged (no copy), and `recv` keeps
    /// the old one.
    Swap(Tensor),
    /// `recv` is copied into this tensor (a view, strided, or on a GPU).
    Copy(Tensor),
}

/// One collective: MPI reads `send` (absent for a broadcast, which works
/// on `recv` in place) and writes `recv`, both contiguous CPU tensors; then
/// `recv` is scaled (an average) and delivered.
pub(crate) struct Plan {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) send: Option<Tensor>,
    pub(crate) recv: Tensor,
    pub(crate) scale: Option<f64>,
    pub(crate) deliver: Deliver,
    /// Whether `recv` is a scratch buffer to keep for the next collective.
    pub(crate) recycle: bool,
    /// Tensors the delivery will overwrite, kept untouched until completion
    /// (the caller's tensor, when MPI works on a copy of it). Their storages
    /// must differ from `send`'s and `recv`'s.
    pub(crate) guard: Vec<Tensor>,
}

/// An element type MPI can move, with its typed view of a [`Buffer`].
trait Elem: Equivalence + Sized + 'static {
    fn slice(b: &Buffer) -> &[Self];
    fn slice_mut(b: &mut Buffer) -> &mut [Self];
    fn wrap(r: Request<'static, [Self]>) -> Req;
}

macro_rules! elem {
    ($t:ty, $v:ident) => {
        impl Elem for $t {
            fn slice(b: &Buffer) -> &[$t] {
                match b {
                    Buffer::$v(v) => v,
                    _ => unreachable!("send and receive buffers share a dtype"),
                }
            }
            fn slice_mut(b: &mut Buffer) -> &mut [$t] {
                match b {
                    Buffer::$v(v) => v,
                    _ => unreachable!("send and receive buffers share a dtype"),
                }
            }
            fn wrap(r: Request<'static, [$t]>) -> Req {
                Req::$v(r)
            }
        }
    };
}
elem!(f32, F32);
elem!(f64, F64);
elem!(i64, I64);
elem!(bool, Bool);

/// What to do with a collective's typed slices.
trait Visit {
    type Out;
    fn visit<T: Elem>(self, send: Option<&[T]>, recv: &mut [T]) -> Self::Out;
}

/// A buffer and the span of it a collective uses (offset, length).
type Span<B> = (B, usize, usize);

/// Calls `v` with the typed send and receive slices.
fn dispatch<V: Visit>(send: Option<Span<&Buffer>>, recv: Span<&mut Buffer>, v: V) -> V::Out {
    fn go<T: Elem, V: Visit>(send: Option<Span<&Buffer>>, recv: Span<&mut Buffer>, v: V) -> V::Out {
        let s = send.map(|(b, o, n)| &T::slice(b)[o..o + n]);
        let (rb, ro, rn) = recv;
        v.visit(s, &mut T::slice_mut(rb)[ro..ro + rn])
    }
    match recv.0.dtype() {
        crate::tensor::DType::F32 => go::<f32, V>(send, recv, v),
        crate::tensor::DType::F64 => go::<f64, V>(send, recv, v),
        crate::tensor::DType::I64 => go::<i64, V>(send, recv, v),
        crate::tensor::DType::Bool => go::<bool, V>(send, recv, v),
    }
}

fn blocking<T: Equivalence>(
    comm: &SimpleCommunicator,
    kind: Kind,
    send: Option<&[T]>,
    recv: &mut [T],
) {
    let send = || send.expect("this collective has a send buffer");
    match kind {
        Kind::AllReduce(op) => comm.all_reduce_into(send(), recv, op),
        Kind::Broadcast(root) => comm.process_at_rank(root as i32).broadcast_into(recv),
        Kind::AllGather => comm.all_gather_into(send(), recv),
        Kind::ReduceScatter(op) => comm.reduce_scatter_block_into(send(), recv, op),
    }
}

fn immediate<T: Equivalence>(
    comm: &SimpleCommunicator,
    kind: Kind,
    send: Option<&'static [T]>,
    recv: &'static mut [T],
) -> Request<'static, [T]> {
    let send = || send.expect("this collective has a send buffer");
    match kind {
        Kind::AllReduce(op) => comm.immediate_all_reduce_into(StaticScope, send(), recv, op),
        Kind::Broadcast(root) => comm
            .process_at_rank(root as i32)
            .immediate_broadcast_into(StaticScope, recv),
        Kind::AllGather => comm.immediate_all_gather_into(StaticScope, send(), recv),
        Kind::ReduceScatter(op) => {
            comm.immediate_reduce_scatter_block_into(StaticScope, send(), recv, op)
        }
    }
}

impl Plan {
    /// The spans of the locked send and receive buffers MPI works on.
    fn spans<'b>(
        &self,
        send: Option<&'b Buffer>,
        recv: &'b mut Buffer,
    ) -> (Option<Span<&'b Buffer>>, Span<&'b mut Buffer>) {
        let send = self
            .send
            .as_ref()
            .zip(send)
            .map(|(t, b)| (b, t.layout().offset, t.numel()));
        (send, (recv, self.recv.layout().offset, self.recv.numel()))
    }
}

/// Runs `plan` to completion on this thread.
pub(crate) fn run_blocking(g: &Group, plan: Plan) {
    {
        let _issue = issue_lock();
        let send_guard = plan.send.as_ref().map(|s| s.storage().read());
        let mut recv_guard = plan.recv.storage().write();
        let (send, recv) = plan.spans(send_guard.as_deref(), &mut recv_guard);
        struct Blocking<'c>(&'c SimpleCommunicator, Kind);
        impl Visit for Blocking<'_> {
            type Out = ();
            fn visit<T: Elem>(self, send: Option<&[T]>, recv: &mut [T]) {
                blocking(self.0, self.1, send, recv)
            }
        }
        watched(plan.name, || {
            dispatch(send, recv, Blocking(&g.comm, plan.kind))
        });
    }
    finish(plan);
}

/// A request in flight, by element type.
enum Req {
    F32(Request<'static, [f32]>),
    F64(Request<'static, [f64]>),
    I64(Request<'static, [i64]>),
    Bool(Request<'static, [bool]>),
}

impl Req {
    fn wait(self) {
        match self {
            Req::F32(r) => r.wait_without_status(),
            Req::F64(r) => r.wait_without_status(),
            Req::I64(r) => r.wait_without_status(),
            Req::Bool(r) => r.wait_without_status(),
        }
    }

    /// `None` when complete; the request back otherwise.
    fn test(self) -> Option<Req> {
        match self {
            Req::F32(r) => r.test().err().map(Req::F32),
            Req::F64(r) => r.test().err().map(Req::F64),
            Req::I64(r) => r.test().err().map(Req::I64),
            Req::Bool(r) => r.test().err().map(Req::Bool),
        }
    }
}

/// Extends the guards' slices to `'static` and starts the request.
///
/// # Safety
///
/// The slices must stay allocated, unmoved and untouched by anything but
/// MPI until the returned request completes: the caller keeps the tensors
/// whose storages they are in [`Work::keep`] and marks those storages in
/// flight before releasing their locks.
unsafe fn start_typed<T: Elem>(
    comm: &SimpleCommunicator,
    kind: Kind,
    send: Option<&[T]>,
    recv: &mut [T],
) -> Req {
    // SAFETY: the caller's contract above: the memory outlives the request
    // and nothing else accesses it meanwhile, which is all `'static` promises here.
    let send: Option<&'static [T]> =
        send.map(|s| unsafe { std::slice::from_raw_parts(s.as_ptr(), s.len()) });
    // SAFETY: as above; and no other reference to this memory is used
    // until the request completes (the storage is marked in flight).
    let recv: &'static mut [T] =
        unsafe { std::slice::from_raw_parts_mut(recv.as_mut_ptr(), recv.len()) };
    T::wrap(immediate(comm, kind, send, recv))
}

/// A non-blocking collective in progress (PyTorch's `Work`, returned by
/// `async_op=True`): [`wait`](Self::wait) for it before using its tensors.
///
/// Until it completes, the tensors it reads or writes belong to it: any use
/// of them panics with a message saying to wait first (so no code can read
/// half-written results or write while MPI reads). Dropping a `Work` without
/// waiting waits in `drop`, so MPI never writes into freed memory, and the
/// results are delivered either way.
///
/// ```no_run
/// # #[cfg(feature = "mpi")] {
/// use deriv_runtime::distributed::{self, ReduceOp};
/// use deriv_runtime::Tensor;
/// distributed::init()?;
/// let grads = Tensor::ones([1 << 20]);
/// let work = distributed::all_reduce_async(&grads, ReduceOp::Avg)?;
/// // ... compute something that does not touch `grads` ...
/// work.wait();
/// assert_eq!(grads.to_vec::<f32>()[0], 1.0);
/// # }
/// # Ok::<(), deriv_runtime::Error>(())
/// ```
#[must_use = "a Work should be waited for (dropping it waits)"]
pub struct Work {
    name: &'static str,
    request: Option<Req>,
    plan: Option<Plan>,
    /// The tensors whose storages are marked in flight.
    keep: Vec<Tensor>,
}

// SAFETY: under MPI_THREAD_MULTIPLE (which `init` requires) a request may be
// tested and completed from any thread; the tensors are Send.
unsafe impl Send for Work {}

impl Work {
    /// Starts `plan` without waiting for it.
    pub(crate) fn start(g: &Group, plan: Plan) -> Work {
        let _issue = issue_lock();
        // MPI only reads `send`: a read lock keeps writers out while the
        // mark goes on (readers already inside may finish: reads do not
        // race with MPI's). `recv` and the guarded tensors will change: write
        // locks, which also bump their versions for autograd.
        let send_guard = plan.send.as_ref().map(|s| s.storage().read());
        let mut recv_guard = plan.recv.storage().write();
        let guard_locks: Vec<_> = plan.guard.iter().map(|t| t.storage().write()).collect();
        let (send, recv) = plan.spans(send_guard.as_deref(), &mut recv_guard);
        // Marked while every lock is held: no reader is past its check.
        let mut keep: Vec<Tensor> = Vec::with_capacity(2 + plan.guard.len());
        for t in plan.send.iter().chain([&plan.recv]).chain(&plan.guard) {
            t.storage().set_in_flight(true);
            keep.push(t.clone());
        }
        struct Immediate<'c>(&'c SimpleCommunicator, Kind);
        impl Visit for Immediate<'_> {
            type Out = Req;
            fn visit<T: Elem>(self, send: Option<&[T]>, recv: &mut [T]) -> Req {
                // SAFETY: `keep` holds every storage the slices point into,
                // each is marked in flight (so no Rust code reads or writes
                // it, and no swap moves its `Vec`) until `release` clears the
                // marks after MPI has finished; `Drop` completes an unwaited
                // request.
                unsafe { start_typed(self.0, self.1, send, recv) }
            }
        }
        let request = dispatch(send, recv, Immediate(&g.comm, plan.kind));
        drop(guard_locks);
        drop(recv_guard);
        drop(send_guard);
        Work {
            name: plan.name,
            request: Some(request),
            plan: Some(plan),
            keep,
        }
    }

    /// Waits until the collective has completed everywhere it concerns
    /// this rank, and delivers its result (`work.wait()`).
    pub fn wait(mut self) {
        self.complete();
    }

    /// Whether the collective has completed (delivering the result when it
    /// has), without blocking (`work.is_completed()`). Calling it also lets
    /// MPI progress the transfer.
    pub fn is_completed(&mut self) -> bool {
        if let Some(r) = self.request.take() {
            self.request = r.test();
            if self.request.is_none() {
                self.release();
            }
        }
        self.request.is_none()
    }

    /// The collective's name (`all_reduce`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn complete(&mut self) {
        if let Some(r) = self.request.take() {
            watched(self.name, || r.wait());
            self.release();
        }
    }

    /// After completion: unmarks the storages and delivers the result.
    fn release(&mut self) {
        for t in self.keep.drain(..) {
            t.storage().set_in_flight(false);
        }
        if let Some(plan) = self.plan.take() {
            finish(plan);
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        self.complete();
    }
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("name", &self.name)
            .field("pending", &self.request.is_some())
            .finish()
    }
}

/// After MPI is done: the average's scaling, then the delivery.
fn finish(plan: Plan) {
    no_grad(|| {
        if let Some(s) = plan.scale {
            plan.recv.mul_(s);
        }
        match &plan.deliver {
            Deliver::Nothing => {}
            Deliver::Swap(t) => {
                let mut a = t.storage().write();
                let mut b = plan.recv.storage().write();
                std::mem::swap(&mut *a, &mut *b);
            }
            Deliver::Copy(t) => {
                t.copy_(&plan.recv.reshape(t.shape()));
            }
        }
    });
    if plan.recycle {
        super::collectives::recycle(plan.recv);
    }
}
