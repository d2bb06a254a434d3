//! The PTX generator: every kernel of the backend is written here, as Rust
//! that prints PTX, and loaded once per context with `Module::from_ptx`.
//!
//! Kernel names and argument lists come from the same tables the launch
//! wrappers use ([`Ew`], [`gemm_name`], ...), so the two cannot drift. The
//! whole module is assembled offline by `scripts/check-ptx.sh` with ptxas for
//! sm_80 and sm_90 (the driver's JIT gives no error log).

use std::fmt::Write;

use crate::backend::Ew;
use crate::tensor::DType;

mod gemm;
mod index;
mod softmax;

use gemm::gemm_kernel;
pub(crate) use gemm::gemm_name;
use index::index_kernel;
pub(crate) use index::{gather_name, scatter_add_name};
use softmax::softmax_kernel;
pub(crate) use softmax::softmax_name;

/// PTX ISA 8.0 for sm_80: JIT-compiled by CUDA 12.0+ drivers (H100/H200 too).
pub(crate) const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n\n";

/// Bytes of the `geo` parameter of elementwise kernels: element offsets of
/// 4 operands (u64), ndim (u32), 8 sizes (u32), 4 x 8 strides (u32).
pub(crate) const GEO_BYTES: usize = 200;
/// Dimensions an elementwise kernel walks (after merging).
pub(crate) const MAX_DIMS: usize = 8;

/// Every op, for the generator.
pub(super) const ALL_EW: &[Ew] = &[
    Ew::Fill,
    Ew::Copy,
    Ew::Neg,
    Ew::Abs,
    Ew::Sqrt,
    Ew::Relu,
    Ew::AddS,
    Ew::SubS,
    Ew::MulS,
    Ew::DivS,
    Ew::Clamp,
    Ew::Square,
    Ew::PowI,
    Ew::PowF,
    Ew::Exp,
    Ew::Log,
    Ew::Tanh,
    Ew::Sigmoid,
    Ew::Add,
    Ew::AddScaled,
    Ew::Sub,
    Ew::Mul,
    Ew::Div,
    Ew::Max,
    Ew::Min,
    Ew::ReluBwd,
    Ew::SigmoidBwd,
    Ew::TanhBwd,
    Ew::SqrtBwd,
    Ew::DivBwdB,
    Ew::PowSqBwd,
    Ew::PowSBwd,
    Ew::Eq,
    Ew::Ne,
    Ew::Lt,
    Ew::Le,
    Ew::Gt,
    Ew::Ge,
    Ew::Where,
];

pub(super) const DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::I64, DType::Bool];

/// Short dtype names used in kernel names.
pub(crate) fn dname(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I64 => "i64",
        DType::Bool => "u8",
    }
}

/// Bytes per element on the device (bool is one byte).
pub(crate) fn esize(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::Bool => 1,
    }
}

/// PTX register type holding an element.
pub(super) fn rty(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I64 => "s64",
        DType::Bool => "u32",
    }
}

impl Ew {
    /// The number of tensor inputs.
    pub(crate) fn arity(self) -> usize {
        use Ew::*;
        match self {
            Fill => 0,
            Copy | Neg | Abs | Sqrt | Relu | AddS | SubS | MulS | DivS | Clamp | Square | PowI
            | PowF | Exp | Log | Tanh | Sigmoid => 1,
            Where => 3,
            _ => 2,
        }
    }

    /// The kernel-name part of this op.
    pub(crate) fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    fn is_compare(self) -> bool {
        matches!(self, Ew::Eq | Ew::Ne | Ew::Lt | Ew::Le | Ew::Gt | Ew::Ge)
    }

    /// Input dtypes and output dtype of the kernel for `d` (the operands' dtype).
    pub(crate) fn types(self, d: DType) -> (Vec<DType>, DType) {
        let n = self.arity();
        if self.is_compare() {
            return (vec![d, d], DType::Bool);
        }
        if self == Ew::Where {
            return (vec![DType::Bool, d, d], d);
        }
        (vec![d; n], d)
    }

    /// Whether a kernel exists for operands of dtype `d`. Transcendental
    /// math is f32-only on the GPU for now (no f64 exp/log/pow kernels).
    pub(crate) fn supports(self, d: DType) -> bool {
        use Ew::*;
        match self {
            Fill | Copy | Where | Eq | Ne | Lt | Le | Gt | Ge => true,
            Neg | Abs | Add | Sub | Mul | Max | Min | Clamp => d != DType::Bool,
            Exp | Log | Tanh | Sigmoid | PowF | PowSBwd => d == DType::F32,
            _ => d.is_float(),
        }
    }

    /// The PTX computing `%y` from `%x0..%x2` for operands of dtype `d`.
    fn body(self, d: DType) -> String {
        use Ew::*;
        let t = rty(d);
        let f = d.is_float();
        let k = |v: f64| konst(d, v);
        // The f64 parameters in the op's type.
        let (pa, pb) = match d {
            DType::F32 => ("%pfa", "%pfb"),
            DType::F64 => ("%pa", "%pb"),
            _ => ("%pia", "%pib"),
        };
        let rn = if f { ".rn" } else { "" };
        let mul = if f { "mul.rn" } else { "mul.lo" };
        match self {
            Fill => match d {
                DType::Bool => "setp.neu.f64 %q0, %pa, 0d0000000000000000;\nselp.u32 %y, 1, 0, %q0;".into(),
                _ => format!("mov.{t} %y, {pa};"),
            },
            Copy => format!("mov.{t} %y, %x0;"),
            Neg => format!("neg.{t} %y, %x0;"),
            Abs => format!("abs.{t} %y, %x0;"),
            Sqrt => format!("sqrt.rn.{t} %y, %x0;"),
            // x < 0 ? 0 : x, so NaN (unordered: false) stays NaN, as in PyTorch.
            Relu => format!("setp.lt.{t} %q0, %x0, {z};\nselp.{t} %y, {z}, %x0, %q0;", z = k(0.0)),
            AddS => format!("add{rn}.{t} %y, %x0, {pa};"),
            SubS => format!("sub{rn}.{t} %y, %x0, {pa};"),
            MulS => format!("{mul}.{t} %y, %x0, {pa};"),
            DivS => format!("div.rn.{t} %y, %x0, {pa};"),
            Clamp => format!(
                "setp.lt.{t} %q0, %x0, {pa};\nselp.{t} %t0, {pa}, %x0, %q0;\n\
                 setp.gt.{t} %q1, %t0, {pb};\nselp.{t} %y, {pb}, %t0, %q1;"
            ),
            Square => format!("mul.rn.{t} %y, %x0, %x0;"),
            PowI => powi(d),
            PowF => pow_f32("%x0", "%pfa", "%y"),
            Exp => exp_f32("%x0", "%y"),
            Log => "lg2.approx.f32 %t0, %x0;\nmul.rn.f32 %y, %t0, 0f3F317218;".into(),
            Tanh => format!(
                "abs.f32 %t1, %x0;\nadd.f32 %t1, %t1, %t1;\n{}\nadd.rn.f32 %t3, %t2, 0f3F800000;\n\
                 div.rn.f32 %t4, 0f40000000, %t3;\nsub.rn.f32 %t5, 0f3F800000, %t4;\n\
                 copysign.f32 %y, %x0, %t5;\nsetp.nan.f32 %q3, %x0, %x0;\nselp.f32 %y, %x0, %y, %q3;",
                exp_f32("%t1", "%t2")
            ),
            Sigmoid => format!(
                "abs.f32 %t1, %x0;\nneg.f32 %t1, %t1;\n{}\nadd.rn.f32 %t3, %t2, 0f3F800000;\n\
                 rcp.rn.f32 %t4, %t3;\nmul.rn.f32 %t5, %t2, %t4;\nsetp.ge.f32 %q3, %x0, 0f00000000;\n\
                 selp.f32 %y, %t4, %t5, %q3;\nsetp.nan.f32 %q3, %x0, %x0;\nselp.f32 %y, %x0, %y, %q3;",
                exp_f32("%t1", "%t2")
            ),
            Add => format!("add{rn}.{t} %y, %x0, %x1;"),
            AddScaled => format!("mul.rn.{t} %t0, {pa}, %x1;\nadd.rn.{t} %y, %x0, %t0;"),
            Sub => format!("sub{rn}.{t} %y, %x0, %x1;"),
            Mul => format!("{mul}.{t} %y, %x0, %x1;"),
            Div => format!("div.rn.{t} %y, %x0, %x1;"),
            Max | Min => {
                let c = if self == Max { "ge" } else { "le" };
                if f {
                    format!(
                        "setp.{c}.{t} %q0, %x0, %x1;\nselp.{t} %y, %x0, %x1, %q0;\n\
                         setp.nan.{t} %q1, %x0, %x1;\nadd.{t} %t0, %x0, %x1;\nselp.{t} %y, %t0, %y, %q1;"
                    )
                } else {
                    format!("{}.{t} %y, %x0, %x1;", if self == Max { "max" } else { "min" })
                }
            }
            // y <= 0 ? 0 : dy (PyTorch's threshold_backward: a NaN y passes dy).
            ReluBwd => format!("setp.le.{t} %q0, %x1, {z};\nselp.{t} %y, {z}, %x0, %q0;", z = k(0.0)),
            SigmoidBwd => format!(
                "mul.rn.{t} %t0, %x0, %x1;\nsub.rn.{t} %t1, {one}, %x1;\nmul.rn.{t} %y, %t0, %t1;",
                one = k(1.0)
            ),
            TanhBwd => format!(
                "mul.rn.{t} %t0, %x1, %x1;\nsub.rn.{t} %t1, {one}, %t0;\nmul.rn.{t} %y, %x0, %t1;",
                one = k(1.0)
            ),
            SqrtBwd => format!("mul.rn.{t} %t0, {two}, %x1;\ndiv.rn.{t} %y, %x0, %t0;", two = k(2.0)),
            DivBwdB => format!("mul.rn.{t} %t0, %x1, %x1;\nneg.{t} %t1, %x0;\ndiv.rn.{t} %y, %t1, %t0;"),
            PowSqBwd => format!("mul.rn.{t} %t0, {two}, %x1;\nmul.rn.{t} %y, %x0, %t0;", two = k(2.0)),
            PowSBwd => format!(
                "sub.rn.f32 %t8, %pfa, 0f3F800000;\n{}\nmul.rn.f32 %t10, %pfa, %t9;\nmul.rn.f32 %y, %x0, %t10;",
                pow_f32("%x1", "%t8", "%t9")
            ),
            Eq | Ne | Lt | Le | Gt | Ge => {
                let c = match (self, f) {
                    (Eq, _) => "eq",
                    (Ne, true) => "neu",
                    (Ne, false) => "ne",
                    (Lt, _) => "lt",
                    (Le, _) => "le",
                    (Gt, _) => "gt",
                    _ => "ge",
                };
                let ct = if d == DType::Bool { "u32" } else { t };
                format!("setp.{c}.{ct} %q0, %x0, %x1;\nselp.u32 %y, 1, 0, %q0;")
            }
            Where => format!("setp.ne.u32 %q0, %x0, 0;\nselp.{t} %y, %x1, %x2, %q0;"),
        }
    }
}

/// A PTX constant of dtype `d`.
pub(super) fn konst(d: DType, v: f64) -> String {
    match d {
        DType::F32 => format!("0f{:08X}", (v as f32).to_bits()),
        DType::F64 => format!("0d{:016X}", v.to_bits()),
        _ => format!("{}", v as i64),
    }
}

/// e^x in f32 (src, dst registers): range reduction with a two-part log2(e),
/// then ex2 of the fraction and of the integer part. Uses %t20-%t26, %q20.
pub(super) fn exp_f32(x: &str, y: &str) -> String {
    format!(
        "max.f32 %t20, {x}, 0fC2D00000;\nmin.f32 %t20, %t20, 0f42B20000;\n\
         mul.f32 %t21, %t20, 0f3FB8AA3B;\ncvt.rni.f32.f32 %t22, %t21;\nneg.f32 %t23, %t22;\n\
         fma.rn.f32 %t24, %t20, 0f3FB8AA3B, %t23;\nfma.rn.f32 %t24, %t20, 0f32A57060, %t24;\n\
         ex2.approx.ftz.f32 %t25, %t24;\nex2.approx.ftz.f32 %t26, %t22;\nmul.rn.f32 {y}, %t25, %t26;\n\
         setp.nan.f32 %q20, {x}, {x};\nselp.f32 {y}, {x}, {y}, %q20;"
    )
}

/// x^p in f32 with powf's rules: p = 0 gives 1, a negative base needs an
/// integer exponent (odd ones keep the sign), else NaN. Uses %t30-%t37, %q30-%q34.
pub(super) fn pow_f32(x: &str, p: &str, y: &str) -> String {
    format!(
        "abs.f32 %t30, {x};\nlg2.approx.f32 %t31, %t30;\nmul.rn.f32 %t32, %t31, {p};\n\
         ex2.approx.f32 %t33, %t32;\n\
         cvt.rzi.f32.f32 %t34, {p};\nsetp.eq.f32 %q30, %t34, {p};\n\
         mul.rn.f32 %t35, %t34, 0f3F000000;\ncvt.rzi.f32.f32 %t36, %t35;\nsetp.neu.f32 %q31, %t35, %t36;\n\
         and.pred %q31, %q31, %q30;\nneg.f32 %t37, %t33;\nselp.f32 %t37, %t37, %t33, %q31;\n\
         selp.f32 %t37, %t37, 0f7FC00000, %q30;\nsetp.lt.f32 %q32, {x}, 0f00000000;\n\
         selp.f32 {y}, %t37, %t33, %q32;\nsetp.eq.f32 %q33, {p}, 0f00000000;\n\
         selp.f32 {y}, 0f3F800000, {y}, %q33;\nsetp.eq.f32 %q34, {x}, 0f3F800000;\n\
         selp.f32 {y}, 0f3F800000, {y}, %q34;"
    )
}

/// x^n for an integer n (the kernel's `a`) by repeated squaring, as powi.
pub(super) fn powi(d: DType) -> String {
    let t = rty(d);
    let one = konst(d, 1.0);
    format!(
        "cvt.rzi.s32.f64 %u0, %pa;\nabs.s32 %u1, %u0;\nmov.{t} %t0, {one};\nmov.{t} %t1, %x0;\n\
         POWI_LOOP:\nsetp.eq.s32 %q0, %u1, 0;\n@%q0 bra POWI_END;\nand.b32 %u2, %u1, 1;\n\
         setp.ne.s32 %q1, %u2, 0;\n@%q1 mul.rn.{t} %t0, %t0, %t1;\nmul.rn.{t} %t1, %t1, %t1;\n\
         shr.u32 %u1, %u1, 1;\nbra POWI_LOOP;\nPOWI_END:\nsetp.lt.s32 %q2, %u0, 0;\n\
         rcp.rn.{t} %t2, %t0;\nselp.{t} %y, %t2, %t0, %q2;"
    )
}

/// The kernel name of an elementwise op on operands of dtype `d`; `strided`
/// picks the variant that walks strides (else all operands are contiguous).
pub(crate) fn ew_name(op: Ew, d: DType, strided: bool) -> String {
    format!(
        "ew_{}_{}_{}",
        op.name(),
        dname(d),
        if strided { "s" } else { "c" }
    )
}

/// The casts `cast_<from>_<to>_<c|s>`: one input, one output.
pub(crate) fn cast_name(from: DType, to: DType, strided: bool) -> String {
    format!(
        "cast_{}_{}_{}",
        dname(from),
        dname(to),
        if strided { "s" } else { "c" }
    )
}

pub(super) fn cast_body(from: DType, to: DType) -> String {
    use DType::*;
    match (from, to) {
        (a, b) if a == b => format!("mov.{} %y, %x0;", rty(a)),
        (F32, F64) => "cvt.f64.f32 %y, %x0;".into(),
        (F64, F32) => "cvt.rn.f32.f64 %y, %x0;".into(),
        (F32, I64) | (F64, I64) => format!("cvt.rzi.s64.{} %y, %x0;", rty(from)),
        (I64, F64) => "cvt.rn.f64.s64 %y, %x0;".into(),
        // Through f64, as the host does (`x as f64 as f32`).
        (I64, F32) => "cvt.rn.f64.s64 %w0, %x0;\ncvt.rn.f32.f64 %y, %w0;".into(),
        (F32, Bool) | (F64, Bool) => {
            format!(
                "setp.neu.{t} %q0, %x0, {z};\nselp.u32 %y, 1, 0, %q0;",
                t = rty(from),
                z = konst(from, 0.0)
            )
        }
        (I64, Bool) => "setp.ne.s64 %q0, %x0, 0;\nselp.u32 %y, 1, 0, %q0;".into(),
        (Bool, F32) => "cvt.rn.f32.u32 %y, %x0;".into(),
        (Bool, F64) => "cvt.rn.f64.u32 %y, %x0;".into(),
        (Bool, I64) => "cvt.s64.u32 %y, %x0;".into(),
        _ => unreachable!(),
    }
}

pub(super) fn ld(d: DType) -> &'static str {
    match d {
        DType::F32 => "ld.global.f32",
        DType::F64 => "ld.global.f64",
        DType::I64 => "ld.global.s64",
        DType::Bool => "ld.global.u8",
    }
}

pub(super) fn st(d: DType) -> &'static str {
    match d {
        DType::F32 => "st.global.f32",
        DType::F64 => "st.global.f64",
        DType::I64 => "st.global.s64",
        DType::Bool => "st.global.u8",
    }
}

/// The register declarations every generated kernel may use.
pub(super) const REGS: &str = "    .reg .pred %p<16>;\n    .reg .pred %q<40>;\n    .reg .b32 %r<64>;\n    .reg .b64 %rd<64>;\n    .reg .u32 %u<16>;\n    .reg .f64 %w<8>;\n";

/// One elementwise kernel: `ins` input dtypes, `out` dtype, `body` PTX.
///
/// Parameters (the same for every elementwise kernel, see `launch_ew`):
/// `geo[200], out, in0, in1, in2 (u64), a, b (f64), n (u64)`.
pub(crate) fn ew_kernel(
    s: &mut String,
    name: &str,
    ins: &[DType],
    out: DType,
    body: &str,
    strided: bool,
) {
    let cty = if out == DType::Bool && !ins.is_empty() {
        ins[ins.len() - 1]
    } else {
        out
    };
    let tt = rty(cty);
    let _ = writeln!(
        s,
        ".visible .entry {name}(\n    .param .align 8 .b8 geo[{GEO_BYTES}],\n    .param .u64 p_out,\n    \
         .param .u64 p_in0,\n    .param .u64 p_in1,\n    .param .u64 p_in2,\n    .param .f64 p_a,\n    \
         .param .f64 p_b,\n    .param .u64 p_n\n)\n{{\n{REGS}    .reg .{tt} %t<40>;\n    \
         .reg .f32 %pfa, %pfb;\n    .reg .f64 %pa, %pb;\n    .reg .s64 %pia, %pib;\n    .reg .{} %y;",
        rty(out)
    );
    for (i, d) in ins.iter().enumerate() {
        let _ = writeln!(s, "    .reg .{} %x{i};", rty(*d));
    }
    let _ = writeln!(
        s,
        "    ld.param.f64 %pa, [p_a];\n    ld.param.f64 %pb, [p_b];\n    cvt.rn.f32.f64 %pfa, %pa;\n    \
         cvt.rn.f32.f64 %pfb, %pb;\n    cvt.rzi.s64.f64 %pia, %pa;\n    cvt.rzi.s64.f64 %pib, %pb;\n    \
         ld.param.u64 %rd1, [p_out];\n    cvta.to.global.u64 %rd1, %rd1;\n    ld.param.u64 %rd2, [p_in0];\n    \
         cvta.to.global.u64 %rd2, %rd2;\n    ld.param.u64 %rd3, [p_in1];\n    cvta.to.global.u64 %rd3, %rd3;\n    \
         ld.param.u64 %rd4, [p_in2];\n    cvta.to.global.u64 %rd4, %rd4;\n    ld.param.u64 %rd5, [p_n];\n    \
         mov.u32 %r1, %ctaid.x;\n    mov.u32 %r2, %ntid.x;\n    mov.u32 %r3, %tid.x;\n    mov.u32 %r4, %nctaid.x;\n    \
         mul.wide.u32 %rd6, %r1, %r2;\n    cvt.u64.u32 %rd7, %r3;\n    add.u64 %rd8, %rd6, %rd7;\n    \
         mul.wide.u32 %rd9, %r4, %r2;\n    ld.param.u32 %r5, [geo+32];\nLOOP:\n    setp.ge.u64 %p1, %rd8, %rd5;\n    \
         @%p1 bra DONE;"
    );
    // Element offsets of out, in0, in1, in2 in %rd10..%rd13.
    for k in 0..4 {
        let _ = writeln!(s, "    ld.param.u64 %rd{}, [geo+{}];", 10 + k, 8 * k);
    }
    if strided {
        let _ = writeln!(s, "    cvt.u32.u64 %r6, %rd8;");
        for lvl in 0..MAX_DIMS {
            let dim = MAX_DIMS - 1 - lvl;
            let _ = writeln!(
                s,
                "    ld.param.u32 %r7, [geo+{}];\n    rem.u32 %r8, %r6, %r7;\n    div.u32 %r6, %r6, %r7;",
                36 + 4 * dim
            );
            for k in 0..4 {
                let _ = writeln!(
                    s,
                    "    ld.param.u32 %r9, [geo+{}];\n    mad.wide.u32 %rd{r}, %r8, %r9, %rd{r};",
                    68 + 32 * k + 4 * dim,
                    r = 10 + k
                );
            }
            if lvl + 1 < MAX_DIMS {
                let _ = writeln!(
                    s,
                    "    setp.le.u32 %p2, %r5, {};\n    @%p2 bra COORDS;",
                    lvl + 1
                );
            }
        }
        let _ = writeln!(s, "COORDS:");
    } else {
        for k in 0..4 {
            let _ = writeln!(s, "    add.u64 %rd{r}, %rd{r}, %rd8;", r = 10 + k);
        }
    }
    for (i, d) in ins.iter().enumerate() {
        let _ = writeln!(
            s,
            "    mad.lo.u64 %rd20, %rd{}, {}, %rd{};\n    {} %x{i}, [%rd20];",
            11 + i,
            esize(*d),
            2 + i,
            ld(*d)
        );
    }
    for line in body.lines() {
        let _ = writeln!(s, "    {line}");
    }
    let _ = writeln!(
        s,
        "    mad.lo.u64 %rd21, %rd10, {}, %rd1;\n    {} [%rd21], %y;\n    add.u64 %rd8, %rd8, %rd9;\n    \
         bra LOOP;\nDONE:\n    ret;\n}}\n",
        esize(out),
        st(out)
    );
}

/// Sum / max / min of contiguous rows: `reduce_<op>_<dtype>`.
///
/// Parameters: `in, out, idx (u64), len (u32), chunk (u32), nchunks (u32)`;
/// grid (rows, nchunks), 256 threads; block (r, c) reduces elements
/// `[c*chunk, min((c+1)*chunk, len))` of row r into `out[r*nchunks + c]`
/// (and for max/min the index within the row into `idx`, as i64).
pub(crate) fn reduce_name(op: &str, d: DType) -> String {
    format!("reduce_{op}_{}", dname(d))
}

pub(super) fn reduce_kernel(s: &mut String, op: &str, d: DType) {
    let t = rty(d);
    let es = esize(d);
    // Shared slots: bools are widened to u32.
    let ses = es.max(4);
    let name = reduce_name(op, d);
    let arg = op != "sum";
    let init = konst(d, 0.0);
    let _ = writeln!(
        s,
        ".visible .entry {name}(\n    .param .u64 p_in,\n    .param .u64 p_out,\n    .param .u64 p_idx,\n    \
         .param .u32 p_len,\n    .param .u32 p_chunk,\n    .param .u32 p_nchunks\n)\n{{\n{REGS}    \
         .reg .{t} %v<8>;\n    .shared .align 8 .b8 sv[{}];\n    .shared .align 4 .b8 si[1024];",
        256 * ses
    );
    let _ = writeln!(
        s,
        "    ld.param.u64 %rd1, [p_in];\n    cvta.to.global.u64 %rd1, %rd1;\n    ld.param.u64 %rd2, [p_out];\n    \
         cvta.to.global.u64 %rd2, %rd2;\n    ld.param.u64 %rd3, [p_idx];\n    cvta.to.global.u64 %rd3, %rd3;\n    \
         ld.param.u32 %r1, [p_len];\n    ld.param.u32 %r2, [p_chunk];\n    ld.param.u32 %r3, [p_nchunks];\n    \
         mov.u32 %r4, %ctaid.y;\n    mov.u32 %r5, %ctaid.x;\n    mov.u32 %r6, %tid.x;\n    \
         mul.lo.u32 %r7, %r4, %r2;\n    add.u32 %r8, %r7, %r2;\n    min.u32 %r8, %r8, %r1;\n    \
         mul.wide.u32 %rd4, %r5, %r1;\n    mad.lo.u64 %rd4, %rd4, {es}, %rd1;\n    \
         mov.{t} %v0, {init};\n    mov.u32 %r10, 0xFFFFFFFF;\n    add.u32 %r9, %r7, %r6;\nACC:\n    \
         setp.ge.u32 %p1, %r9, %r8;\n    @%p1 bra ACC_END;\n    mul.wide.u32 %rd5, %r9, {es};\n    \
         add.u64 %rd5, %rd5, %rd4;\n    {} %v1, [%rd5];",
        ld(d)
    );
    if arg {
        combine(s, op, d, "%v0", "%r10", "%v1", "%r9");
    } else {
        let _ = writeln!(
            s,
            "    add{}.{t} %v0, %v0, %v1;",
            if d.is_float() { ".rn" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "    add.u32 %r9, %r9, 256;\n    bra ACC;\nACC_END:\n    mov.u32 %r11, sv;\n    mov.u32 %r12, si;\n    \
         mad.lo.u32 %r13, %r6, {ses}, %r11;\n    mad.lo.u32 %r14, %r6, 4, %r12;\n    st.shared.{t} [%r13], %v0;\n    \
         st.shared.u32 [%r14], %r10;\n    bar.sync 0;"
    );
    let mut step = 128;
    while step >= 1 {
        let _ = writeln!(
            s,
            "    setp.lt.u32 %p2, %r6, {step};\n    @!%p2 bra SKIP{step};\n    ld.shared.{t} %v0, [%r13];\n    \
             ld.shared.u32 %r10, [%r14];\n    ld.shared.{t} %v1, [%r13+{}];\n    ld.shared.u32 %r15, [%r14+{}];",
            step * ses,
            step * 4
        );
        if arg {
            combine(s, op, d, "%v0", "%r10", "%v1", "%r15");
        } else {
            let _ = writeln!(
                s,
                "    add{}.{t} %v0, %v0, %v1;",
                if d.is_float() { ".rn" } else { "" }
            );
        }
        let _ = writeln!(
            s,
            "    st.shared.{t} [%r13], %v0;\n    st.shared.u32 [%r14], %r10;\nSKIP{step}:\n    bar.sync 0;"
        );
        step /= 2;
    }
    let _ = writeln!(
        s,
        "    setp.ne.u32 %p3, %r6, 0;\n    @%p3 bra END;\n    ld.shared.{t} %v0, [%r11];\n    \
         mad.lo.u32 %r16, %r5, %r3, %r4;\n    mul.wide.u32 %rd6, %r16, {es};\n    add.u64 %rd6, %rd6, %rd2;\n    \
         {} [%rd6], %v0;",
        st(d)
    );
    if arg {
        let _ = writeln!(
            s,
            "    ld.shared.u32 %r10, [%r12];\n    cvt.u64.u32 %rd7, %r10;\n    mul.wide.u32 %rd8, %r16, 8;\n    \
             add.u64 %rd8, %rd8, %rd3;\n    st.global.u64 [%rd8], %rd7;"
        );
    }
    let _ = writeln!(s, "END:\n    ret;\n}}\n");
}

/// (best, bi) := combine((best, bi), (x, xi)) for max/min with argmax's rules:
/// an empty side (index u32::MAX) loses, NaN wins, ties go to the lower index.
pub(super) fn combine(s: &mut String, op: &str, d: DType, best: &str, bi: &str, x: &str, xi: &str) {
    let t = rty(d);
    let better = if op == "max" { "gt" } else { "lt" };
    // take := x empty? no : best empty? yes : ...
    let _ = writeln!(s, "    setp.lt.u32 %q1, {xi}, {bi};");
    let _ = writeln!(
        s,
        "    setp.{better}.{t} %q2, {x}, {best};\n    setp.eq.{t} %q3, {x}, {best};\n    and.pred %q3, %q3, %q1;\n    or.pred %q2, %q2, %q3;"
    );
    if d.is_float() {
        let _ = writeln!(
            s,
            "    setp.nan.{t} %q4, {x}, {x};\n    setp.nan.{t} %q5, {best}, {best};\n    \
             not.pred %q6, %q5;\n    and.pred %q7, %q4, %q6;\n    or.pred %q2, %q2, %q7;\n    \
             and.pred %q8, %q4, %q5;\n    and.pred %q8, %q8, %q1;\n    or.pred %q2, %q2, %q8;"
        );
    }
    let _ = writeln!(
        s,
        "    setp.eq.u32 %q10, {bi}, 0xFFFFFFFF;\n    or.pred %q2, %q2, %q10;\n    setp.eq.u32 %q11, {xi}, 0xFFFFFFFF;\n    \
         not.pred %q11, %q11;\n    and.pred %q2, %q2, %q11;\n    selp.{t} {best}, {x}, {best}, %q2;\n    \
         selp.u32 {bi}, {xi}, {bi}, %q2;"
    );
}

/// The whole PTX module.
pub fn source() -> String {
    let mut s = String::from(HEADER);
    for &op in ALL_EW {
        for d in DTYPES {
            if !op.supports(d) {
                continue;
            }
            let (ins, out) = op.types(d);
            let body = op.body(d);
            for strided in [false, true] {
                ew_kernel(&mut s, &ew_name(op, d, strided), &ins, out, &body, strided);
            }
        }
    }
    for from in DTYPES {
        for to in DTYPES {
            if from != to {
                let body = cast_body(from, to);
                for strided in [false, true] {
                    ew_kernel(
                        &mut s,
                        &cast_name(from, to, strided),
                        &[from],
                        to,
                        &body,
                        strided,
                    );
                }
            }
        }
    }
    for d in [DType::F32, DType::F64, DType::I64] {
        reduce_kernel(&mut s, "sum", d);
    }
    for d in DTYPES {
        reduce_kernel(&mut s, "max", d);
        reduce_kernel(&mut s, "min", d);
    }
    for d in [DType::F32, DType::F64] {
        for ta in [false, true] {
            for tb in [false, true] {
                gemm_kernel(&mut s, d, ta, tb, false);
                if d == DType::F32 {
                    gemm_kernel(&mut s, d, ta, tb, true);
                }
            }
        }
    }
    for d in DTYPES {
        index_kernel(&mut s, d, false);
    }
    for d in [DType::F32, DType::F64, DType::I64] {
        index_kernel(&mut s, d, true);
    }
    softmax_kernel(&mut s, false);
    softmax_kernel(&mut s, true);
    super::optim::kernels(&mut s);
    s
}
