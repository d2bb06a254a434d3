//! Fused optimizer updates: one kernel pass per parameter tensor updates the
//! parameter and its state in place, with PyTorch's update rules (the same
//! formulas as `torch.optim`'s single-tensor implementations).
//!
//! Every kernel has the parameter list `p, g, s1, s2, s3 (u64), n (u64),
//! h0..h7 (f32), flags (u32)`; the typed functions below fill it.

use std::ffi::c_void;
use std::fmt::Write;

use super::launch;
use super::ops::buf;
use crate::backend::step::{AdagradParams, AdamParams, RmspropParams, SgdParams};
use crate::backend::Array;
use crate::tensor::DType;

const KERNELS: [&str; 4] = [
    "opt_sgd_f32",
    "opt_adam_f32",
    "opt_rmsprop_f32",
    "opt_adagrad_f32",
];

fn header(s: &mut String, name: &str) {
    let _ = writeln!(
        s,
        ".visible .entry {name}(\n    .param .u64 p_p,\n    .param .u64 p_g,\n    .param .u64 p_s1,\n    \
         .param .u64 p_s2,\n    .param .u64 p_s3,\n    .param .u64 p_n,\n    .param .f32 p_h0,\n    \
         .param .f32 p_h1,\n    .param .f32 p_h2,\n    .param .f32 p_h3,\n    .param .f32 p_h4,\n    \
         .param .f32 p_h5,\n    .param .f32 p_h6,\n    .param .f32 p_h7,\n    .param .u32 p_flags\n)\n{{\n    \
         .reg .pred %p<16>;\n    .reg .b32 %r<16>;\n    .reg .b64 %rd<32>;\n    .reg .f32 %h<8>;\n    \
         .reg .f32 %f<32>;"
    );
    for (i, n) in ["p", "g", "s1", "s2", "s3"].iter().enumerate() {
        let _ = writeln!(
            s,
            "    ld.param.u64 %rd{r}, [p_{n}];\n    cvta.to.global.u64 %rd{r}, %rd{r};",
            r = i + 1
        );
    }
    for i in 0..8 {
        let _ = writeln!(s, "    ld.param.f32 %h{i}, [p_h{i}];");
    }
    let _ = writeln!(
        s,
        "    ld.param.u32 %r10, [p_flags];\n    ld.param.u64 %rd6, [p_n];\n    mov.u32 %r1, %ctaid.x;\n    \
         mov.u32 %r2, %ntid.x;\n    mov.u32 %r3, %tid.x;\n    mov.u32 %r4, %nctaid.x;\n    \
         mul.wide.u32 %rd7, %r1, %r2;\n    cvt.u64.u32 %rd8, %r3;\n    add.u64 %rd9, %rd7, %rd8;\n    \
         mul.wide.u32 %rd10, %r4, %r2;\n    and.b32 %r11, %r10, 1;\n    setp.ne.u32 %p10, %r11, 0;\n    \
         and.b32 %r11, %r10, 2;\n    setp.ne.u32 %p11, %r11, 0;\n    and.b32 %r11, %r10, 4;\n    \
         setp.ne.u32 %p12, %r11, 0;\nLOOP:\n    setp.ge.u64 %p1, %rd9, %rd6;\n    @%p1 bra DONE;\n    \
         shl.b64 %rd11, %rd9, 2;\n    add.u64 %rd12, %rd1, %rd11;\n    add.u64 %rd13, %rd2, %rd11;\n    \
         add.u64 %rd14, %rd3, %rd11;\n    add.u64 %rd15, %rd4, %rd11;\n    add.u64 %rd16, %rd5, %rd11;\n    \
         ld.global.f32 %f1, [%rd12];\n    ld.global.f32 %f2, [%rd13];"
    );
}

fn footer(s: &mut String) {
    let _ = writeln!(
        s,
        "    st.global.f32 [%rd12], %f1;\n    add.u64 %rd9, %rd9, %rd10;\n    bra LOOP;\nDONE:\n    ret;\n}}\n"
    );
}

/// `%f2 = maximize ? -g : g` (flag register `mx`), then `%f2 += wd * p` when wd != 0.
fn grad_prologue(s: &mut String, mx: &str, wd: &str) {
    let _ = writeln!(
        s,
        "    neg.f32 %f3, %f2;\n    selp.f32 %f2, %f3, %f2, {mx};\n    fma.rn.f32 %f3, {wd}, %f1, %f2;\n    \
         setp.neu.f32 %p2, {wd}, 0f00000000;\n    selp.f32 %f2, %f3, %f2, %p2;"
    );
}

/// Appends the optimizer kernels to the module.
pub(crate) fn kernels(s: &mut String) {
    // SGD. h: lr, momentum, dampening, wd. flags: 1 nesterov, 2 maximize, 4 first step.
    header(s, KERNELS[0]);
    grad_prologue(s, "%p11", "%h3");
    let _ = writeln!(
        s,
        "    setp.neu.f32 %p3, %h1, 0f00000000;\n    @!%p3 bra APPLY;\n    ld.global.f32 %f4, [%rd14];\n    \
         sub.rn.f32 %f5, 0f3F800000, %h2;\n    mul.rn.f32 %f6, %f5, %f2;\n    fma.rn.f32 %f7, %h1, %f4, %f6;\n    \
         selp.f32 %f7, %f2, %f7, %p12;\n    st.global.f32 [%rd14], %f7;\n    fma.rn.f32 %f8, %h1, %f7, %f2;\n    \
         selp.f32 %f2, %f8, %f7, %p10;\nAPPLY:\n    mul.rn.f32 %f9, %h0, %f2;\n    sub.rn.f32 %f1, %f1, %f9;"
    );
    footer(s);
    // Adam/AdamW. h: lr, beta1, beta2, eps, wd, step_size, sqrt(bias_correction2).
    // flags: 1 amsgrad, 2 decoupled weight decay (AdamW), 4 maximize.
    header(s, KERNELS[1]);
    let _ = writeln!(
        s,
        "    neg.f32 %f3, %f2;\n    selp.f32 %f2, %f3, %f2, %p12;\n    setp.neu.f32 %p2, %h4, 0f00000000;\n    \
         not.pred %p4, %p11;\n    and.pred %p5, %p2, %p4;\n    fma.rn.f32 %f3, %h4, %f1, %f2;\n    \
         selp.f32 %f2, %f3, %f2, %p5;\n    and.pred %p6, %p2, %p11;\n    mul.rn.f32 %f4, %h0, %h4;\n    \
         sub.rn.f32 %f4, 0f3F800000, %f4;\n    mul.rn.f32 %f5, %f1, %f4;\n    selp.f32 %f1, %f5, %f1, %p6;\n    \
         ld.global.f32 %f6, [%rd14];\n    ld.global.f32 %f7, [%rd15];\n    sub.rn.f32 %f8, %f2, %f6;\n    \
         sub.rn.f32 %f9, 0f3F800000, %h1;\n    fma.rn.f32 %f6, %f8, %f9, %f6;\n    st.global.f32 [%rd14], %f6;\n    \
         mul.rn.f32 %f10, %f2, %f2;\n    sub.rn.f32 %f11, 0f3F800000, %h2;\n    mul.rn.f32 %f10, %f10, %f11;\n    \
         fma.rn.f32 %f7, %f7, %h2, %f10;\n    st.global.f32 [%rd15], %f7;\n    mov.f32 %f12, %f7;\n    \
         @!%p10 bra DENOM;\n    ld.global.f32 %f13, [%rd16];\n    max.f32 %f12, %f13, %f7;\n    \
         st.global.f32 [%rd16], %f12;\nDENOM:\n    sqrt.rn.f32 %f14, %f12;\n    div.rn.f32 %f14, %f14, %h6;\n    \
         add.rn.f32 %f14, %f14, %h3;\n    div.rn.f32 %f15, %f6, %f14;\n    mul.rn.f32 %f15, %f15, %h5;\n    \
         sub.rn.f32 %f1, %f1, %f15;"
    );
    footer(s);
    // RMSprop. h: lr, alpha, eps, wd, momentum. flags: 1 centered, 2 maximize.
    header(s, KERNELS[2]);
    grad_prologue(s, "%p11", "%h3");
    let _ = writeln!(
        s,
        "    ld.global.f32 %f4, [%rd14];\n    mul.rn.f32 %f5, %f2, %f2;\n    sub.rn.f32 %f6, 0f3F800000, %h1;\n    \
         mul.rn.f32 %f5, %f5, %f6;\n    fma.rn.f32 %f4, %f4, %h1, %f5;\n    st.global.f32 [%rd14], %f4;\n    \
         mov.f32 %f7, %f4;\n    @!%p10 bra AVG;\n    ld.global.f32 %f8, [%rd16];\n    sub.rn.f32 %f9, %f2, %f8;\n    \
         fma.rn.f32 %f8, %f9, %f6, %f8;\n    st.global.f32 [%rd16], %f8;\n    mul.rn.f32 %f10, %f8, %f8;\n    \
         sub.rn.f32 %f7, %f4, %f10;\nAVG:\n    sqrt.rn.f32 %f11, %f7;\n    add.rn.f32 %f11, %f11, %h2;\n    \
         div.rn.f32 %f12, %f2, %f11;\n    setp.gt.f32 %p3, %h4, 0f00000000;\n    @!%p3 bra PLAIN;\n    \
         ld.global.f32 %f13, [%rd15];\n    fma.rn.f32 %f13, %h4, %f13, %f12;\n    st.global.f32 [%rd15], %f13;\n    \
         mov.f32 %f12, %f13;\nPLAIN:\n    mul.rn.f32 %f14, %h0, %f12;\n    sub.rn.f32 %f1, %f1, %f14;"
    );
    footer(s);
    // Adagrad. h: clr (lr / (1 + (step-1) lr_decay)), wd, eps. flags: 2 maximize.
    header(s, KERNELS[3]);
    grad_prologue(s, "%p11", "%h1");
    let _ = writeln!(
        s,
        "    ld.global.f32 %f4, [%rd14];\n    fma.rn.f32 %f4, %f2, %f2, %f4;\n    st.global.f32 [%rd14], %f4;\n    \
         sqrt.rn.f32 %f5, %f4;\n    add.rn.f32 %f5, %f5, %h2;\n    div.rn.f32 %f6, %f2, %f5;\n    \
         mul.rn.f32 %f6, %f6, %h0;\n    sub.rn.f32 %f1, %f1, %f6;"
    );
    footer(s);
}

/// Checks an array the kernel reads (and, when `written`, updates) and
/// returns its device address (0 for `None`).
#[track_caller]
fn ptr(what: &str, p: &Array, t: Option<&Array>, written: bool) -> u64 {
    let Some(t) = t else { return 0 };
    assert!(
        t.device() == p.device()
            && t.dtype() == DType::F32
            && t.is_contiguous()
            && t.numel() == p.numel(),
        "fused optimizer: {what} must be a contiguous f32 tensor of {} elements on {} \
         (got {} {:?} on {}, contiguous: {})",
        p.numel(),
        p.device(),
        t.dtype(),
        t.shape(),
        t.device(),
        t.is_contiguous()
    );
    t.layout().assert_within("fused optimizer", buf(t).len());
    if written {
        // In-place updates bump the version, as `add_` does.
        t.storage().cuda_write();
    }
    buf(t).ptr_at(t.layout().offset)
}

#[track_caller]
fn run(name: &str, param: &Array, grad: &Array, s: [Option<&Array>; 3], h: [f32; 8], flags: u32) {
    assert!(
        param.device().is_cuda(),
        "fused optimizer kernels run on CUDA tensors; {} is on {}",
        name,
        param.device()
    );
    let mut pp = ptr("the parameter", param, Some(param), true);
    let mut pg = ptr("the gradient", param, Some(grad), false);
    let (mut s1, mut s2, mut s3) = (
        ptr("state", param, s[0], true),
        ptr("state", param, s[1], true),
        ptr("state", param, s[2], true),
    );
    let n = param.numel();
    let mut n64 = n as u64;
    let mut h = h;
    let mut flags = flags;
    let c = buf(param).ctx().clone();
    let [h0, h1, h2, h3, h4, h5, h6, h7] = &mut h;
    let mut args: [*mut c_void; 15] = [
        (&mut pp as *mut u64).cast(),
        (&mut pg as *mut u64).cast(),
        (&mut s1 as *mut u64).cast(),
        (&mut s2 as *mut u64).cast(),
        (&mut s3 as *mut u64).cast(),
        (&mut n64 as *mut u64).cast(),
        (h0 as *mut f32).cast(),
        (h1 as *mut f32).cast(),
        (h2 as *mut f32).cast(),
        (h3 as *mut f32).cast(),
        (h4 as *mut f32).cast(),
        (h5 as *mut f32).cast(),
        (h6 as *mut f32).cast(),
        (h7 as *mut f32).cast(),
        (&mut flags as *mut u32).cast(),
    ];
    let grid = (n.div_ceil(256).max(1)).min(c.sms as usize * 32) as u32;
    if n > 0 {
        launch(&c, name, (grid, 1, 1), 256, &mut args);
    }
}

/// One fused SGD step on a CUDA f32 parameter, in place: `momentum_buf` (a
/// contiguous f32 tensor like `param`, needed when momentum != 0) is set to
/// the gradient on the first step (`o.first`), as PyTorch does.
#[track_caller]
pub(crate) fn sgd_step(param: &Array, grad: &Array, momentum_buf: Option<&Array>, o: &SgdParams) {
    assert!(
        o.momentum == 0.0 || momentum_buf.is_some(),
        "sgd_step: momentum {} needs a momentum buffer",
        o.momentum
    );
    let flags = o.nesterov as u32 | (o.maximize as u32) << 1 | (o.first as u32) << 2;
    let h = [
        o.lr as f32,
        o.momentum as f32,
        o.dampening as f32,
        o.weight_decay as f32,
        0.,
        0.,
        0.,
        0.,
    ];
    run(
        KERNELS[0],
        param,
        grad,
        [momentum_buf, None, None],
        h,
        flags,
    );
}

/// One fused Adam/AdamW step (`o.step` counts from 1) on a CUDA f32 parameter:
/// updates `param`, `exp_avg`, `exp_avg_sq` and, with amsgrad,
/// `max_exp_avg_sq` in place.
#[track_caller]
pub(crate) fn adam_step(
    param: &Array,
    grad: &Array,
    exp_avg: &Array,
    exp_avg_sq: &Array,
    max_exp_avg_sq: Option<&Array>,
    o: &AdamParams,
) {
    let step = o.step;
    assert!(step >= 1, "adam_step: step counts from 1");
    assert!(
        !o.amsgrad || max_exp_avg_sq.is_some(),
        "adam_step: amsgrad needs max_exp_avg_sq"
    );
    let (b1, b2) = (o.beta1, o.beta2);
    let bc1 = 1.0 - b1.powi(step as i32);
    let bc2 = 1.0 - b2.powi(step as i32);
    let h = [
        o.lr as f32,
        b1 as f32,
        b2 as f32,
        o.eps as f32,
        o.weight_decay as f32,
        (o.lr / bc1) as f32,
        bc2.sqrt() as f32,
        0.,
    ];
    let flags = o.amsgrad as u32 | (o.decoupled as u32) << 1 | (o.maximize as u32) << 2;
    run(
        KERNELS[1],
        param,
        grad,
        [Some(exp_avg), Some(exp_avg_sq), max_exp_avg_sq],
        h,
        flags,
    );
}

/// One fused RMSprop step on a CUDA f32 parameter: updates `param`,
/// `square_avg`, and when used `momentum_buf` and `grad_avg` (centered).
#[track_caller]
pub(crate) fn rmsprop_step(
    param: &Array,
    grad: &Array,
    square_avg: &Array,
    momentum_buf: Option<&Array>,
    grad_avg: Option<&Array>,
    o: &RmspropParams,
) {
    assert!(
        o.momentum <= 0.0 || momentum_buf.is_some(),
        "rmsprop_step: momentum needs a buffer"
    );
    assert!(
        !o.centered || grad_avg.is_some(),
        "rmsprop_step: centered needs grad_avg"
    );
    let h = [
        o.lr as f32,
        o.alpha as f32,
        o.eps as f32,
        o.weight_decay as f32,
        o.momentum as f32,
        0.,
        0.,
        0.,
    ];
    let flags = o.centered as u32 | (o.maximize as u32) << 1;
    run(
        KERNELS[2],
        param,
        grad,
        [Some(square_avg), momentum_buf, grad_avg],
        h,
        flags,
    );
}

/// One fused Adagrad step (`o.step` counts from 1) on a CUDA f32 parameter:
/// updates `param` and `state_sum` in place.
#[track_caller]
pub(crate) fn adagrad_step(param: &Array, grad: &Array, state_sum: &Array, o: &AdagradParams) {
    let step = o.step;
    assert!(step >= 1, "adagrad_step: step counts from 1");
    let clr = o.lr / (1.0 + (step - 1) as f64 * o.lr_decay);
    let h = [
        clr as f32,
        o.weight_decay as f32,
        o.eps as f32,
        0.,
        0.,
        0.,
        0.,
        0.,
    ];
    run(
        KERNELS[3],
        param,
        grad,
        [Some(state_sum), None, None],
        h,
        (o.maximize as u32) << 1,
    );
}
