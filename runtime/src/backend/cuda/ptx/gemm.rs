//! The tiled GEMM kernels.

use std::fmt::Write;

use super::*;

/// The GEMM kernel for dtype `d` with A and B in row-major (`n`) or
/// transposed (`t`) storage; `vec` loads 4 elements at a time (f32).
///
/// Parameters: `a, b, c (u64), m, n, k, lda, ldb (u32), sa, sb, sc (u64,
/// batch strides in elements)`; grid (ceil(n/128), ceil(m/128), batches),
/// 256 threads. C = A·B, C row-major with ldc = n.
pub(crate) fn gemm_name(d: DType, ta: bool, tb: bool, vec: bool) -> String {
    format!(
        "gemm_{}_{}{}_{}",
        dname(d),
        if ta { "t" } else { "n" },
        if tb { "t" } else { "n" },
        if vec { "v" } else { "s" }
    )
}

pub(super) fn gemm_kernel(s: &mut String, d: DType, ta: bool, tb: bool, vec: bool) {
    let t = rty(d);
    let es = esize(d) as u32;
    let name = gemm_name(d, ta, tb, vec);
    let z = konst(d, 0.0);
    let _ = writeln!(
        s,
        ".visible .entry {name}(\n    .param .u64 p_a,\n    .param .u64 p_b,\n    .param .u64 p_c,\n    \
         .param .u32 p_m,\n    .param .u32 p_n,\n    .param .u32 p_k,\n    .param .u32 p_lda,\n    \
         .param .u32 p_ldb,\n    .param .u64 p_sa,\n    .param .u64 p_sb,\n    .param .u64 p_sc\n)\n\
         .maxntid 256, 1, 1\n{{\n{REGS}    .reg .{t} %acc<64>;\n    .reg .{t} %fa<8>;\n    .reg .{t} %fb<8>;\n    \
         .reg .{t} %ga<4>;\n    .reg .{t} %gb<4>;\n    .shared .align 16 .b8 sA[{sz}];\n    .shared .align 16 .b8 sB[{sz}];",
        sz = 8 * 128 * es
    );
    let _ = writeln!(
        s,
        "    ld.param.u64 %rd1, [p_a];\n    cvta.to.global.u64 %rd1, %rd1;\n    ld.param.u64 %rd2, [p_b];\n    \
         cvta.to.global.u64 %rd2, %rd2;\n    ld.param.u64 %rd3, [p_c];\n    cvta.to.global.u64 %rd3, %rd3;\n    \
         ld.param.u32 %r1, [p_m];\n    ld.param.u32 %r2, [p_n];\n    ld.param.u32 %r3, [p_k];\n    \
         ld.param.u32 %r4, [p_lda];\n    ld.param.u32 %r5, [p_ldb];\n    ld.param.u64 %rd4, [p_sa];\n    \
         ld.param.u64 %rd5, [p_sb];\n    ld.param.u64 %rd6, [p_sc];\n    mov.u32 %r6, %tid.x;\n    \
         mov.u32 %r7, %ctaid.x;\n    mov.u32 %r8, %ctaid.y;\n    mov.u32 %r9, %ctaid.z;\n    \
         shl.b32 %r10, %r8, 7;\n    shl.b32 %r11, %r7, 7;\n    cvt.u64.u32 %rd7, %r9;\n    \
         mul.lo.u64 %rd8, %rd7, %rd4;\n    mad.lo.u64 %rd1, %rd8, {es}, %rd1;\n    mul.lo.u64 %rd8, %rd7, %rd5;\n    \
         mad.lo.u64 %rd2, %rd8, {es}, %rd2;\n    mul.lo.u64 %rd8, %rd7, %rd6;\n    mad.lo.u64 %rd3, %rd8, {es}, %rd3;\n    \
         and.b32 %r12, %r6, 15;\n    shr.u32 %r13, %r6, 4;\n    and.b32 %r14, %r6, 1;\n    shl.b32 %r14, %r14, 2;\n    \
         shr.u32 %r15, %r6, 1;\n    and.b32 %r16, %r6, 31;\n    shl.b32 %r16, %r16, 2;\n    shr.u32 %r17, %r6, 5;\n    \
         mov.u32 %r40, sA;\n    mov.u32 %r41, sB;"
    );
    // A loader: N: row r15 (0..127), k-offset r14 (0,4); T: k r17 (0..7), m r16.
    // Global coordinates: A row gm (%r18), A k gk (%r19); per tile gk += 8.
    // %rd9: address of the thread's first A element for tile 0.
    if !ta {
        let _ = writeln!(
            s,
            "    add.u32 %r18, %r10, %r15;\n    mov.u32 %r19, %r14;\n    mul.wide.u32 %rd9, %r18, %r4;\n    \
             cvt.u64.u32 %rd10, %r19;\n    add.u64 %rd9, %rd9, %rd10;\n    mad.lo.u64 %rd9, %rd9, {es}, %rd1;\n    \
             mov.u64 %rd11, {};",
            8 * es
        );
    } else {
        let _ = writeln!(
            s,
            "    add.u32 %r18, %r10, %r16;\n    mov.u32 %r19, %r17;\n    mul.wide.u32 %rd9, %r19, %r4;\n    \
             cvt.u64.u32 %rd10, %r18;\n    add.u64 %rd9, %rd9, %rd10;\n    mad.lo.u64 %rd9, %rd9, {es}, %rd1;\n    \
             mul.wide.u32 %rd11, %r4, {};",
            8 * es
        );
    }
    // B loader: N: k r17, n r16; T: n r15, k r14. Coordinates gn %r20, gk %r21.
    if !tb {
        let _ = writeln!(
            s,
            "    add.u32 %r20, %r11, %r16;\n    mov.u32 %r21, %r17;\n    mul.wide.u32 %rd12, %r21, %r5;\n    \
             cvt.u64.u32 %rd10, %r20;\n    add.u64 %rd12, %rd12, %rd10;\n    mad.lo.u64 %rd12, %rd12, {es}, %rd2;\n    \
             mul.wide.u32 %rd13, %r5, {};",
            8 * es
        );
    } else {
        let _ = writeln!(
            s,
            "    add.u32 %r20, %r11, %r15;\n    mov.u32 %r21, %r14;\n    mul.wide.u32 %rd12, %r20, %r5;\n    \
             cvt.u64.u32 %rd10, %r21;\n    add.u64 %rd12, %rd12, %rd10;\n    mad.lo.u64 %rd12, %rd12, {es}, %rd2;\n    \
             mov.u64 %rd13, {};",
            8 * es
        );
    }
    // Shared store addresses. A: N -> As[k14+j][r15] (4 scalar stores, stride 128);
    // T -> As[r17][r16..+4]. B: N -> Bs[r17][r16..+4]; T -> Bs[r14+j][r15].
    let _ = writeln!(
        s,
        "    {}\n    {}",
        if !ta {
            format!("mad.lo.u32 %r22, %r14, 128, %r15;\n    mad.lo.u32 %r22, %r22, {es}, %r40;")
        } else {
            format!("mad.lo.u32 %r22, %r17, 128, %r16;\n    mad.lo.u32 %r22, %r22, {es}, %r40;")
        },
        if !tb {
            format!("mad.lo.u32 %r23, %r17, 128, %r16;\n    mad.lo.u32 %r23, %r23, {es}, %r41;")
        } else {
            format!("mad.lo.u32 %r23, %r14, 128, %r15;\n    mad.lo.u32 %r23, %r23, {es}, %r41;")
        }
    );
    // Compute read addresses: As[k][r13*8 ..], Bs[k][r12*8 ..].
    let _ = writeln!(
        s,
        "    shl.b32 %r24, %r13, 3;\n    mad.lo.u32 %r24, %r24, {es}, %r40;\n    shl.b32 %r25, %r12, 3;\n    \
         mad.lo.u32 %r25, %r25, {es}, %r41;"
    );
    for i in 0..64 {
        let _ = writeln!(s, "    mov.{t} %acc{i}, {z};");
    }
    // Number of k tiles.
    let _ = writeln!(
        s,
        "    add.u32 %r26, %r3, 7;\n    shr.u32 %r26, %r26, 3;\n    mov.u32 %r27, 0;"
    );
    // Global loads of a tile into %ga/%gb, guarded. One generator serves
    // both operands: they differ only in registers and orientation.
    // `normal`: (row, col, rows, cols) when not transposed; the transposed
    // operand swaps the roles.
    let load_tile = |s: &mut String,
                     transposed: bool,
                     normal: (&str, &str, &str, &str),
                     (p_row, p_el): (&str, &str),
                     dst: &str,
                     addr: &str| {
        let (row, col, rows, cols) = if !transposed {
            normal
        } else {
            (normal.1, normal.0, normal.3, normal.2)
        };
        // Row bound and column bound: element j is at (row, col + j).
        let _ = writeln!(s, "    setp.lt.u32 {p_row}, {row}, {rows};");
        if vec {
            let _ = writeln!(
                s,
                "    setp.lt.u32 {p_el}, {col}, {cols};\n    and.pred {p_el}, {p_el}, {p_row};\n    mov.{t} {dst}0, {z};\n    \
                 mov.{t} {dst}1, {z};\n    mov.{t} {dst}2, {z};\n    mov.{t} {dst}3, {z};\n    \
                 @{p_el} ld.global.v4.{t} {{{dst}0, {dst}1, {dst}2, {dst}3}}, [{addr}];"
            );
        } else {
            for j in 0..4 {
                let _ = writeln!(
                    s,
                    "    add.u32 %r28, {col}, {j};\n    setp.lt.u32 {p_el}, %r28, {cols};\n    and.pred {p_el}, {p_el}, {p_row};\n    \
                     mov.{t} {dst}{j}, {z};\n    @{p_el} {} {dst}{j}, [{addr}+{}];",
                    ld(d),
                    j as u32 * es
                );
            }
        }
    };
    // A: elements j = 0..4 along k (not transposed) or m (transposed).
    let load_a = |s: &mut String| {
        load_tile(
            s,
            ta,
            ("%r18", "%r19", "%r1", "%r3"),
            ("%p4", "%p5"),
            "%ga",
            "%rd9",
        )
    };
    let load_b = |s: &mut String| {
        load_tile(
            s,
            tb,
            ("%r21", "%r20", "%r3", "%r2"),
            ("%p6", "%p7"),
            "%gb",
            "%rd12",
        )
    };
    let store_tiles = |s: &mut String| {
        if !ta {
            for j in 0..4 {
                let _ = writeln!(
                    s,
                    "    st.shared.{t} [%r22+{}], %ga{j};",
                    j as u32 * 128 * es
                );
            }
        } else if vec {
            let _ = writeln!(
                s,
                "    st.shared.v4.{t} [%r22], {{%ga0, %ga1, %ga2, %ga3}};"
            );
        } else {
            for j in 0..4 {
                let _ = writeln!(s, "    st.shared.{t} [%r22+{}], %ga{j};", j as u32 * es);
            }
        }
        if tb {
            for j in 0..4 {
                let _ = writeln!(
                    s,
                    "    st.shared.{t} [%r23+{}], %gb{j};",
                    j as u32 * 128 * es
                );
            }
        } else if vec {
            let _ = writeln!(
                s,
                "    st.shared.v4.{t} [%r23], {{%gb0, %gb1, %gb2, %gb3}};"
            );
        } else {
            for j in 0..4 {
                let _ = writeln!(s, "    st.shared.{t} [%r23+{}], %gb{j};", j as u32 * es);
            }
        }
    };
    let advance = |s: &mut String| {
        // k coordinates move by 8, addresses by one tile.
        let _ = writeln!(
            s,
            "    add.u32 %r19, %r19, 8;\n    add.u32 %r21, %r21, 8;\n    add.u64 %rd9, %rd9, %rd11;\n    \
             add.u64 %rd12, %rd12, %rd13;"
        );
    };
    let _ = writeln!(s, "    setp.eq.u32 %p8, %r26, 0;\n    @%p8 bra STORE;");
    load_a(s);
    load_b(s);
    store_tiles(s);
    let _ = writeln!(
        s,
        "    bar.sync 0;\nTILE:\n    add.u32 %r27, %r27, 1;\n    setp.lt.u32 %p9, %r27, %r26;"
    );
    advance(s);
    let _ = writeln!(s, "    @!%p9 bra COMPUTE;");
    load_a(s);
    load_b(s);
    let _ = writeln!(s, "COMPUTE:");
    for kk in 0..8u32 {
        let ao = kk * 128 * es;
        if d == DType::F32 {
            let _ = writeln!(
                s,
                "    ld.shared.v4.f32 {{%fa0, %fa1, %fa2, %fa3}}, [%r24+{ao}];\n    \
                 ld.shared.v4.f32 {{%fa4, %fa5, %fa6, %fa7}}, [%r24+{}];\n    \
                 ld.shared.v4.f32 {{%fb0, %fb1, %fb2, %fb3}}, [%r25+{ao}];\n    \
                 ld.shared.v4.f32 {{%fb4, %fb5, %fb6, %fb7}}, [%r25+{}];",
                ao + 16,
                ao + 16
            );
        } else {
            for j in 0..4u32 {
                let _ = writeln!(
                    s,
                    "    ld.shared.v2.f64 {{%fa{}, %fa{}}}, [%r24+{}];\n    ld.shared.v2.f64 {{%fb{}, %fb{}}}, [%r25+{}];",
                    2 * j,
                    2 * j + 1,
                    ao + 16 * j,
                    2 * j,
                    2 * j + 1,
                    ao + 16 * j
                );
            }
        }
        for i in 0..8 {
            for j in 0..8 {
                let _ = writeln!(
                    s,
                    "    fma.rn.{t} %acc{a}, %fa{i}, %fb{j}, %acc{a};",
                    a = i * 8 + j
                );
            }
        }
    }
    let _ = writeln!(s, "    bar.sync 0;\n    @!%p9 bra STORE;");
    store_tiles(s);
    let _ = writeln!(s, "    bar.sync 0;\n    bra TILE;\nSTORE:");
    // Row r = m0 + r13*8 + i, col = n0 + r12*8 + j.
    let _ = writeln!(
        s,
        "    shl.b32 %r30, %r13, 3;\n    add.u32 %r30, %r30, %r10;\n    shl.b32 %r31, %r12, 3;\n    add.u32 %r31, %r31, %r11;"
    );
    for i in 0..8 {
        let _ = writeln!(
            s,
            "    add.u32 %r32, %r30, {i};\n    setp.lt.u32 %p10, %r32, %r1;\n    mul.wide.u32 %rd14, %r32, %r2;\n    \
             cvt.u64.u32 %rd15, %r31;\n    add.u64 %rd14, %rd14, %rd15;\n    mad.lo.u64 %rd14, %rd14, {es}, %rd3;"
        );
        for j in 0..8 {
            let _ = writeln!(
                s,
                "    add.u32 %r33, %r31, {j};\n    setp.lt.u32 %p11, %r33, %r2;\n    and.pred %p11, %p11, %p10;\n    \
                 @%p11 {} [%rd14+{}], %acc{};",
                st(d),
                j as u32 * es,
                i * 8 + j
            );
        }
    }
    let _ = writeln!(s, "    ret;\n}}\n");
}
