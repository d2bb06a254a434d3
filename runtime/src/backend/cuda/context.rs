//! One CUDA context per device, created on first use and bound to whichever
//! thread calls in: cust binds contexts per thread, so every entry point of
//! the backend calls [`DeviceCtx::bind`] before touching the driver.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cust::context::{Context, CurrentContext};
use cust::module::Module;
use cust::sys;

use super::alloc::Allocator;

/// A device's context, its kernels and its caching allocator.
///
/// Statics hold these for the life of the process, so the context outlives
/// every buffer and module made in it (it is released last).
pub(crate) struct DeviceCtx {
    pub(crate) ordinal: usize,
    ctx: Context,
    module: OnceLock<Module>,
    /// The ops' own modules (`ElementwiseModule`), by key, loaded on first use.
    op_modules: Mutex<HashMap<&'static str, Arc<OpModule>>>,
    pub(crate) alloc: Mutex<Allocator>,
    /// Multiprocessor count, for sizing grids.
    pub(crate) sms: u32,
}

// SAFETY: a CUDA context handle may be used from any thread once made
// current there (bind does that); the module and function handles are plain
// driver handles valid in that context.
unsafe impl Send for DeviceCtx {}
// SAFETY: as above; the allocator is behind a mutex.
unsafe impl Sync for DeviceCtx {}

thread_local! {
    /// The raw context this thread last bound, to skip redundant binds.
    static BOUND: Cell<usize> = const { Cell::new(0) };
}

impl DeviceCtx {
    /// Makes this context current on the calling thread.
    pub(crate) fn bind(&self) {
        let raw = self.ctx.as_raw() as usize;
        if BOUND.with(|b| b.get()) == raw {
            return;
        }
        CurrentContext::set_current(&self.ctx)
            .unwrap_or_else(|e| panic!("cuda:{}: cannot bind the CUDA context: {e}", self.ordinal));
        BOUND.with(|b| b.set(raw));
    }

    /// The kernels, JIT-compiled from the generated PTX on first use.
    pub(crate) fn module(&self) -> &Module {
        self.module.get_or_init(|| {
            self.bind();
            let ptx = super::ptx::source();
            Module::from_ptx(&ptx, &[]).unwrap_or_else(|e| {
                panic!(
                    "cuda:{}: the driver could not load deriv's PTX kernels ({e}); \
                     check them offline with scripts/check-ptx.sh",
                    self.ordinal
                )
            })
        })
    }

    /// The module of an op's kernels, JIT-compiled from `build`'s PTX the
    /// first time it is asked for on this device.
    pub(crate) fn op_module(
        &self,
        key: &'static str,
        build: fn() -> super::ElementwiseModule,
    ) -> Arc<OpModule> {
        let mut map = self.op_modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get(key) {
            return m.clone();
        }
        self.bind();
        let em = build();
        debug_assert_eq!(em.key(), key);
        let module = Module::from_ptx(em.source(), &[]).unwrap_or_else(|e| {
            panic!(
                "cuda:{}: the driver could not load the kernels of `{key}` ({e}); \
                 check them offline with scripts/check-ptx.sh",
                self.ordinal
            )
        });
        let m = Arc::new(OpModule { module, em });
        map.insert(key, m.clone());
        m
    }

    /// Waits for all queued work on this device.
    pub(crate) fn synchronize(&self) {
        self.bind();
        CurrentContext::synchronize()
            .unwrap_or_else(|e| panic!("cuda:{}: a kernel failed: {e}", self.ordinal));
    }
}

/// A loaded op module and what it contains.
pub(crate) struct OpModule {
    pub(crate) module: Module,
    pub(crate) em: super::ElementwiseModule,
}

// SAFETY: module handles are plain driver handles valid in their context,
// which any thread binds before use.
unsafe impl Send for OpModule {}
// SAFETY: as above; a loaded module is immutable.
unsafe impl Sync for OpModule {}

enum Init {
    Ready(Vec<OnceLock<Result<Arc<DeviceCtx>, String>>>),
    Failed(String),
}

fn init() -> &'static Init {
    static INIT: OnceLock<Init> = OnceLock::new();
    INIT.get_or_init(|| {
        // cust::init fails cleanly (no crash) when the driver finds no device.
        match cust::init(cust::CudaFlags::empty()) {
            Err(e) => Init::Failed(format!("the CUDA driver reports no usable GPU ({e})")),
            Ok(()) => match cust::device::Device::num_devices() {
                Ok(0) => Init::Failed("the CUDA driver reports no GPU".into()),
                Ok(n) => Init::Ready((0..n).map(|_| OnceLock::new()).collect()),
                Err(e) => Init::Failed(format!("cannot count CUDA devices ({e})")),
            },
        }
    })
}

/// The number of usable GPUs (0 when the driver or a device is missing).
pub(crate) fn device_count() -> usize {
    match init() {
        Init::Ready(v) => v.len(),
        Init::Failed(_) => 0,
    }
}

/// Why no GPU is usable, or `None`.
pub(crate) fn unavailable_reason() -> Option<String> {
    match init() {
        Init::Ready(_) => None,
        Init::Failed(why) => Some(why.clone()),
    }
}

/// The context of GPU `ordinal`, made on first use and bound to this thread.
/// Panics with the reason when the device is not usable.
pub(crate) fn ctx(ordinal: usize) -> Arc<DeviceCtx> {
    let slots = match init() {
        Init::Ready(v) => v,
        Init::Failed(why) => panic!("cuda:{ordinal} is not available: {why}"),
    };
    let slot = slots.get(ordinal).unwrap_or_else(|| {
        panic!(
            "cuda:{ordinal} does not exist: this machine has {} CUDA device(s), \
             cuda:0 to cuda:{}",
            slots.len(),
            slots.len() - 1
        )
    });
    let c = slot
        .get_or_init(|| {
            let dev = cust::device::Device::get_device(ordinal as u32)
                .map_err(|e| format!("cannot open cuda:{ordinal}: {e}"))?;
            let sms = dev
                .get_attribute(cust::device::DeviceAttribute::MultiprocessorCount)
                .unwrap_or(1)
                .max(1) as u32;
            let ctx = Context::new(dev)
                .map_err(|e| format!("cannot create a context on cuda:{ordinal}: {e}"))?;
            Ok(Arc::new(DeviceCtx {
                ordinal,
                ctx,
                module: OnceLock::new(),
                op_modules: Mutex::new(HashMap::new()),
                alloc: Mutex::new(Allocator::default()),
                sms,
            }))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone();
    c.bind();
    c
}

/// Turns a driver status into a panic naming the operation.
#[track_caller]
pub(crate) fn check(r: sys::CUresult, what: &str) {
    if r != sys::CUresult::CUDA_SUCCESS {
        let mut s: *const std::os::raw::c_char = std::ptr::null();
        // SAFETY: cuGetErrorString writes a pointer to a static string or leaves null.
        unsafe { sys::cuGetErrorString(r, &mut s) };
        let msg = if s.is_null() {
            format!("{r:?}")
        } else {
            // SAFETY: the driver returns a NUL-terminated static string.
            unsafe { std::ffi::CStr::from_ptr(s) }
                .to_string_lossy()
                .into_owned()
        };
        panic!("CUDA error in {what}: {msg}");
    }
}
