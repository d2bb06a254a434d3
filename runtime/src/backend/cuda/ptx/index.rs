//! gather / index_select and scatter_add.

use std::fmt::Write;

use super::*;

/// gather / index_select: `gather_<bytes>`; scatter_add: `scatter_add_<dtype>`.
///
/// Parameters: `geo[200], out, idx, src (u64), dim_stride (u64), n (u64)`.
/// Coordinates walk the index's shape (slot 0: the written tensor, slot 1:
/// the i64 index, slot 2: the read tensor; the indexed dim has stride 0 in
/// the indexed operand and is added as `index * dim_stride`).
pub(crate) fn gather_name(d: DType) -> String {
    format!("gather_{}", dname(d))
}

/// See [`gather_name`].
pub(crate) fn scatter_add_name(d: DType) -> String {
    format!("scatter_add_{}", dname(d))
}

pub(super) fn index_kernel(s: &mut String, d: DType, scatter: bool) {
    let name = if scatter {
        scatter_add_name(d)
    } else {
        gather_name(d)
    };
    let t = rty(d);
    let es = esize(d);
    let _ = writeln!(
        s,
        ".visible .entry {name}(\n    .param .align 8 .b8 geo[{GEO_BYTES}],\n    .param .u64 p_out,\n    \
         .param .u64 p_idx,\n    .param .u64 p_src,\n    .param .u64 p_ds,\n    .param .u64 p_n\n)\n{{\n{REGS}    \
         .reg .{t} %y;\n    ld.param.u64 %rd1, [p_out];\n    cvta.to.global.u64 %rd1, %rd1;\n    \
         ld.param.u64 %rd2, [p_idx];\n    cvta.to.global.u64 %rd2, %rd2;\n    ld.param.u64 %rd3, [p_src];\n    \
         cvta.to.global.u64 %rd3, %rd3;\n    ld.param.u64 %rd4, [p_ds];\n    ld.param.u64 %rd5, [p_n];\n    \
         mov.u32 %r1, %ctaid.x;\n    mov.u32 %r2, %ntid.x;\n    mov.u32 %r3, %tid.x;\n    mov.u32 %r4, %nctaid.x;\n    \
         mul.wide.u32 %rd6, %r1, %r2;\n    cvt.u64.u32 %rd7, %r3;\n    add.u64 %rd8, %rd6, %rd7;\n    \
         mul.wide.u32 %rd9, %r4, %r2;\n    ld.param.u32 %r5, [geo+32];\nLOOP:\n    setp.ge.u64 %p1, %rd8, %rd5;\n    \
         @%p1 bra DONE;"
    );
    for k in 0..3 {
        let _ = writeln!(s, "    ld.param.u64 %rd{}, [geo+{}];", 10 + k, 8 * k);
    }
    let _ = writeln!(s, "    cvt.u32.u64 %r6, %rd8;");
    for lvl in 0..MAX_DIMS {
        let dim = MAX_DIMS - 1 - lvl;
        let _ = writeln!(
            s,
            "    ld.param.u32 %r7, [geo+{}];\n    rem.u32 %r8, %r6, %r7;\n    div.u32 %r6, %r6, %r7;",
            36 + 4 * dim
        );
        for k in 0..3 {
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
    // index value -> offset along dim in the indexed operand.
    let indexed = if scatter { 10 } else { 12 };
    let _ = writeln!(
        s,
        "COORDS:\n    mad.lo.u64 %rd20, %rd11, 8, %rd2;\n    ld.global.s64 %rd21, [%rd20];\n    \
         mad.lo.u64 %rd{indexed}, %rd21, %rd4, %rd{indexed};\n    mad.lo.u64 %rd22, %rd12, {es}, %rd3;\n    \
         {} %y, [%rd22];\n    mad.lo.u64 %rd23, %rd10, {es}, %rd1;",
        ld(d)
    );
    if scatter {
        let op = match d {
            DType::F32 => "atom.global.add.f32",
            DType::F64 => "atom.global.add.f64",
            _ => "atom.global.add.u64",
        };
        let _ = writeln!(s, "    {op} %y, [%rd23], %y;");
    } else {
        let _ = writeln!(s, "    {} [%rd23], %y;", st(d));
    }
    let _ = writeln!(
        s,
        "    add.u64 %rd8, %rd8, %rd9;\n    bra LOOP;\nDONE:\n    ret;\n}}\n"
    );
}
