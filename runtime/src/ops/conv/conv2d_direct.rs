//! Where conv2d's f32 kernels at stride 1 use the direct convolution of
//! `backend/cpu/conv.rs` instead of im2col (a child module of `conv2d`):
//! the forward, and the input's gradient, which is the convolution of the
//! output's gradient with the weight flipped in space and its channels
//! swapped, padded by the kernel's span less the forward's padding.

use super::{Conv2d, Geometry};
use crate::backend::cpu::conv::{self, Direct, Level};
use crate::backend::cpu::{par_parts, pool, SharedPtr};
use crate::tensor::{DType, Float};

/// The forward's sizes for the direct kernel and the vector width, where
/// it applies: f32 at stride 1 on a CPU with AVX2 + FMA or AVX-512.
pub(super) fn forward_plan<T: Float>(op: &Conv2d, g: &Geometry) -> Option<(Level, Direct)> {
    if T::DTYPE != DType::F32 || op.stride != [1, 1] {
        return None;
    }
    let d = Direct {
        c: g.cg(),
        h: g.h,
        w: g.w,
        o: g.og(),
        kh: g.kh,
        kw: g.kw,
        pad_top: op.padding[0],
        pad_left: op.padding[2],
        dilation: op.dilation,
        ho: g.ho,
        wo: g.wo,
    };
    Some((conv::level()?, d))
}

/// The input gradient's, as [`forward_plan`]: `dY` (`og` channels, `ho x
/// wo`) convolved into `dX` (`cg` channels, `h x w`). Also needs the
/// forward's top and left padding within the kernel's span (a padding
/// past it would be a negative one here).
pub(super) fn input_grad_plan<T: Float>(op: &Conv2d, g: &Geometry) -> Option<(Level, Direct)> {
    let (span_h, span_w) = ((g.kh - 1) * op.dilation[0], (g.kw - 1) * op.dilation[1]);
    if T::DTYPE != DType::F32 || op.stride != [1, 1] {
        return None;
    }
    let (pad_top, pad_left) = (
        span_h.checked_sub(op.padding[0])?,
        span_w.checked_sub(op.padding[2])?,
    );
    let d = Direct {
        c: g.og(),
        h: g.ho,
        w: g.wo,
        o: g.cg(),
        kh: g.kh,
        kw: g.kw,
        pad_top,
        pad_left,
        dilation: op.dilation,
        ho: g.h,
        wo: g.w,
    };
    Some((conv::level()?, d))
}

/// Runs `f` on the weight `[groups·og, cg, kh, kw]` rearranged for the
/// input gradient, `[groups·cg, og, kh, kw]` with each kernel flipped, in
/// a per-thread scratch (grown to the largest, then reused).
pub(super) fn with_flipped<R>(g: &Geometry, w: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    thread_local! {
        static FLIPPED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (cg, og, taps) = (g.cg(), g.og(), g.kh * g.kw);
    let len = g.o * cg * taps;
    let fill = |wf: &mut [f32]| {
        for (i, v) in w[..g.o * cg * taps].iter().enumerate() {
            let (oc, ci, tap) = (i / (cg * taps), i / taps % cg, i % taps);
            let (grp, oc) = (oc / og, oc % og);
            wf[((grp * cg + ci) * og + oc) * taps + taps - 1 - tap] = *v;
        }
    };
    FLIPPED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            fill(&mut v[..len]);
            f(&v[..len])
        }
        // Re-entered on this thread (work stealing): a buffer of its own.
        Err(_) => {
            let mut v = vec![0.0; len];
            fill(&mut v);
            f(&v)
        }
    })
}

/// The direct kernel over `n` samples of `groups` groups: block `(s, grp)`
/// of `x` is `d.c` planes of `h x w`, of `out` `d.o` planes of `ho x wo`;
/// group `grp`'s weight is `d.o` rows of `d.c·kh·kw` from `grp·d.o` rows
/// on, its bias `d.o` values from `grp·d.o`. The parts, (sample, group,
/// tile of output rows), are split across the helper pool.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    level: Level,
    d: &Direct,
    n: usize,
    groups: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    acc: bool,
) {
    let (block_in, block_out, k) = (d.c * d.h * d.w, d.o * d.ho * d.wo, d.c * d.kh * d.kw);
    assert!(
        x.len() >= n * groups * block_in
            && out.len() == n * groups * block_out
            && w.len() >= groups * d.o * k,
        "conv2d (direct): operand sizes"
    );
    // Memory-sized tiles, or fewer rows so each thread has a part.
    let rows = super::rows_per_tile(d.tile_rows(), d.ho, n * groups, pool::par_width());
    let tiles = d.ho.div_ceil(rows);
    let base = SharedPtr::new(out.as_mut_ptr());
    par_parts(n * groups * tiles, |p| {
        let (ng, tile) = (p / tiles, p % tiles);
        let grp = ng % groups;
        let oy = tile * rows..((tile + 1) * rows).min(d.ho);
        let xs = &x[ng * block_in..][..block_in];
        let ws = &w[grp * d.o * k..][..d.o * k];
        let bs = bias.map(|b| &b[grp * d.o..][..d.o]);
        <f32 as super::ColScratch>::with_col(conv::scratch_len(level, d, oy.len()), |pad| {
            // SAFETY: `level` is this CPU's; block `ng` of `out` (sizes
            // checked above) holds the part's d.o planes, and the part
            // writes rows `oy` of them only.
            unsafe {
                let planes = base.get().add(ng * block_out);
                conv::conv_rows(level, d, xs, ws, bs, oy, planes, d.ho * d.wo, acc, pad)
            }
        })
    });
}
