//! Devices and the storage that tensors view.

pub(crate) mod cpu;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::tensor::DType;

/// Where a tensor's data lives.
///
/// Code written against `Device` runs unchanged when the GPU backend adds
/// `Device::Cuda(i)`: create tensors on a device, or move them with
/// [`Tensor::to`](crate::Tensor::to).
///
/// ```
/// use deriv_runtime::{Device, Tensor};
/// let dev = Device::Cpu;
/// let x = Tensor::zeros_on([2, 3], &dev);
/// assert_eq!(x.device(), Device::Cpu);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Main memory, computed with faer and rayon.
    #[default]
    Cpu,
}

impl Device {
    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
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
#[derive(Debug)]
pub(crate) struct Storage {
    buf: RwLock<Buffer>,
    device: Device,
    version: AtomicU64,
}

impl Storage {
    pub(crate) fn new(buf: Buffer, device: Device) -> Self {
        Storage {
            buf: RwLock::new(buf),
            device,
            version: AtomicU64::new(0),
        }
    }
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Buffer> {
        // A panic while holding the lock leaves plain numbers behind: still readable.
        self.buf.read().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Buffer> {
        self.version.fetch_add(1, Ordering::Relaxed);
        self.buf.write().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn device(&self) -> Device {
        self.device
    }
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
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
