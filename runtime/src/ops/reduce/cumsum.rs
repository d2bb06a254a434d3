//! `cumsum(x, dim)`: running sums along one dim. Its gradient is the running
//! sum of `g` taken from the other end. One scan kernel per device serves both.

use crate::autograd::{apply, GradSlot, Op, Out, Spec};
use crate::backend::{cpu, Host};
use crate::error::Result;
use crate::tensor::{norm_dim, DType, Tensor};

/// `x.cumsum(dim)` (`torch.cumsum`): integer and bool inputs sum in i64.
#[derive(Clone, Copy, Debug)]
pub struct Cumsum {
    /// The dim summed along (negative counting from the end).
    pub dim: isize,
}

impl Cumsum {
    /// Along `dim`.
    pub fn new(dim: isize) -> Self {
        Cumsum { dim }
    }
}

/// `(outer, len, inner)` of a contiguous tensor of `shape` around `dim`.
fn lanes(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    if shape.is_empty() {
        return (1, 1, 1);
    }
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

/// `out <- running sums of x along dim` (from the end when `reverse`).
fn scan(x: &Tensor, dim: usize, reverse: bool, out: &mut Out<'_>) {
    let dt = out.spec().dtype;
    let x = crate::autograd::no_grad(|| crate::ops::elementwise::cast(x, dt).contiguous());
    let (outer, len, inner) = lanes(x.shape(), dim);
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        return cuda::scan(&x, (outer, len, inner), reverse, out);
    }
    let off = x.layout().offset;
    let lanes = (outer, len, inner);
    match dt {
        DType::F32 => out.host::<f32, 1>([&x], |[g], o| {
            cpu::scan_to(o, &f32::of(g)[off..], lanes, reverse)
        }),
        DType::F64 => out.host::<f64, 1>([&x], |[g], o| {
            cpu::scan_to(o, &f64::of(g)[off..], lanes, reverse)
        }),
        DType::I64 => out.host::<i64, 1>([&x], |[g], o| {
            cpu::scan_to(o, &i64::of(g)[off..], lanes, reverse)
        }),
        DType::Bool => unreachable!("bools sum in i64"),
    }
}

impl Op for Cumsum {
    const NAME: &'static str = "CumsumBackward";
    const OP: &'static str = "cumsum";
    type Saved = ();

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        norm_dim("cumsum", self.dim, x.ndim().max(1))?;
        Ok(Spec {
            shape: crate::autograd::Shape::from_slice(x.shape()),
            dtype: if x.dtype().is_float() {
                x.dtype()
            } else {
                DType::I64
            },
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let d = norm_dim("cumsum", self.dim, x[0].ndim().max(1)).expect("checked by spec");
        scan(x[0], d, false, out)
    }

    fn save(&self, _: &[&Tensor], _: &Tensor, _: &[bool]) {}

    fn backward(&self, _: &(), g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let d = norm_dim("cumsum", self.dim, g.ndim().max(1)).expect("checked by spec");
        grads[0].add_into(Spec::like(g), |out| scan(g, d, true, out))
    }
}

impl Tensor {
    /// Running sums along `dim` (`torch.cumsum`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// assert_eq!(tensor![[1., 2., 3.]].cumsum(1).to_vec::<f32>(), vec![1., 3., 6.]);
    /// assert_eq!(tensor![true, false, true].cumsum(0).to_vec::<i64>(), vec![1, 1, 2]);
    /// ```
    #[track_caller]
    pub fn cumsum(&self, dim: isize) -> Tensor {
        apply(Cumsum::new(dim), &[self])
    }
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    //! The scan kernel: one thread per lane, walking its `len` elements.

    use super::Out;
    use crate::backend::cuda::{self as be, ElementwiseModule};
    use crate::tensor::{DType, Tensor};

    pub(crate) fn module() -> ElementwiseModule {
        let mut m = ElementwiseModule::new("cumsum");
        for d in [DType::F32, DType::F64, DType::I64] {
            m.add_raw(&format!("scan_{}", be::dtype_name(d)), &scan_kernel(d));
        }
        m
    }

    /// Parameters: `in, out (u64), lanes, len, inner (u64), reverse (u32)`.
    fn scan_kernel(d: DType) -> String {
        let (t, es, zero) = match d {
            DType::F32 => ("f32", 4, "0f00000000"),
            DType::F64 => ("f64", 8, "0d0000000000000000"),
            _ => ("s64", 8, "0"),
        };
        let add = if d.is_float() {
            format!("add.rn.{t}")
        } else {
            format!("add.{t}")
        };
        let name = format!("scan_{}", be::dtype_name(d));
        format!(
            ".visible .entry {name}(\n    .param .u64 p_in,\n    .param .u64 p_out,\n    \
             .param .u64 p_lanes,\n    .param .u64 p_len,\n    .param .u64 p_inner,\n    \
             .param .u32 p_rev\n)\n{{\n    .reg .pred %p<4>;\n    .reg .b32 %r<8>;\n    \
             .reg .b64 %rd<24>;\n    .reg .{t} %a<4>;\n    \
             ld.param.u64 %rd1, [p_in];\n    cvta.to.global.u64 %rd1, %rd1;\n    \
             ld.param.u64 %rd2, [p_out];\n    cvta.to.global.u64 %rd2, %rd2;\n    \
             ld.param.u64 %rd3, [p_lanes];\n    ld.param.u64 %rd4, [p_len];\n    \
             ld.param.u64 %rd5, [p_inner];\n    ld.param.u32 %r1, [p_rev];\n    \
             mov.u32 %r2, %ctaid.x;\n    mov.u32 %r3, %ntid.x;\n    mov.u32 %r4, %tid.x;\n    \
             mul.wide.u32 %rd6, %r2, %r3;\n    cvt.u64.u32 %rd7, %r4;\n    add.u64 %rd6, %rd6, %rd7;\n    \
             setp.ge.u64 %p1, %rd6, %rd3;\n    @%p1 bra DONE;\n    \
             div.u64 %rd8, %rd6, %rd5;\n    rem.u64 %rd9, %rd6, %rd5;\n    \
             mul.lo.u64 %rd10, %rd8, %rd4;\n    mul.lo.u64 %rd10, %rd10, %rd5;\n    \
             add.u64 %rd10, %rd10, %rd9;\n    mov.{t} %a0, {zero};\n    mov.u64 %rd11, 0;\n\
             LOOP:\n    setp.ge.u64 %p2, %rd11, %rd4;\n    @%p2 bra DONE;\n    \
             setp.ne.u32 %p3, %r1, 0;\n    sub.u64 %rd12, %rd4, 1;\n    sub.u64 %rd12, %rd12, %rd11;\n    \
             selp.b64 %rd13, %rd12, %rd11, %p3;\n    mad.lo.u64 %rd14, %rd13, %rd5, %rd10;\n    \
             mad.lo.u64 %rd15, %rd14, {es}, %rd1;\n    ld.global.{t} %a1, [%rd15];\n    \
             {add} %a0, %a0, %a1;\n    mad.lo.u64 %rd16, %rd14, {es}, %rd2;\n    \
             st.global.{t} [%rd16], %a0;\n    add.u64 %rd11, %rd11, 1;\n    bra LOOP;\n\
             DONE:\n    ret;\n}}\n"
        )
    }

    pub(super) fn scan(
        x: &Tensor,
        (outer, len, inner): (usize, usize, usize),
        reverse: bool,
        out: &mut Out<'_>,
    ) {
        let (dst, acc) = out.device_target();
        let target = if acc {
            Tensor::from_array(be::ops::empty(
                be::ops::buf(dst.array()).ctx(),
                dst.dtype(),
                dst.shape(),
            ))
        } else {
            dst.clone()
        };
        let (src, tb) = (be::ops::buf(x.array()), be::ops::buf(target.array()));
        let lanes = (outer * inner) as u64;
        let name = format!("scan_{}", be::dtype_name(x.dtype()));
        be::ops::launch_module(
            tb,
            "cumsum",
            module,
            &name,
            lanes as usize,
            &mut [
                be::Arg::U64(src.ptr_at(x.layout().offset)),
                be::Arg::U64(tb.ptr_at(0)),
                be::Arg::U64(lanes),
                be::Arg::U64(len as u64),
                be::Arg::U64(inner as u64),
                be::Arg::U32(reverse as u32),
            ],
        );
        if acc {
            crate::autograd::no_grad(|| dst.add_(&target));
        }
    }
}
