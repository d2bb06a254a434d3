//! softmax / log_softmax over contiguous rows.

use std::fmt::Write;

use super::*;

/// softmax / log_softmax of contiguous f32 rows: `softmax_f32`,
/// `log_softmax_f32`. Parameters `in, out (u64), len (u32)`; one block of
/// 256 threads per row (grid x = rows): the row's max (NaN-propagating),
/// the sum of exp(x - max), then each output.
pub(crate) fn softmax_name(log: bool) -> &'static str {
    if log {
        "log_softmax_f32"
    } else {
        "softmax_f32"
    }
}

pub(super) fn softmax_kernel(s: &mut String, log: bool) {
    let name = softmax_name(log);
    let _ = writeln!(
        s,
        ".visible .entry {name}(\n    .param .u64 p_in,\n    .param .u64 p_out,\n    .param .u32 p_len\n)\n{{\n{REGS}    \
         .reg .f32 %t<40>;\n    .reg .f32 %v<8>;\n    .shared .align 4 .b8 sv[1024];\n    \
         ld.param.u64 %rd1, [p_in];\n    cvta.to.global.u64 %rd1, %rd1;\n    ld.param.u64 %rd2, [p_out];\n    \
         cvta.to.global.u64 %rd2, %rd2;\n    ld.param.u32 %r1, [p_len];\n    mov.u32 %r2, %ctaid.x;\n    \
         mov.u32 %r3, %tid.x;\n    mul.wide.u32 %rd3, %r2, %r1;\n    shl.b64 %rd3, %rd3, 2;\n    \
         add.u64 %rd4, %rd1, %rd3;\n    add.u64 %rd5, %rd2, %rd3;\n    mov.u32 %r4, sv;\n    \
         shl.b32 %r5, %r3, 2;\n    add.u32 %r5, %r5, %r4;\n    mov.f32 %v0, 0fFF800000;\n    mov.u32 %r6, %r3;\n\
MAXL:\n    setp.ge.u32 %p1, %r6, %r1;\n    @%p1 bra MAXE;\n    mul.wide.u32 %rd6, %r6, 4;\n    \
         add.u64 %rd6, %rd6, %rd4;\n    ld.global.f32 %v1, [%rd6];\n    max.NaN.f32 %v0, %v0, %v1;\n    \
         add.u32 %r6, %r6, 256;\n    bra MAXL;\nMAXE:"
    );
    let tree = |s: &mut String, tag: &str, op: &str| {
        let _ = writeln!(s, "    st.shared.f32 [%r5], %v0;\n    bar.sync 0;");
        let mut step = 128;
        while step >= 1 {
            let _ = writeln!(
                s,
                "    setp.lt.u32 %p2, %r3, {step};\n    @!%p2 bra {tag}{step};\n    ld.shared.f32 %v0, [%r5];\n    \
                 ld.shared.f32 %v1, [%r5+{}];\n    {op} %v0, %v0, %v1;\n    st.shared.f32 [%r5], %v0;\n{tag}{step}:\n    \
                 bar.sync 0;",
                step * 4
            );
            step /= 2;
        }
        let _ = writeln!(s, "    ld.shared.f32 %v0, [%r4];\n    bar.sync 0;");
    };
    tree(s, "MX", "max.NaN.f32");
    let _ = writeln!(
        s,
        "    mov.f32 %v2, %v0;\n    mov.f32 %v0, 0f00000000;\n    mov.u32 %r6, %r3;\nSUML:\n    \
         setp.ge.u32 %p1, %r6, %r1;\n    @%p1 bra SUME;\n    mul.wide.u32 %rd6, %r6, 4;\n    \
         add.u64 %rd6, %rd6, %rd4;\n    ld.global.f32 %v1, [%rd6];\n    sub.rn.f32 %t1, %v1, %v2;\n{}\n    \
         add.rn.f32 %v0, %v0, %t2;\n    add.u32 %r6, %r6, 256;\n    bra SUML;\nSUME:",
        exp_f32("%t1", "%t2")
    );
    tree(s, "SM", "add.rn.f32");
    let _ = writeln!(
        s,
        "    mov.f32 %v3, %v0;\n    lg2.approx.f32 %t5, %v3;\n    mul.rn.f32 %v4, %t5, 0f3F317218;\n    \
         mov.u32 %r6, %r3;\nOUTL:\n    setp.ge.u32 %p1, %r6, %r1;\n    @%p1 bra OUTE;\n    \
         mul.wide.u32 %rd6, %r6, 4;\n    add.u64 %rd7, %rd6, %rd4;\n    add.u64 %rd8, %rd6, %rd5;\n    \
         ld.global.f32 %v1, [%rd7];\n    sub.rn.f32 %t1, %v1, %v2;"
    );
    if log {
        let _ = writeln!(s, "    sub.rn.f32 %t3, %t1, %v4;");
    } else {
        let _ = writeln!(
            s,
            "{}\n    div.rn.f32 %t3, %t2, %v3;",
            exp_f32("%t1", "%t2")
        );
    }
    let _ = writeln!(
        s,
        "    st.global.f32 [%rd8], %t3;\n    add.u32 %r6, %r6, 256;\n    bra OUTL;\nOUTE:\n    ret;\n}}\n"
    );
}
