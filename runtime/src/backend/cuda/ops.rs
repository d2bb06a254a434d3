//! Typed launch wrappers: arrays (storage, layout, dtype) in, kernels of
//! `ptx.rs` out.
//! Each wrapper builds exactly the parameter list its generator wrote.

use std::ffi::c_void;
use std::sync::Arc;

use super::ptx::{self, GEO_BYTES, MAX_DIMS};
use super::Ew;
use super::{ctx, launch, CudaBuffer, DeviceCtx};
use crate::backend::{Array, Buffer, Storage};
use crate::tensor::{DType, Layout};

/// The device allocation of a GPU tensor.
pub(crate) fn buf(t: &Array) -> &CudaBuffer {
    t.storage().cuda().unwrap_or_else(|| {
        panic!(
            "internal: expected a GPU tensor, found one on {}",
            t.device()
        )
    })
}

/// A new contiguous, uninitialised array on GPU `ordinal` (of a shape the
/// op checked; `Layout::contiguous` checks it again).
#[track_caller]
pub(crate) fn empty(c: &Arc<DeviceCtx>, dtype: DType, shape: &[usize]) -> Array {
    let layout = Layout::contiguous(shape);
    let b = CudaBuffer::alloc(c, dtype, layout.numel(), shape);
    Array::new(Arc::new(Storage::new_cuda(b)), layout, dtype)
}

/// Wraps a device buffer as a contiguous array.
#[track_caller]
pub(crate) fn from_cuda(b: CudaBuffer, shape: &[usize]) -> Array {
    let dtype = b.dtype();
    Array::new(
        Arc::new(Storage::new_cuda(b)),
        Layout::contiguous(shape),
        dtype,
    )
}

/// Panics unless a kernel exists for `op` on `d`.
#[track_caller]
pub(crate) fn require(op: Ew, d: DType) {
    if !op.supports(d) {
        panic!(
            "not yet on CUDA: {} on {d} tensors has no GPU kernel (f64 transcendental math \
             runs on the CPU for now); use f32, or move the tensor with .to(&Device::Cpu)",
            op.name()
        );
    }
}

/// The `geo` parameter: operands' shapes and strides with size-1 dims
/// dropped and mergeable neighbours merged, right-aligned in 8 slots.
/// Returns it with whether every operand is then plainly contiguous.
fn geo(shape: &[usize], ops: &[(&[usize], usize)]) -> ([u8; GEO_BYTES], bool) {
    let mut dims: Vec<(usize, [usize; 4])> = Vec::new();
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let mut st = [0usize; 4];
        for (k, (s, _)) in ops.iter().enumerate() {
            st[k] = s[d];
        }
        if let Some(last) = dims.last_mut()
            && (0..ops.len()).all(|k| last.1[k] == st[k] * n)
        {
            last.0 *= n;
            last.1 = st;
            continue;
        }
        dims.push((n, st));
    }
    if dims.is_empty() {
        dims.push((1, [0; 4]));
    }
    assert!(
        dims.len() <= MAX_DIMS,
        "not yet on CUDA: elementwise kernels walk at most {MAX_DIMS} dims, and this operation's \
         operands need {} after merging; make them contiguous first",
        dims.len()
    );
    let numel: usize = shape.iter().product();
    assert!(
        numel < u32::MAX as usize,
        "not yet on CUDA: strided kernels index at most 2^32 elements"
    );
    let contiguous = dims.len() == 1 && (0..ops.len()).all(|k| dims[0].1[k] == 1 || dims[0].0 == 1);
    let mut g = [0u8; GEO_BYTES];
    for (k, (_, off)) in ops.iter().enumerate() {
        g[8 * k..8 * k + 8].copy_from_slice(&(*off as u64).to_le_bytes());
    }
    g[32..36].copy_from_slice(&(dims.len() as u32).to_le_bytes());
    let first = MAX_DIMS - dims.len();
    for i in 0..MAX_DIMS {
        let (n, st) = if i < first {
            (1, [0; 4])
        } else {
            dims[i - first]
        };
        g[36 + 4 * i..40 + 4 * i].copy_from_slice(&(n as u32).to_le_bytes());
        for (k, &s) in st.iter().enumerate() {
            assert!(
                s < u32::MAX as usize,
                "not yet on CUDA: strides past 2^32 elements"
            );
            let at = 68 + 32 * k + 4 * i;
            g[at..at + 4].copy_from_slice(&(s as u32).to_le_bytes());
        }
    }
    (g, contiguous)
}

fn grid_for(c: &DeviceCtx, n: usize) -> u32 {
    (n.div_ceil(256).max(1)).min(c.sms as usize * 32) as u32
}

/// Runs an elementwise kernel family (`name(strided)`) writing `out` (a view)
/// from `ins` (views broadcast to out's shape).
fn ew_launch(
    name: impl Fn(bool) -> String,
    out: (&CudaBuffer, &Layout),
    ins: &[(&CudaBuffer, &Layout)],
    a: f64,
    b: f64,
) {
    ew_launch_in(None, name, out, ins, a, b)
}

/// Runs the traced kernel `stem` of an op's module (`build`, loaded once per
/// device under `key`) writing `out` from `ins` of `out`'s dtype, with the
/// parameters `p`. Panics "not yet on CUDA" when the tracer could not write
/// the kernel for this dtype (f64 transcendentals).
pub(crate) fn ew_module(
    key: &'static str,
    build: fn() -> super::ElementwiseModule,
    stem: &str,
    out: (&CudaBuffer, &Layout),
    ins: &[(&CudaBuffer, &Layout)],
    p: [f64; 2],
) {
    let d = out.0.dtype();
    let m = out.0.ctx().op_module(key, build);
    if !m
        .em
        .has(&super::ElementwiseModule::kernel_name(stem, d, false))
    {
        panic!(
            "not yet on CUDA: `{key}` on {d} tensors has no GPU kernel (f64 transcendental \
             math runs on the CPU for now); use f32, or move the tensor with .to(&Device::Cpu)"
        );
    }
    ew_launch_in(
        Some(&m.module),
        |s| super::ElementwiseModule::kernel_name(stem, d, s),
        out,
        ins,
        p[0],
        p[1],
    )
}

/// Runs kernel `name` of an op's module (`build`, key `key`) on the device of
/// `on`, with one thread per each of `threads` items, blocks of 256, and the
/// parameters `args` in the kernel's order.
pub(crate) fn launch_module(
    on: &CudaBuffer,
    key: &'static str,
    build: fn() -> super::ElementwiseModule,
    name: &str,
    threads: usize,
    args: &mut [super::Arg],
) {
    let c = on.ctx().clone();
    let m = c.op_module(key, build);
    let mut ptrs: Vec<*mut c_void> = args
        .iter_mut()
        .map(|a| match a {
            super::Arg::U32(v) => (v as *mut u32).cast(),
            super::Arg::U64(v) => (v as *mut u64).cast(),
        })
        .collect();
    let blocks = threads.div_ceil(256).max(1) as u32;
    super::launch_in(&c, &m.module, name, (blocks, 1, 1), 256, &mut ptrs);
}

fn ew_launch_in(
    module: Option<&cust::module::Module>,
    name: impl Fn(bool) -> String,
    out: (&CudaBuffer, &Layout),
    ins: &[(&CudaBuffer, &Layout)],
    a: f64,
    b: f64,
) {
    let n = out.1.numel();
    if n == 0 {
        return;
    }
    let mut layouts: Vec<(&[usize], usize)> = vec![(&out.1.strides, out.1.offset)];
    for (_, l) in ins {
        layouts.push((&l.strides, l.offset));
    }
    let (mut g, contiguous) = geo(&out.1.shape, &layouts);
    let kernel = name(!contiguous);
    // The bounds of every view the kernel walks, once per launch.
    out.1.assert_within(&kernel, out.0.len());
    for (bf, l) in ins {
        assert!(
            l.shape == out.1.shape,
            "{kernel}: internal error: an operand of shape {:?} for an output of shape {:?}",
            l.shape,
            out.1.shape
        );
        l.assert_within(&kernel, bf.len());
    }
    let c = out.0.ctx();
    let mut p_out = out.0.ptr_at(0);
    let mut p = [0u64; 3];
    for (i, (bf, _)) in ins.iter().enumerate() {
        p[i] = bf.ptr_at(0);
    }
    let (mut a, mut b, mut n64) = (a, b, n as u64);
    let [mut p0, mut p1, mut p2] = p;
    let mut args: [*mut c_void; 8] = [
        g.as_mut_ptr().cast(),
        (&mut p_out as *mut u64).cast(),
        (&mut p0 as *mut u64).cast(),
        (&mut p1 as *mut u64).cast(),
        (&mut p2 as *mut u64).cast(),
        (&mut a as *mut f64).cast(),
        (&mut b as *mut f64).cast(),
        (&mut n64 as *mut u64).cast(),
    ];
    let module = module.unwrap_or_else(|| c.module());
    super::launch_in(c, module, &kernel, (grid_for(c, n), 1, 1), 256, &mut args);
}

/// `op` of `ins` (views of `shape`) into a new tensor of `out_dtype`.
pub(crate) fn ew_new(
    op: Ew,
    d: DType,
    shape: &[usize],
    ins: &[(&Array, &Layout)],
    a: f64,
    b: f64,
) -> Array {
    require(op, d);
    let (_, out_dtype) = op.types(d);
    let c = ins
        .first()
        .map(|(t, _)| buf(t).ctx().clone())
        .expect("ew_new needs an input");
    let out = empty(&c, out_dtype, shape);
    let bufs: Vec<(&CudaBuffer, &Layout)> = ins.iter().map(|(t, l)| (buf(t), *l)).collect();
    ew_launch(
        |s| ptx::ew_name(op, d, s),
        (buf(&out), out.layout()),
        &bufs,
        a,
        b,
    );
    out
}

/// Integer `a op b` (op "add", "sub" or "mul") of broadcast views into a new tensor.
pub(crate) fn ew_int(op: &str, a: &Array, la: &Layout, b: &Array, lb: &Layout) -> Array {
    let ew = match op {
        "add" => Ew::Add,
        "sub" => Ew::Sub,
        "mul" => Ew::Mul,
        other => panic!("not yet on CUDA: integer `{other}`"),
    };
    ew_new(ew, DType::I64, &la.shape, &[(a, la), (b, lb)], 0.0, 0.0)
}

/// `op` of one tensor (its own layout) into a new contiguous tensor.
pub(crate) fn map(op: Ew, t: &Array, a: f64, b: f64) -> Array {
    ew_new(op, t.dtype(), t.shape(), &[(t, t.layout())], a, b)
}

/// `dst = op(dst, src)` in place (src broadcast to dst's shape by `ls`).
pub(crate) fn update(op: Ew, dst: &Array, src: &Array, ls: &Layout, a: f64) {
    require(op, dst.dtype());
    let db = dst.storage().cuda_write();
    ew_launch(
        |s| ptx::ew_name(op, dst.dtype(), s),
        (db, dst.layout()),
        &[(db, dst.layout()), (buf(src), ls)],
        a,
        0.0,
    );
}

/// `dst = op(dst)` in place with scalar parameters (fill, clamp, scale).
pub(crate) fn update_unary(op: Ew, dst: &Array, a: f64, b: f64) {
    require(op, dst.dtype());
    let db = dst.storage().cuda_write();
    let ins: Vec<(&CudaBuffer, &Layout)> = if op.arity() == 0 {
        vec![]
    } else {
        vec![(db, dst.layout())]
    };
    ew_launch(
        |s| ptx::ew_name(op, dst.dtype(), s),
        (db, dst.layout()),
        &ins,
        a,
        b,
    );
}

/// Copies `src` (viewed by `ls`, broadcast to dst's shape) into the view
/// `dst`, converting its dtype.
pub(crate) fn copy_into(dst: &Array, src: &Array, ls: &Layout) {
    let db = dst.storage().cuda_write();
    let (from, to) = (src.dtype(), dst.dtype());
    let ins = [(buf(src), ls)];
    if from == to {
        ew_launch(
            |s| ptx::ew_name(Ew::Copy, to, s),
            (db, dst.layout()),
            &ins,
            0.0,
            0.0,
        );
    } else {
        ew_launch(
            |s| ptx::cast_name(from, to, s),
            (db, dst.layout()),
            &ins,
            0.0,
            0.0,
        );
    }
}

/// A contiguous copy of `t` converted to `dtype`.
pub(crate) fn cast(t: &Array, dtype: DType) -> Array {
    let out = empty(buf(t).ctx(), dtype, t.shape());
    copy_into(&out, t, t.layout());
    out
}

/// Copies row-major host elements of `shape` to GPU `ordinal`.
pub(crate) fn upload(host: &Buffer, shape: &[usize], ord: usize) -> Array {
    from_cuda(CudaBuffer::upload(host, ord), shape)
}

/// The elements of a GPU tensor in row-major order, on the host.
pub(crate) fn to_host_buffer(t: &Array) -> Buffer {
    let c = if t.is_contiguous() {
        t.clone()
    } else {
        cast(t, t.dtype())
    };
    buf(&c).download(c.layout().offset, c.numel())
}

/// Sum (`op` "sum") or max/min with indices of contiguous rows of `len`.
fn reduce_rows(op: &str, x: &Array, rows: usize, len: usize) -> (Array, Option<Array>) {
    let d = x.dtype();
    let c = buf(x).ctx().clone();
    let arg = op != "sum";
    // Long rows with few of them: split each row in chunks, then reduce the
    // partial sums (sums only; argmax runs one block per row).
    let nchunks = if !arg && rows < 2 * c.sms as usize && len >= 1 << 16 {
        (len / 8192).clamp(1, 1024)
    } else {
        1
    };
    let chunk = len.div_ceil(nchunks).max(1);
    // The kernel reads `rows` contiguous rows of `len` from x's offset.
    assert!(
        x.is_contiguous() && x.numel() == rows * len,
        "{op} (CUDA): internal error: {rows} rows of {len} from a tensor of shape {:?}",
        x.shape()
    );
    let out = empty(&c, d, &[rows * nchunks]);
    let idx = arg.then(|| empty(&c, DType::I64, &[rows]));
    let (mut pin, mut pout) = (buf(x).ptr_at(x.layout().offset), buf(&out).ptr_at(0));
    let mut pidx = idx.as_ref().map_or(0, |i| buf(i).ptr_at(0));
    let (mut l, mut ch, mut nc) = (len as u32, chunk as u32, nchunks as u32);
    let mut args: [*mut c_void; 6] = [
        (&mut pin as *mut u64).cast(),
        (&mut pout as *mut u64).cast(),
        (&mut pidx as *mut u64).cast(),
        (&mut l as *mut u32).cast(),
        (&mut ch as *mut u32).cast(),
        (&mut nc as *mut u32).cast(),
    ];
    assert!(
        rows < 1 << 31,
        "not yet on CUDA: reductions over 2^31 rows or more"
    );
    launch(
        &c,
        &ptx::reduce_name(op, d),
        (rows as u32, nchunks as u32, 1),
        256,
        &mut args,
    );
    if nchunks > 1 {
        return reduce_rows(op, &out, rows, nchunks);
    }
    (out, idx)
}

/// `t` with `dims` moved last and made contiguous: (kept count, reduced count).
fn rows_of(t: &Array, dims: &[usize]) -> (Array, usize, usize) {
    let mut perm: Vec<usize> = (0..t.ndim()).filter(|d| !dims.contains(d)).collect();
    perm.extend(dims.iter().copied());
    let l = t.layout();
    let p = t.with_layout(Layout {
        shape: perm.iter().map(|&d| l.shape[d]).collect(),
        strides: perm.iter().map(|&d| l.strides[d]).collect(),
        offset: l.offset,
    });
    let c = if p.is_contiguous() {
        p
    } else {
        cast(&p, p.dtype())
    };
    let len: usize = dims.iter().map(|&d| t.shape()[d]).product();
    let rows = t.numel().checked_div(len).unwrap_or(0);
    (c, rows, len)
}

/// Sum over `dims` (bools and i64 sum as i64), shaped to `out_shape`.
pub(crate) fn sum_dims(t: &Array, dims: &[usize], out_shape: &[usize]) -> Array {
    let t = if t.dtype() == DType::Bool {
        cast(t, DType::I64)
    } else {
        t.clone()
    };
    let (c, rows, len) = rows_of(&t, dims);
    if len == 0 {
        let z = empty(buf(&t).ctx(), t.dtype(), out_shape);
        update_unary(Ew::Fill, &z, 0.0, 0.0);
        return z;
    }
    let (out, _) = reduce_rows("sum", &c, rows, len);
    out.with_layout(Layout::contiguous(out_shape))
}

/// Max or min over one dim with the index of the first extremum.
pub(crate) fn extremum_dim(
    t: &Array,
    dims: &[usize],
    largest: bool,
    out_shape: &[usize],
) -> (Array, Array) {
    let (c, rows, len) = rows_of(t, dims);
    let (v, i) = reduce_rows(if largest { "max" } else { "min" }, &c, rows, len.max(1));
    let i = i.expect("max/min return indices");
    (
        v.with_layout(Layout::contiguous(out_shape)),
        i.with_layout(Layout::contiguous(out_shape)),
    )
}

/// Batched product: `a` and `b` are ≥2-D float GPU tensors of one dtype
/// whose batch dims have already been broadcast to `batch`; returns
/// `batch + [m, n]`, contiguous.
pub(crate) fn matmul(a: &Array, b: &Array, batch: &[usize]) -> Array {
    let d = a.dtype();
    let (an, bn) = (a.ndim(), b.ndim());
    let (m, k, n) = (a.shape()[an - 2], a.shape()[an - 1], b.shape()[bn - 1]);
    let nb: usize = batch.iter().product();
    let c = buf(a).ctx().clone();
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    let out = empty(&c, d, &shape);
    if out.numel() == 0 {
        return out;
    }
    // Each operand: row- or column-major matrices at an affine batch stride;
    // anything else is copied to contiguous first.
    let prep = |t: &Array, rows: usize, cols: usize| -> (Array, bool, usize, usize) {
        let mut full = batch.to_vec();
        full.extend([rows, cols]);
        let t = t.with_layout(t.layout().broadcast_to(&full));
        let l = t.layout();
        let nd = l.ndim();
        let (rs, cs) = (l.strides[nd - 2], l.strides[nd - 1]);
        let layout = if cs == 1 && (rs >= cols || rows == 1) {
            Some((false, if rows == 1 { cols } else { rs }))
        } else if rs == 1 && (cs >= rows || cols == 1) {
            Some((true, if cols == 1 { rows } else { cs }))
        } else {
            None
        };
        // The batch must be affine: matrix i at offset + i * stride.
        let mut stride: Option<usize> = None;
        let mut expect = 0;
        let mut affine = true;
        for (&s, &n) in l.strides[..nd - 2].iter().zip(&l.shape[..nd - 2]).rev() {
            if n == 1 {
                continue;
            }
            if stride.is_some() && s != expect {
                affine = false;
            }
            stride.get_or_insert(s);
            expect = s * n;
        }
        match layout {
            Some((trans, ld)) if affine => (t, trans, ld.max(1), stride.unwrap_or(0)),
            _ => {
                let cc = cast(&t, t.dtype());
                (cc, false, cols.max(1), rows * cols)
            }
        }
    };
    let (a2, ta, lda, sa) = prep(a, m, k);
    let (b2, tb, ldb, sb) = prep(b, k, n);
    // What the kernel reads, checked once: `nb` matrices at an affine batch
    // stride, each row- or column-major with its leading dimension.
    let reach = |t: &Array, trans: bool, ld: usize, bstride: usize, rows: usize, cols: usize| {
        let (rs, cs) = if trans { (1, ld) } else { (ld, 1) };
        Layout {
            shape: smallvec::smallvec![nb, rows, cols],
            strides: smallvec::smallvec![bstride, rs, cs],
            offset: t.layout().offset,
        }
        .assert_within("matmul (CUDA)", buf(t).len());
    };
    reach(&a2, ta, lda, sa, m, k);
    reach(&b2, tb, ldb, sb, k, n);
    let (oa, ob) = (a2.layout().offset, b2.layout().offset);
    let vec = d == DType::F32
        && [lda, ldb, sa, sb, oa, ob].iter().all(|v| v % 4 == 0)
        && (if ta { m % 4 == 0 } else { k % 4 == 0 })
        && (if tb { k % 4 == 0 } else { n % 4 == 0 });
    let (mut pa, mut pb, mut pc) = (
        buf(&a2).ptr_at(oa),
        buf(&b2).ptr_at(ob),
        buf(&out).ptr_at(0),
    );
    let (mut mm, mut nn, mut kk, mut la, mut lb) =
        (m as u32, n as u32, k as u32, lda as u32, ldb as u32);
    let (mut s_a, mut s_b, mut s_c) = (sa as u64, sb as u64, (m * n) as u64);
    let mut args: [*mut c_void; 11] = [
        (&mut pa as *mut u64).cast(),
        (&mut pb as *mut u64).cast(),
        (&mut pc as *mut u64).cast(),
        (&mut mm as *mut u32).cast(),
        (&mut nn as *mut u32).cast(),
        (&mut kk as *mut u32).cast(),
        (&mut la as *mut u32).cast(),
        (&mut lb as *mut u32).cast(),
        (&mut s_a as *mut u64).cast(),
        (&mut s_b as *mut u64).cast(),
        (&mut s_c as *mut u64).cast(),
    ];
    assert!(
        nb <= 65535,
        "not yet on CUDA: matmul with more than 65535 batches"
    );
    let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, nb as u32);
    launch(&c, &ptx::gemm_name(d, ta, tb, vec), grid, 256, &mut args);
    out
}

/// `gather` (and `index_select`, whose index is laid out to broadcast):
/// out (contiguous, the index's shape) takes `src[.., index, ..]` along a
/// dim; `lsrc` is src's layout with that dim's stride set to 0 and shape
/// set to the index's, `ds` the real stride.
pub(crate) fn gather(src: &Array, lsrc: &Layout, ds: usize, index: &Array, lidx: &Layout) -> Array {
    let c = buf(src).ctx().clone();
    let out = empty(&c, src.dtype(), &lidx.shape);
    index_launch(
        &ptx::gather_name(src.dtype()),
        &out,
        out.layout(),
        index,
        lidx,
        src,
        lsrc,
        ds,
    );
    out
}

/// `dst[.., index, ..] += src` along a dim (atomically); `ldst` is dst's
/// layout with that dim's stride 0 and the index's shape, `ds` its stride.
pub(crate) fn scatter_add(
    dst: &Array,
    ldst: &Layout,
    ds: usize,
    index: &Array,
    lidx: &Layout,
    src: &Array,
    lsrc: &Layout,
) {
    let d = dst.dtype();
    assert!(
        d != DType::Bool,
        "not yet on CUDA: scatter_add on bool tensors"
    );
    index_launch(
        &ptx::scatter_add_name(d),
        dst,
        ldst,
        index,
        lidx,
        src,
        lsrc,
        ds,
    );
}

#[allow(clippy::too_many_arguments)]
fn index_launch(
    name: &str,
    out: &Array,
    lout: &Layout,
    index: &Array,
    lidx: &Layout,
    src: &Array,
    lsrc: &Layout,
    ds: usize,
) {
    let n = lidx.numel();
    if n == 0 {
        return;
    }
    // The bounds of the views the kernel walks, once per launch (the index
    // values themselves were checked against the indexed dim's size, whose
    // stride `ds` the kernel adds).
    lout.assert_within(name, buf(out).len());
    lidx.assert_within(name, buf(index).len());
    lsrc.assert_within(name, buf(src).len());
    let ops: [(&[usize], usize); 3] = [
        (&lout.strides, lout.offset),
        (&lidx.strides, lidx.offset),
        (&lsrc.strides, lsrc.offset),
    ];
    let (mut g, _) = geo(&lidx.shape, &ops);
    let c = buf(out).ctx().clone();
    let mut po = out.storage().cuda_write().ptr_at(0);
    let (mut pi, mut ps) = (buf(index).ptr_at(0), buf(src).ptr_at(0));
    let (mut d64, mut n64) = (ds as u64, n as u64);
    let mut args: [*mut c_void; 6] = [
        g.as_mut_ptr().cast(),
        (&mut po as *mut u64).cast(),
        (&mut pi as *mut u64).cast(),
        (&mut ps as *mut u64).cast(),
        (&mut d64 as *mut u64).cast(),
        (&mut n64 as *mut u64).cast(),
    ];
    launch(&c, name, (grid_for(&c, n), 1, 1), 256, &mut args);
}

/// A new array of `shape` filled with `value` on GPU `ordinal`.
pub(crate) fn full(ordinal: usize, dtype: DType, shape: &[usize], value: f64) -> Array {
    let out = empty(&ctx(ordinal), dtype, shape);
    update_unary(Ew::Fill, &out, value, 0.0);
    out
}

/// softmax (or log_softmax) of an f32 GPU tensor along `dim`, fused into one
/// kernel over rows; the result has `x`'s shape (a permuted view when `dim`
/// is not the last).
pub(crate) fn softmax(x: &Array, dim: usize, log: bool) -> Array {
    let nd = x.ndim();
    let mut perm: Vec<usize> = (0..nd).filter(|&d| d != dim).collect();
    perm.push(dim);
    let (rows_t, rows, len) = rows_of(x, &[dim]);
    let c = buf(&rows_t).ctx().clone();
    let out = empty(&c, DType::F32, rows_t.shape());
    // The kernel reads `rows` contiguous rows of `len` from the offset.
    assert!(
        rows_t.is_contiguous() && rows_t.numel() == rows * len,
        "softmax (CUDA): internal error: {rows} rows of {len} from shape {:?}",
        rows_t.shape()
    );
    if rows > 0 && len > 0 {
        let (mut pin, mut pout) = (
            buf(&rows_t).ptr_at(rows_t.layout().offset),
            buf(&out).ptr_at(0),
        );
        let mut l = len as u32;
        let mut args: [*mut c_void; 3] = [
            (&mut pin as *mut u64).cast(),
            (&mut pout as *mut u64).cast(),
            (&mut l as *mut u32).cast(),
        ];
        assert!(
            rows < 1 << 31,
            "not yet on CUDA: softmax over 2^31 rows or more"
        );
        launch(
            &c,
            ptx::softmax_name(log),
            (rows as u32, 1, 1),
            256,
            &mut args,
        );
    }
    // Undo the permutation: out dim perm[i] is x's dim perm[i].
    let ol = out.layout();
    let mut shape = vec![0; nd];
    let mut strides = vec![0; nd];
    for (i, &d) in perm.iter().enumerate() {
        shape[d] = ol.shape[i];
        strides[d] = ol.strides[i];
    }
    out.with_layout(Layout {
        shape: shape.into(),
        strides: strides.into(),
        offset: 0,
    })
}
