//! The CUDA backend (the `cuda` feature): one context per device, a caching
//! allocator, and kernels generated as PTX (see [`ptx_source`]).
//!
//! Arrays on `Device::Cuda(i)` keep their elements in a device allocation;
//! each op checks its inputs' device and calls the kernels here. Host copies
//! happen only in moves between devices (`to`), `to_vec`, `item` and
//! printing.

mod alloc;
mod context;
pub(crate) mod ops;
mod optim;
mod ptx;
pub(crate) mod trace;

pub(crate) use optim::{adagrad_step, adam_step, rmsprop_step, sgd_step};

use std::ffi::c_void;
use std::sync::Arc;

use cust::sys;

use crate::backend::Buffer;
pub(crate) use crate::backend::Ew;
use crate::tensor::DType;
pub(crate) use context::{ctx, device_count, unavailable_reason, DeviceCtx};

use context::check;

/// The generated PTX of every kernel, as the driver loads it (for offline
/// checks with ptxas: `scripts/check-ptx.sh`).
pub fn ptx_source() -> String {
    ptx::source()
}

/// The PTX of one op's elementwise kernels (forward and derivatives, for
/// each dtype the tracer can write), loaded into its own module the first
/// time one of them runs on a device.
pub(crate) struct ElementwiseModule {
    key: &'static str,
    source: String,
    kernels: Vec<String>,
}

impl ElementwiseModule {
    /// An empty module for the op named `key`.
    pub(crate) fn new(key: &'static str) -> Self {
        ElementwiseModule {
            key,
            source: String::from(ptx::HEADER),
            kernels: Vec::new(),
        }
    }

    /// Adds the kernels `<stem>_<dtype>_c` (contiguous) and `_s` (strided)
    /// whose every input and output is of dtype `d`, computing `body` (a
    /// traced body, `None` when the tracer could not write it for `d`).
    pub(crate) fn add(&mut self, stem: &str, d: DType, body: Option<String>) {
        let Some(body) = body else { return };
        let arity = (0..4)
            .take_while(|i| body.contains(&format!("%x{i}")))
            .count();
        for strided in [false, true] {
            let name = Self::kernel_name(stem, d, strided);
            ptx::ew_kernel(&mut self.source, &name, &vec![d; arity], d, &body, strided);
            self.kernels.push(name);
        }
    }

    /// Adds a kernel written by the op itself (not elementwise), whole.
    pub(crate) fn add_raw(&mut self, name: &str, ptx: &str) {
        self.source.push_str(ptx);
        self.kernels.push(name.to_string());
    }

    /// The name of a kernel `add` wrote.
    pub(crate) fn kernel_name(stem: &str, d: DType, strided: bool) -> String {
        format!(
            "{stem}_{}_{}",
            ptx::dname(d),
            if strided { "s" } else { "c" }
        )
    }

    /// The module's key (the op's kernel name).
    pub(crate) fn key(&self) -> &'static str {
        self.key
    }

    /// The PTX text.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether a kernel of that name was written.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.kernels.iter().any(|k| k == name)
    }
}

/// The short name of a dtype in kernel names (`f32`, `i64`, `u8`).
pub(crate) fn dtype_name(d: DType) -> &'static str {
    ptx::dname(d)
}

/// One kernel parameter, by value.
pub(crate) enum Arg {
    U32(u32),
    U64(u64),
}

/// Allocation counters of one GPU's caching allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live tensors.
    pub in_use: usize,
    /// Bytes kept in the cache for reuse.
    pub cached: usize,
    /// Calls to `cuMemAlloc` since the context was made: a training loop in
    /// steady state adds none.
    pub mallocs: u64,
}

/// The allocator counters of GPU `ordinal` (panics when it is not usable).
pub fn memory_stats(ordinal: usize) -> MemoryStats {
    let c = ctx(ordinal);
    let a = c.alloc.lock().unwrap_or_else(|e| e.into_inner());
    MemoryStats {
        in_use: a.in_use,
        cached: a.cached,
        mallocs: a.mallocs,
    }
}

/// Returns the cached, unused blocks of GPU `ordinal` to the driver
/// (`torch.cuda.empty_cache()`).
pub fn empty_cache(ordinal: usize) {
    let c = ctx(ordinal);
    c.alloc
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .release_cache();
}

/// Waits until every kernel queued on GPU `ordinal` has finished
/// (`torch.cuda.synchronize()`); panics with the driver's message if one failed.
pub fn synchronize(ordinal: usize) {
    ctx(ordinal).synchronize();
}

/// A device allocation holding `len` elements of `dtype` (bools as bytes).
/// Dropping it returns the block to its device's cache.
pub(crate) struct CudaBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    len: usize,
    dtype: DType,
    ctx: Arc<DeviceCtx>,
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaBuffer({} x {} on cuda:{})",
            self.len, self.dtype, self.ctx.ordinal
        )
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.ctx
                .alloc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(self.ptr, self.bytes);
        }
    }
}

impl CudaBuffer {
    /// Uninitialised room for `len` elements on `ctx`'s device, the buffer
    /// of a tensor of `shape` (for the message). Out of memory, or a byte
    /// count that overflows, panics naming the shape and the bytes.
    #[track_caller]
    pub(crate) fn alloc(
        ctx: &Arc<DeviceCtx>,
        dtype: DType,
        len: usize,
        shape: &[usize],
    ) -> CudaBuffer {
        let esize = ptx::esize(dtype);
        let Some(rounded) = len.checked_mul(esize).and_then(alloc::round) else {
            panic!(
                "CUDA out of memory on cuda:{}: a tensor of shape {shape:?} needs {} bytes, \
                 more than any device holds; use smaller sizes",
                ctx.ordinal,
                len as u128 * esize as u128
            )
        };
        let (ptr, bytes) = if len == 0 {
            (0, 0)
        } else {
            ctx.bind();
            let p = ctx
                .alloc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .alloc(rounded, ctx.ordinal)
                .unwrap_or_else(|e| panic!("{e} (for a tensor of shape {shape:?})"));
            (p, rounded)
        };
        CudaBuffer {
            ptr,
            bytes,
            len,
            dtype,
            ctx: ctx.clone(),
        }
    }
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn ordinal(&self) -> usize {
        self.ctx.ordinal
    }
    pub(crate) fn ctx(&self) -> &Arc<DeviceCtx> {
        &self.ctx
    }
    /// The device address of element `offset`.
    pub(crate) fn ptr_at(&self, offset: usize) -> u64 {
        self.ptr + (offset * ptx::esize(self.dtype)) as u64
    }

    /// Copies a host buffer to GPU `ordinal`.
    pub(crate) fn upload(buf: &Buffer, ordinal: usize) -> CudaBuffer {
        let c = ctx(ordinal);
        let bools: Vec<u8>;
        let (src, dtype, len): (*const c_void, DType, usize) = match buf {
            Buffer::F32(v) => (v.as_ptr().cast(), DType::F32, v.len()),
            Buffer::F64(v) => (v.as_ptr().cast(), DType::F64, v.len()),
            Buffer::I64(v) => (v.as_ptr().cast(), DType::I64, v.len()),
            Buffer::Bool(v) => {
                bools = v.iter().map(|&b| b as u8).collect();
                (bools.as_ptr().cast(), DType::Bool, bools.len())
            }
        };
        let out = CudaBuffer::alloc(&c, dtype, len, &[len]);
        if len > 0 {
            // SAFETY: `src` holds len elements of dtype, `out` has room for them.
            let r = unsafe { sys::cuMemcpyHtoD_v2(out.ptr, src, len * ptx::esize(dtype)) };
            check(r, "copy to the GPU (cuMemcpyHtoD)");
        }
        out
    }

    /// Copies `len` elements from element `offset` (contiguous) to the host.
    #[track_caller]
    pub(crate) fn download(&self, offset: usize, len: usize) -> Buffer {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "to: internal error: copying elements {offset}..+{len} of a GPU buffer of {}",
            self.len
        );
        self.ctx.bind();
        let es = ptx::esize(self.dtype);
        macro_rules! get {
            ($t:ty) => {{
                let mut v: Vec<$t> = crate::backend::memory::alloc("to", &[len], len);
                if len > 0 {
                    // SAFETY: the device range lies in this allocation (callers pass
                    // a view's range); the host vector has room for len elements,
                    // and the synchronous copy initialises all of them.
                    unsafe {
                        let r = sys::cuMemcpyDtoH_v2(
                            v.as_mut_ptr().cast(),
                            self.ptr + (offset * es) as u64,
                            len * es,
                        );
                        check(r, "copy from the GPU (cuMemcpyDtoH)");
                        v.set_len(len);
                    }
                }
                v
            }};
        }
        match self.dtype {
            DType::F32 => Buffer::F32(get!(f32)),
            DType::F64 => Buffer::F64(get!(f64)),
            DType::I64 => Buffer::I64(get!(i64)),
            DType::Bool => Buffer::Bool(get!(u8).into_iter().map(|b| b != 0).collect()),
        }
    }
}

/// Launches kernel `name` of `ctx`'s module: `args` point at each parameter's
/// value, in the kernel's order (the typed wrappers in `ops` build them).
pub(crate) fn launch(
    ctx: &DeviceCtx,
    name: &str,
    grid: (u32, u32, u32),
    block: u32,
    args: &mut [*mut c_void],
) {
    launch_in(ctx, ctx.module(), name, grid, block, args)
}

/// [`launch`] of a kernel of `module` (an op's own module).
pub(crate) fn launch_in(
    ctx: &DeviceCtx,
    module: &cust::module::Module,
    name: &str,
    grid: (u32, u32, u32),
    block: u32,
    args: &mut [*mut c_void],
) {
    if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
        return;
    }
    ctx.bind();
    let f = module
        .get_function(name)
        .unwrap_or_else(|e| panic!("CUDA kernel {name} is missing from deriv's PTX ({e})"));
    // SAFETY: `args` matches the parameter list the generator wrote for `name`
    // (both come from the same tables in ptx.rs), and every pointer argument
    // addresses a live allocation of the sizes the kernel reads and writes.
    let r = unsafe {
        sys::cuLaunchKernel(
            f.to_raw(),
            grid.0,
            grid.1,
            grid.2,
            block,
            1,
            1,
            0,
            std::ptr::null_mut(),
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    check(r, name);
}
