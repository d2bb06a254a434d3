//! Storage on each device (CPU buffers, CUDA allocations), the kernels,
//! and the device queries that need them.

mod array;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub(crate) mod memory;
pub mod step;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::tensor::DType;
pub(crate) use array::Array;

pub use crate::device::Device;

/// The CUDA queries, which need the backend.
impl Device {
    /// `Device::Cuda(0)` when this build has the `cuda` feature and a GPU is
    /// usable, else `Device::Cpu` (PyTorch's
    /// `"cuda" if torch.cuda.is_available() else "cpu"`).
    pub fn cuda_if_available() -> Device {
        if Device::cuda_device_count() > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }

    /// Whether a CUDA GPU is usable (`torch.cuda.is_available()`): false
    /// without the `cuda` feature, without a driver, or without a device.
    pub fn cuda_is_available() -> bool {
        Device::cuda_device_count() > 0
    }

    /// The number of usable CUDA GPUs (`torch.cuda.device_count()`).
    pub fn cuda_device_count() -> usize {
        #[cfg(feature = "cuda")]
        {
            cuda::device_count()
        }
        #[cfg(not(feature = "cuda"))]
        {
            0
        }
    }

    /// Why no CUDA GPU is usable (`None` when one is): the missing feature,
    /// driver or device, in words.
    pub fn cuda_unavailable_reason() -> Option<String> {
        #[cfg(feature = "cuda")]
        {
            cuda::unavailable_reason()
        }
        #[cfg(not(feature = "cuda"))]
        {
            Some("this build of deriv has no `cuda` feature".to_string())
        }
    }
}

/// The elementwise operations by name, for the GPU kernels
/// `ew_<name>_<dtype>_<c|s>` (the CPU runs closures written next to each use).
/// `a` and `b` are the kernel's two f64 parameters (a scalar operand, clamp
/// bounds, an exponent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) enum Ew {
    // --- no input: fill with a
    Fill,
    // --- one input
    Copy,
    Neg,
    Abs,
    Sqrt,
    Relu,
    AddS,
    SubS,
    MulS,
    DivS,
    Clamp,
    Square,
    PowI,
    PowF,
    Exp,
    Log,
    Tanh,
    Sigmoid,
    // --- two inputs
    Add,
    /// x + a·y (`add_scaled_`)
    AddScaled,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    ReluBwd,
    SigmoidBwd,
    TanhBwd,
    SqrtBwd,
    DivBwdB,
    PowSqBwd,
    PowSBwd,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    // --- three inputs: cond, a, b
    Where,
}

impl Ew {
    /// The op's name in messages (PyTorch's name for the forward ops).
    pub(crate) fn op_name(self) -> &'static str {
        use Ew::*;
        match self {
            Fill => "fill_",
            Copy => "copy_",
            Neg => "neg",
            Abs => "abs",
            Sqrt => "sqrt",
            Relu => "relu",
            AddS | Add => "add",
            SubS | Sub => "sub",
            MulS | Mul => "mul",
            DivS | Div => "div",
            Clamp => "clamp",
            Square => "square",
            PowI | PowF => "pow",
            Exp => "exp",
            Log => "log",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            AddScaled => "add_scaled",
            Max => "maximum",
            Min => "minimum",
            ReluBwd => "relu backward",
            SigmoidBwd => "sigmoid backward",
            TanhBwd => "tanh backward",
            SqrtBwd => "sqrt backward",
            DivBwdB => "div backward",
            PowSqBwd | PowSBwd => "pow backward",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            Where => "where",
        }
    }
}

/// The elements behind one or more tensors, one variant per dtype.
#[derive(Clone, Debug)]
pub(crate) enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl Buffer {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Buffer::F32(_) => DType::F32,
            Buffer::F64(_) => DType::F64,
            Buffer::I64(_) => DType::I64,
            Buffer::Bool(_) => DType::Bool,
        }
    }
    pub(crate) fn len(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len(),
            Buffer::F64(v) => v.len(),
            Buffer::I64(v) => v.len(),
            Buffer::Bool(v) => v.len(),
        }
    }
}

/// Shared storage: a buffer, its device, and a version counter bumped by every
/// in-place write so autograd can tell when a saved tensor was modified.
///
/// GPU storage keeps its device allocation in `cuda`, and an empty host
/// buffer of its dtype in `buf`: host kernels that reach GPU storage (an op
/// with no CUDA kernel yet) stop at [`read`](Self::read)'s check with a
/// message naming the caller.
///
/// The buffer's length never changes after creation (`len`): layouts are
/// checked against it when a tensor is made.
#[derive(Debug)]
pub(crate) struct Storage {
    buf: RwLock<Buffer>,
    len: usize,
    device: Device,
    version: AtomicU64,
    #[cfg(feature = "cuda")]
    cuda: Option<cuda::CudaBuffer>,
    /// Set while a non-blocking collective (`distributed::*_async`) may read
    /// or write the buffer outside the lock: every access refuses until its
    /// `Work` completes (see `distributed::work`).
    #[cfg(feature = "mpi")]
    in_flight: std::sync::atomic::AtomicBool,
}

impl Storage {
    pub(crate) fn new(buf: Buffer, device: Device) -> Self {
        assert!(
            device.is_cpu(),
            "cannot create a tensor on {device}: {}",
            Device::cuda_unavailable_reason()
                .unwrap_or_else(|| "create it on the CPU and move it with .to(&device)".into())
        );
        Storage {
            len: buf.len(),
            buf: RwLock::new(buf),
            device,
            version: AtomicU64::new(0),
            #[cfg(feature = "cuda")]
            cuda: None,
            #[cfg(feature = "mpi")]
            in_flight: Default::default(),
        }
    }
    /// Storage over a device allocation.
    #[cfg(feature = "cuda")]
    pub(crate) fn new_cuda(buf: cuda::CudaBuffer) -> Self {
        let empty = match buf.dtype() {
            DType::F32 => Buffer::F32(Vec::new()),
            DType::F64 => Buffer::F64(Vec::new()),
            DType::I64 => Buffer::I64(Vec::new()),
            DType::Bool => Buffer::Bool(Vec::new()),
        };
        Storage {
            buf: RwLock::new(empty),
            len: buf.len(),
            device: Device::Cuda(buf.ordinal()),
            version: AtomicU64::new(0),
            cuda: Some(buf),
            #[cfg(feature = "mpi")]
            in_flight: Default::default(),
        }
    }
    /// The device allocation of GPU storage.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(&self) -> Option<&cuda::CudaBuffer> {
        self.cuda.as_ref()
    }
    /// The device allocation, for a kernel that writes it: bumps the version
    /// as [`write`](Self::write) does.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_write(&self) -> &cuda::CudaBuffer {
        self.version.fetch_add(1, Ordering::Relaxed);
        self.cuda.as_ref().expect("cuda_write on host storage")
    }
    #[track_caller]
    fn check_host(&self) {
        #[cfg(feature = "cuda")]
        if self.cuda.is_some() {
            let at = std::panic::Location::caller();
            panic!(
                "not yet on CUDA: the operation called at {at} has no GPU kernel; \
                 move its inputs to the CPU with .to(&Device::Cpu) (tensor on {})",
                self.device
            );
        }
    }
    /// Read-locks the buffer. A thread that holds another storage's lock
    /// takes this one through [`lock_storages`] instead, so locks are always
    /// taken in one order.
    #[track_caller]
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Buffer> {
        self.check_host();
        self.lock_read()
    }
    /// Write-locks the buffer and bumps the version (see [`read`](Self::read)
    /// for holding two locks).
    #[track_caller]
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Buffer> {
        self.check_host();
        self.lock_write()
    }
    fn lock_read(&self) -> RwLockReadGuard<'_, Buffer> {
        // A panic while holding the lock leaves plain numbers behind: still readable.
        let guard = self.buf.read().unwrap_or_else(|e| e.into_inner());
        #[cfg(feature = "mpi")]
        self.check_idle();
        guard
    }
    fn lock_write(&self) -> RwLockWriteGuard<'_, Buffer> {
        let guard = self.buf.write().unwrap_or_else(|e| e.into_inner());
        // Host writers bump the version only under the write lock, so a
        // plain load and store (no read-modify-write) cannot lose a bump.
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v + 1, Ordering::Relaxed);
        #[cfg(feature = "mpi")]
        self.check_idle();
        guard
    }
    /// Refuses access while a collective owns the buffer. Checked with the
    /// lock held: the flag is set only under the write lock, so no reader
    /// can be past this check when MPI starts using the buffer.
    #[cfg(feature = "mpi")]
    #[track_caller]
    fn check_idle(&self) {
        if self.in_flight.load(Ordering::Acquire) {
            let at = std::panic::Location::caller();
            panic!(
                "this tensor's data belongs to a pending collective (a distributed::*_async \
                 call) until its Work completes: call wait() on the Work before using the \
                 tensor (accessed at {at})"
            );
        }
    }
    /// Marks the buffer as used by a collective (`true`, with the write lock
    /// held by the caller) or free again (`false`, once MPI has completed).
    #[cfg(feature = "mpi")]
    pub(crate) fn set_in_flight(&self, on: bool) {
        self.in_flight.store(on, Ordering::Release);
    }
    /// Where the storage lives in memory: the order [`lock_storages`] locks in.
    fn addr(&self) -> usize {
        self as *const Storage as usize
    }
    pub(crate) fn device(&self) -> Device {
        self.device
    }
    /// The number of elements in the buffer (host or device).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
}

/// The element types a host [`Buffer`] holds, with typed access to it.
pub(crate) trait Host: crate::tensor::Element {
    /// The elements of a buffer of this type (panics naming both types otherwise).
    fn of(b: &Buffer) -> &[Self];
    /// The elements, writable.
    fn of_mut(b: &mut Buffer) -> &mut [Self];
    /// Wraps a vector.
    fn wrap(v: Vec<Self>) -> Buffer;
}

macro_rules! host {
    ($t:ty, $variant:ident) => {
        impl Host for $t {
            #[inline]
            fn of(b: &Buffer) -> &[Self] {
                match b {
                    Buffer::$variant(v) => v,
                    other => panic!(
                        "internal: a {} buffer where {} was expected",
                        other.dtype(),
                        <$t as crate::tensor::Element>::DTYPE
                    ),
                }
            }
            #[inline]
            fn of_mut(b: &mut Buffer) -> &mut [Self] {
                match b {
                    Buffer::$variant(v) => v,
                    other => panic!(
                        "internal: a {} buffer where {} was expected",
                        other.dtype(),
                        <$t as crate::tensor::Element>::DTYPE
                    ),
                }
            }
            #[inline]
            fn wrap(v: Vec<Self>) -> Buffer {
                Buffer::$variant(v)
            }
        }
    };
}
host!(f32, F32);
host!(f64, F64);
host!(i64, I64);
host!(bool, Bool);
/// A read guard for each of `reads` and a write guard for each of `writes`,
/// taken in one global order, by the storages' addresses: two threads that
/// lock the same storages in opposite roles (`a.add_(&b)` beside
/// `b.mul_(&a)`) then cannot each hold one lock and wait for the other.
/// Every kernel that holds more than one storage lock at a time takes them
/// here, all at once.
///
/// A storage named by several reads is locked once (a second read lock on one
/// `RwLock` could wait behind a queued writer): its first entry gets the
/// guard, the others `None`.
/// A storage both read and written, or written twice, is a caller's bug
/// (in-place ops copy an aliasing operand first): it panics.
#[track_caller]
#[allow(clippy::type_complexity)]
pub(crate) fn lock_storages<'a, const R: usize, const W: usize>(
    reads: [Option<&'a Storage>; R],
    writes: [Option<&'a Storage>; W],
) -> (
    [Option<RwLockReadGuard<'a, Buffer>>; R],
    [Option<RwLockWriteGuard<'a, Buffer>>; W],
) {
    for (i, w) in writes.iter().enumerate() {
        let Some(w) = w else { continue };
        assert!(
            !writes[..i].iter().flatten().any(|o| o.addr() == w.addr())
                && !reads.iter().flatten().any(|r| r.addr() == w.addr()),
            "an op's output buffer shares storage with one of its inputs or outputs; use a \
             separate buffer for each output"
        );
    }
    for s in reads.iter().chain(writes.iter()).flatten() {
        s.check_host();
    }
    let mut read_guards = std::array::from_fn(|_| None);
    let mut write_guards = std::array::from_fn(|_| None);
    let all = |i: usize| if i < R { reads[i] } else { writes[i - R] };
    in_address_order(
        R + W,
        |i| all(i).map(Storage::addr),
        |i| {
            if i < R {
                read_guards[i] = reads[i].map(Storage::lock_read);
            } else {
                write_guards[i - R] = writes[i - R].map(Storage::lock_write);
            }
        },
    );
    (read_guards, write_guards)
}

/// Read guards for any number of storages (`cat`'s parts), taken as
/// [`lock_storages`] takes them: in address order, each storage once. Entry
/// `i`'s guard is `guards[holder[i]]` (the first entry of its storage).
#[track_caller]
pub(crate) fn read_storages<'a>(storages: &[&'a Storage]) -> Vec<ReadLocked<'a>> {
    for s in storages {
        s.check_host();
    }
    let mut order: Vec<usize> = (0..storages.len()).collect();
    // Stable: the first entry of each storage comes first among its equals.
    order.sort_by_key(|&i| storages[i].addr());
    let mut out: Vec<ReadLocked<'a>> = (0..storages.len()).map(ReadLocked::Alias).collect();
    let mut last: Option<usize> = None;
    for i in order {
        match last {
            Some(j) if storages[j].addr() == storages[i].addr() => out[i] = ReadLocked::Alias(j),
            _ => {
                out[i] = ReadLocked::Guard(storages[i].lock_read());
                last = Some(i);
            }
        }
    }
    out
}

/// One entry of [`read_storages`]: the guard, or the entry that holds it.
pub(crate) enum ReadLocked<'a> {
    Guard(RwLockReadGuard<'a, Buffer>),
    Alias(usize),
}

impl ReadLocked<'_> {
    /// Entry `i`'s buffer.
    pub(crate) fn buffer<'s>(all: &'s [ReadLocked<'_>], i: usize) -> &'s Buffer {
        match &all[i] {
            ReadLocked::Guard(g) => g,
            ReadLocked::Alias(j) => match &all[*j] {
                ReadLocked::Guard(g) => g,
                ReadLocked::Alias(_) => unreachable!("an alias names the entry holding the guard"),
            },
        }
    }
}

/// Calls `visit(i)` for the entries `0..n` that have an address, in
/// increasing address order, once per distinct address (its first entry).
/// Quadratic in `n`, which is a handful, and allocates nothing.
fn in_address_order(n: usize, addr: impl Fn(usize) -> Option<usize>, mut visit: impl FnMut(usize)) {
    let mut last: Option<usize> = None;
    loop {
        let mut next: Option<(usize, usize)> = None;
        for i in 0..n {
            let Some(a) = addr(i) else { continue };
            if last.is_some_and(|l| a <= l) {
                continue;
            }
            if next.is_none_or(|(b, _)| a < b) {
                next = Some((a, i));
            }
        }
        let Some((a, i)) = next else { break };
        visit(i);
        last = Some(a);
    }
}

impl Buffer {
    /// Wraps a typed vector.
    pub(crate) fn from_vec<T: crate::tensor::Element>(v: Vec<T>) -> Buffer {
        let any: Box<dyn std::any::Any> = Box::new(v);
        let any = match any.downcast::<Vec<f32>>() {
            Ok(v) => return Buffer::F32(*v),
            Err(a) => a,
        };
        let any = match any.downcast::<Vec<f64>>() {
            Ok(v) => return Buffer::F64(*v),
            Err(a) => a,
        };
        let any = match any.downcast::<Vec<i64>>() {
            Ok(v) => return Buffer::I64(*v),
            Err(a) => a,
        };
        match any.downcast::<Vec<bool>>() {
            Ok(v) => Buffer::Bool(*v),
            Err(_) => unreachable!("Element is implemented only for f32, f64, i64 and bool"),
        }
    }
}
