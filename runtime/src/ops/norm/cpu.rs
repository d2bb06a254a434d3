//! The norm ops' CPU kernels. A group's elements come as contiguous runs
//! ([`Groups::runs`]), so every loop walks plain slices and vectorises
//! (statistics summed in f64 lanes); the forward and the input's gradient
//! split whole groups across the pool where groups are contiguous rows
//! (`layer_norm`, `group_norm`).

use super::{Groups, Stats};
use crate::backend::cpu::rows::{lane_fold, par_rows, LANES};
use crate::backend::cpu::{run_vectorized, vectorized, Kernel};
use crate::tensor::Float;
use std::ops::Range;

/// The weight elements a run of a group uses.
#[derive(Clone, Copy)]
pub(super) enum Param {
    /// One per element, from this one on (`layer_norm`'s columns).
    Each(usize),
    /// This one for the whole run (a channel of `group_norm`, `batch_norm`).
    One(usize),
}

impl Groups {
    /// Calls `f(start, len, param)` for each contiguous run of group `k`.
    #[inline(always)]
    pub(super) fn runs(&self, k: usize, mut f: impl FnMut(usize, usize, Param)) {
        let base = (k % self.period) * self.block;
        for r in 0..self.reps {
            let start = k * self.step + r * self.stride;
            if self.div == 1 {
                f(start, self.seg, Param::Each(base));
                continue;
            }
            let end = start + self.seg;
            for (q, s) in (start..end).step_by(self.div).enumerate() {
                f(s, self.div.min(end - s), Param::One(base + q));
            }
        }
    }

    /// Group `k`'s mean and biased variance, in f64.
    pub(crate) fn mean_var<T: Float>(&self, xs: &[T], k: usize) -> (f64, f64) {
        let n = self.len().max(1) as f64;
        let mut sum = 0.0;
        self.runs(k, |s, len, _| sum += sum_f64(&xs[s..][..len], |v| v));
        let mean = sum / n;
        let mut var = 0.0;
        self.runs(k, |s, len, _| {
            var += sum_f64(&xs[s..][..len], |v| (v - mean) * (v - mean))
        });
        (mean, var / n)
    }
}

/// Σ `f(x[i])` in f64 lanes.
#[inline(always)]
fn sum_f64<T: Float>(x: &[T], f: impl Fn(f64) -> f64) -> f64 {
    lane_fold(x, 0.0, |s, v| s + f(v.to_f64()), |a, b| a + b)
}

/// `(Σ g·w, Σ g·w·(x − mean))` over a run in f64 lanes, `w` one per element
/// or (absent) 1.
#[inline(always)]
fn grad_sums<T: Float>(x: &[T], g: &[T], w: Option<&[T]>, mean: f64) -> (f64, f64) {
    match w {
        Some(w) => weighted_sums::<T, true>(x, g, w, mean),
        // `g` stands in for the absent weight, never read as it.
        None => weighted_sums::<T, false>(x, g, g, mean),
    }
}

/// [`grad_sums`] with the weight read (`W`) or taken as 1, one loop for
/// both (the constant folds away).
#[inline(always)]
fn weighted_sums<T: Float, const W: bool>(x: &[T], g: &[T], w: &[T], mean: f64) -> (f64, f64) {
    let (g, w) = (&g[..x.len()], &w[..x.len()]);
    let add = |(s, t): (f64, f64), x: T, g: T, w: T| {
        let gw = if W { g * w } else { g }.to_f64();
        (s + gw, t + gw * (x.to_f64() - mean))
    };
    let (cx, cg, cw) = (
        x.chunks_exact(LANES),
        g.chunks_exact(LANES),
        w.chunks_exact(LANES),
    );
    let tail = (cx.remainder().iter())
        .zip(cg.remainder())
        .zip(cw.remainder())
        .fold((0.0, 0.0), |a, ((&x, &g), &w)| add(a, x, g, w));
    let mut acc = [(0.0, 0.0); LANES];
    for ((cx, cg), cw) in cx.zip(cg).zip(cw) {
        for l in 0..LANES {
            acc[l] = add(acc[l], cx[l], cg[l], cw[l]);
        }
    }
    acc.iter().fold(tail, |(a, b), &(c, d)| (a + c, b + d))
}

/// The inputs of a norm kernel: the input's elements, the weight and bias
/// (optional), the statistics, the grouping and `eps`.
#[derive(Clone, Copy)]
pub(super) struct NormInputs<'a, T> {
    pub x: &'a [T],
    pub w: Option<&'a [T]>,
    pub b: Option<&'a [T]>,
    pub stats: Stats<'a, T>,
    pub grp: Groups,
    pub eps: f64,
}

/// Calls `f(groups, block, offset)` on blocks of whole groups that together
/// cover `out` (`offset`: the index in `out` of the block's first element),
/// in parallel where each group is one contiguous row; otherwise once on
/// all of `out`.
fn for_groups<T: Send>(
    grp: &Groups,
    out: &mut [T],
    f: impl Fn(Range<usize>, &mut [T], usize) + Sync,
) {
    if grp.reps == 1 && grp.step == grp.seg && grp.seg > 0 && out.len() == grp.count * grp.seg {
        par_rows(out, grp.seg, |rows, block| {
            let off = rows.start * grp.seg;
            f(rows, block, off)
        })
    } else {
        f(0..grp.count, out, 0)
    }
}

/// `y (+)= (x − mean)·rstd·w + b` into `out`.
pub(super) fn forward<T: Float>(inp: NormInputs<'_, T>, out: &mut [T], acc: bool) {
    for_groups(&inp.grp, out, |groups, block, off| {
        run_vectorized(Block {
            inp,
            g: None,
            groups,
            block,
            off,
            acc,
        })
    });
}

/// `dx (+)= rstd·(gw − mean(gw) − x̂·mean(gw·x̂))` with `gw = g·w` over
/// each group, or `rstd·gw` with given statistics (constants then).
pub(super) fn input_grad<T: Float>(inp: NormInputs<'_, T>, g: &[T], out: &mut [T], acc: bool) {
    for_groups(&inp.grp, out, |groups, block, off| {
        run_vectorized(Block {
            inp,
            g: Some(g),
            groups,
            block,
            off,
            acc,
        })
    });
}

/// One block of groups of [`forward`] (`g` absent) or [`input_grad`].
struct Block<'a, 'b, T> {
    inp: NormInputs<'a, T>,
    g: Option<&'a [T]>,
    groups: Range<usize>,
    block: &'b mut [T],
    off: usize,
    acc: bool,
}

impl<T: Float> Kernel for Block<'_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Block {
            inp,
            g,
            groups,
            block,
            off,
            acc,
        } = self;
        let NormInputs {
            x,
            w,
            b,
            stats,
            grp,
            ..
        } = inp;
        let put = |o: &mut T, v: T| *o = if acc { *o + v } else { v };
        let n = grp.len().max(1) as f64;
        for k in groups {
            let (mean, rstd) = stats.of(&grp, x, k, inp.eps);
            let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
            let Some(g) = g else {
                grp.runs(k, |s, len, p| {
                    let (x, o) = (&x[s..][..len], &mut block[s - off..][..len]);
                    match (p, w, b) {
                        (Param::Each(p0), Some(w), Some(b)) => {
                            let (w, b) = (&w[p0..][..len], &b[p0..][..len]);
                            for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                                put(o, (x - m) * r * w + b);
                            }
                        }
                        (Param::Each(p0), ..) => {
                            for (j, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                                let mut y = (x - m) * r;
                                if let Some(w) = w {
                                    y = y * w[p0 + j];
                                }
                                if let Some(b) = b {
                                    y += b[p0 + j];
                                }
                                put(o, y);
                            }
                        }
                        (Param::One(p), ..) => {
                            let wp = w.map_or(T::ONE, |w| w[p]);
                            let bp = b.map_or(T::ZERO, |b| b[p]);
                            for (o, &x) in o.iter_mut().zip(x) {
                                put(o, (x - m) * r * wp + bp);
                            }
                        }
                    }
                });
                continue;
            };
            // The gradient's two group means (zero with given statistics).
            let (a, bq) = match stats {
                Stats::Given(..) => (T::ZERO, T::ZERO),
                Stats::Batch => {
                    let (mut sum_gw, mut sum_gw_xc) = (0.0, 0.0);
                    grp.runs(k, |s, len, p| {
                        let (xr, gr) = (&x[s..][..len], &g[s..][..len]);
                        let (sg, sgx) = match (p, w) {
                            (Param::Each(p0), Some(w)) => grad_sums(xr, gr, Some(&w[p0..]), mean),
                            (Param::Each(_), None) => grad_sums(xr, gr, None, mean),
                            (Param::One(p), w) => {
                                let wp = w.map_or(1.0, |w| w[p].to_f64());
                                let (sg, sgx) = grad_sums(xr, gr, None, mean);
                                (sg * wp, sgx * wp)
                            }
                        };
                        sum_gw += sg;
                        sum_gw_xc += sgx;
                    });
                    (T::from_f64(sum_gw / n), T::from_f64(sum_gw_xc * rstd / n))
                }
            };
            grp.runs(k, |s, len, p| {
                let (x, g) = (&x[s..][..len], &g[s..][..len]);
                let o = &mut block[s - off..][..len];
                match (p, w) {
                    (Param::Each(p0), Some(w)) => {
                        let w = &w[p0..][..len];
                        for (((o, &x), &g), &w) in o.iter_mut().zip(x).zip(g).zip(w) {
                            put(o, r * (g * w - a - (x - m) * r * bq));
                        }
                    }
                    (p, w) => {
                        let wp = match (p, w) {
                            (Param::One(p), Some(w)) => w[p],
                            _ => T::ONE,
                        };
                        for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                            put(o, r * (g * wp - a - (x - m) * r * bq));
                        }
                    }
                }
            });
        }
    }
}

/// `dw (+)= Σ g·x̂` (`weight`), or `db (+)= Σ g`, over the elements using
/// each weight element. (Serial: every group adds into the same elements.)
pub(super) fn param_grad<T: Float>(
    inp: NormInputs<'_, T>,
    g: &[T],
    weight: bool,
    o: &mut [T],
    acc: bool,
) {
    let NormInputs { x, stats, grp, .. } = inp;
    if !acc {
        o.iter_mut().for_each(|v| *v = T::ZERO);
    }
    vectorized(|| {
        for k in 0..grp.count {
            let (mean, rstd) = if weight {
                stats.of(&grp, x, k, inp.eps)
            } else {
                (0.0, 0.0)
            };
            let (m, r) = (T::from_f64(mean), T::from_f64(rstd));
            grp.runs(k, |s, len, p| {
                let (x, g) = (&x[s..][..len], &g[s..][..len]);
                match p {
                    Param::Each(p0) => {
                        let o = &mut o[p0..][..len];
                        if weight {
                            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                                *o += g * ((x - m) * r);
                            }
                        } else {
                            for (o, &g) in o.iter_mut().zip(g) {
                                *o += g;
                            }
                        }
                    }
                    Param::One(p) => {
                        let sum = if weight {
                            grad_sums(x, g, None, mean).1 * rstd
                        } else {
                            sum_f64(g, |v| v)
                        };
                        o[p] += T::from_f64(sum);
                    }
                }
            });
        }
    });
}
