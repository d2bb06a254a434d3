//! A direct stride-1 f32 convolution kernel: no column matrix. The input
//! rows a tile of output rows reads are copied once into a zero-padded
//! scratch, `Wp` wide (the padded width); there, output position `(y, x)`
//! taken at wide index `n = y·Wp + x` reads tap `(i, j)` of channel `c` at
//! `c·plane + n + i·dh·Wp + j·dw`, so for every tap a run of consecutive
//! outputs reads a run of consecutive inputs. Register tiles of R output
//! channels × NB wide positions then accumulate `w[o, c, i, j]` (broadcast)
//! times those runs (plain unaligned loads) over all channels and taps; the
//! `Wp - Wo` wide positions past each row's end are computed and dropped.
//! That is a GEMM whose B operand is read in place, where im2col copied
//! `kh·kw` times the input first (16% of W6b's time, its memory traffic
//! more). Chosen at run time: AVX-512 (6 × 64 tiles) or AVX2 + FMA
//! (4 × 24); without either the caller keeps its im2col path.

use std::ops::Range;

/// The sizes of one stride-1 convolution of one group, for [`conv_rows`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Direct {
    /// Input channels.
    pub(crate) c: usize,
    /// Input rows and columns.
    pub(crate) h: usize,
    pub(crate) w: usize,
    /// Output channels.
    pub(crate) o: usize,
    /// Kernel rows and columns.
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    /// Zeros above the first row and before the first column.
    pub(crate) pad_top: usize,
    pub(crate) pad_left: usize,
    /// Spacing between taps (rows, columns).
    pub(crate) dilation: [usize; 2],
    /// Output rows and columns.
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl Direct {
    /// The padded width: the output's plus the kernel's span less one.
    fn wp(&self) -> usize {
        self.wo + (self.kw - 1) * self.dilation[1]
    }
    /// Input rows (padded) that `rows` output rows read.
    fn rows_in(&self, rows: usize) -> usize {
        rows + (self.kh - 1) * self.dilation[0]
    }
    /// Output rows per part so each part's padded input is about 512 KB
    /// (stays in L2 while every output channel reads it), at least one.
    pub(crate) fn tile_rows(&self) -> usize {
        const TILE_ELEMS: usize = if cfg!(miri) { 256 } else { 1 << 17 };
        let per_row = (self.c * self.wp()).max(1);
        let fit = (TILE_ELEMS / per_row)
            .saturating_sub(self.rows_in(1) - 1)
            .clamp(1, self.ho.max(1));
        // Even tiles: 56 rows that fit 33 are two tiles of 28, not 33 + 23.
        self.ho.div_ceil(self.ho.div_ceil(fit).max(1)).max(1)
    }
}

/// The vector width the CPU offers the direct kernel, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Avx512,
    Avx2,
}

/// The widest vectors the kernel can use here; `None`: use im2col.
pub(crate) fn level() -> Option<Level> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Level::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Level::Avx2);
        }
    }
    None
}

/// Output rows `rows` of all `d.o` planes: `out[o][y][x] = (out[o][y][x]
/// if acc) + bias[o] + Σ w[o, c, i, j] · x[c, y + i·dh - pt, x + j·dw -
/// pl]`, zeros outside the input. `x` is `[c, h, w]`, `w` `[o, c, kh,
/// kw]` (contiguous), plane `o` starts at `out + o·plane`, `wo` columns a
/// row; `pad` is the scratch for the padded input, [`scratch_len`] long.
///
/// # Safety
/// `level` came from [`level`] on this CPU; `out + o·plane + y·wo + x` for
/// `o < d.o`, `y` in `rows` and `x < d.wo` is writable and nothing else
/// touches those elements during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv_rows(
    level: Level,
    d: &Direct,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: Range<usize>,
    out: *mut f32,
    plane: usize,
    acc: bool,
    pad: &mut [f32],
) {
    assert!(
        x.len() >= d.c * d.h * d.w && w.len() >= d.o * d.c * d.kh * d.kw,
        "conv2d (direct): input or weight shorter than its sizes"
    );
    assert!(
        rows.end <= d.ho && bias.is_none_or(|b| b.len() >= d.o),
        "conv2d (direct): output rows {rows:?} past {} or a bias shorter than {} channels",
        d.ho,
        d.o
    );
    assert!(
        pad.len() >= scratch_len(level, d, rows.len()),
        "conv2d (direct): scratch"
    );
    if rows.is_empty() || d.o == 0 || d.wo == 0 {
        return;
    }
    fill_padded(d, x, rows.clone(), pad);
    let tile = Tile {
        d: *d,
        k: d.c * d.kh * d.kw,
        wp: d.wp(),
        plane_in: d.rows_in(rows.len()) * d.wp(),
        x: pad.as_ptr(),
        w: w.as_ptr(),
        bias: bias.map(<[f32]>::as_ptr),
        rows,
        out,
        plane,
        acc,
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the level's features are present (the caller's contract);
    // `tile`'s operands were checked above and by `fill_padded`.
    unsafe {
        match level {
            Level::Avx512 => avx512(&tile),
            Level::Avx2 => avx2(&tile),
        }
    }
    // `level` returns None off x86, so no Level reaches here.
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (level, tile);
        unreachable!("conv2d (direct): no vector kernel on this architecture");
    }
}

/// Elements of [`conv_rows`]' scratch for `rows` output rows: the padded
/// input rows they read, channel after channel, then `NB + (kw-1)·dw`
/// more so the last wide block's loads stay inside.
pub(crate) fn scratch_len(level: Level, d: &Direct, rows: usize) -> usize {
    let nb = match level {
        Level::Avx512 => AVX512_NB,
        Level::Avx2 => AVX2_NB,
    };
    d.c * d.rows_in(rows) * d.wp() + nb + (d.kw - 1) * d.dilation[1]
}

/// Copies the input rows that output `rows` read into `pad`, zero-padded
/// to `Wp` columns, zeros after them (each element written once: the
/// scratch holds the last part's rows).
fn fill_padded(d: &Direct, x: &[f32], rows: Range<usize>, pad: &mut [f32]) {
    let (wp, rows_in) = (d.wp(), d.rows_in(rows.len()));
    let (body, tail) = pad.split_at_mut(d.c * rows_in * wp);
    tail.fill(0.0);
    // Columns past the padded width (`wo` cut short) are not read.
    let (left, span) = (d.pad_left.min(wp), d.w.min(wp.saturating_sub(d.pad_left)));
    for (i, line) in body.chunks_exact_mut(wp).enumerate() {
        let (c, r) = (i / rows_in, i % rows_in);
        // Padded row rows.start + r is input row y = that - pad_top.
        match (rows.start + r).checked_sub(d.pad_top) {
            Some(y) if y < d.h => {
                line[..left].fill(0.0);
                line[left..left + span].copy_from_slice(&x[(c * d.h + y) * d.w..][..span]);
                line[left + span..].fill(0.0);
            }
            _ => line.fill(0.0),
        }
    }
}

/// One part's operands, for the vector bodies (x86 only: elsewhere
/// [`level`] is `None` and nothing reads them).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile {
    d: Direct,
    /// Channels × taps: the reduction length.
    k: usize,
    wp: usize,
    /// Elements per channel of the padded input.
    plane_in: usize,
    x: *const f32,
    w: *const f32,
    bias: Option<*const f32>,
    rows: Range<usize>,
    out: *mut f32,
    plane: usize,
    acc: bool,
}

const AVX512_NB: usize = 64;
const AVX2_NB: usize = 24;

/// A vector of f32 lanes, for the shared tile body.
#[cfg(target_arch = "x86_64")]
/// Each method is called only from code compiled for the vector's
/// features; `load` and `store` touch `N` elements from `p`.
trait Lanes: Copy {
    /// Lanes per vector.
    const N: usize;
    /// All lanes 0.
    unsafe fn zero() -> Self;
    /// `N` elements from `p`, unaligned.
    unsafe fn load(p: *const f32) -> Self;
    /// `v` in every lane.
    unsafe fn splat(v: f32) -> Self;
    /// `a · b + c`, fused.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// The lanes to `p`, unaligned.
    unsafe fn store(self, p: *mut f32);
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use super::Lanes;
    use std::arch::x86_64::*;

    impl Lanes for __m512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: called from AVX-512 code only.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller passes 16 readable elements.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: as zero.
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: as zero.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller passes 16 writable elements.
            unsafe { _mm512_storeu_ps(p, self) }
        }
    }

    impl Lanes for __m256 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: called from AVX2 + FMA code only.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller passes 8 readable elements.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: as zero.
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: as zero.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller passes 8 writable elements.
            unsafe { _mm256_storeu_ps(p, self) }
        }
    }
}

/// # Safety
/// The CPU supports AVX512F; `t` as [`conv_rows`] builds it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512(t: &Tile) {
    // SAFETY: forwarded.
    unsafe { body::<std::arch::x86_64::__m512, 6, 4, AVX512_NB>(t) }
}

/// # Safety
/// The CPU supports AVX2 and FMA; `t` as [`conv_rows`] builds it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(t: &Tile) {
    // SAFETY: forwarded.
    unsafe { body::<std::arch::x86_64::__m256, 4, 3, AVX2_NB>(t) }
}

/// Every (wide block, R output channels) register tile of the part; the
/// wide blocks outer, so the input they read stays in L1 across channels.
///
/// # Safety
/// As [`conv_rows`]; `NB = C · V::N`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<V: Lanes, const R: usize, const C: usize, const NB: usize>(t: &Tile) {
    let wide = t.rows.len() * t.wp;
    let mut n0 = 0;
    while n0 < wide {
        let mut o = 0;
        while o < t.d.o {
            // SAFETY: forwarded; o < d.o.
            unsafe {
                match t.d.o - o {
                    1 => block::<V, 1, C, NB>(t, o, n0),
                    2 => block::<V, 2, C, NB>(t, o, n0),
                    3 if R > 3 => block::<V, 3, C, NB>(t, o, n0),
                    4 if R > 4 => block::<V, 4, C, NB>(t, o, n0),
                    5 if R > 5 => block::<V, 5, C, NB>(t, o, n0),
                    _ => block::<V, R, C, NB>(t, o, n0),
                }
            }
            o += R;
        }
        n0 += NB;
    }
}

/// Output channels `o..o + RR` at wide positions `n0..n0 + NB`: the
/// register tile, then its valid positions stored (bias added).
///
/// # Safety
/// As [`body`]; `o + RR <= d.o`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block<V: Lanes, const RR: usize, const C: usize, const NB: usize>(
    t: &Tile,
    o: usize,
    n0: usize,
) {
    let d = &t.d;
    let (taps, dh, dw) = (d.kh * d.kw, d.dilation[0] * t.wp, d.dilation[1]);
    // SAFETY: channel c's padded rows start at c·plane_in; wide position
    // n0 + NB - 1 plus the largest tap offset (kh-1)·dh + (kw-1)·dw is at
    // most plane_in + NB + (kw-1)·dw - 1 past it, which `fill_padded` made
    // part of the scratch for the last channel. Weight rows o..o+RR exist.
    unsafe {
        let mut acc = [[V::zero(); C]; RR];
        let wrow: [*const f32; RR] = std::array::from_fn(|r| t.w.add((o + r) * t.k));
        for c in 0..d.c {
            let xc = t.x.add(c * t.plane_in + n0);
            for i in 0..d.kh {
                for j in 0..d.kw {
                    let xp = xc.add(i * dh + j * dw);
                    let xs: [V; C] = std::array::from_fn(|v| V::load(xp.add(v * V::N)));
                    let tap = c * taps + i * d.kw + j;
                    for r in 0..RR {
                        let a = V::splat(*wrow[r].add(tap));
                        for v in 0..C {
                            acc[r][v] = V::fma(a, xs[v], acc[r][v]);
                        }
                    }
                }
            }
        }
        let mut lanes = [[0.0f32; NB]; RR];
        for (lane, row) in lanes.iter_mut().zip(&acc) {
            for (v, a) in row.iter().enumerate() {
                a.store(lane.as_mut_ptr().add(v * V::N));
            }
        }
        store(t, o, n0, &lanes);
    }
}

/// Writes the wide positions `n0..n0 + NB` of output channels `o..` that
/// fall on real outputs (column `< wo`, row in the part) into the planes.
///
/// # Safety
/// As [`block`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store<const RR: usize, const NB: usize>(
    t: &Tile,
    o: usize,
    n0: usize,
    lanes: &[[f32; NB]; RR],
) {
    let (wp, wo) = (t.wp, t.d.wo);
    let end = (n0 + NB).min(t.rows.len() * wp);
    let mut n = n0;
    while n < end {
        let (row, col) = (n / wp, n % wp);
        let run_end = (row * wp + wo).min(end);
        if col < wo {
            let len = run_end - n;
            for (r, lane) in lanes.iter().enumerate() {
                // SAFETY: row < rows.len() and col + len <= wo: an element of
                // this part's rows of plane o + r (the caller's contract).
                unsafe {
                    let dst = t
                        .out
                        .add((o + r) * t.plane + (t.rows.start + row) * wo + col);
                    let dst = std::slice::from_raw_parts_mut(dst, len);
                    let bias = t.bias.map_or(0.0, |b| *b.add(o + r));
                    let src = &lane[n - n0..][..len];
                    if t.acc {
                        dst.iter_mut().zip(src).for_each(|(y, s)| *y += s + bias);
                    } else {
                        dst.iter_mut().zip(src).for_each(|(y, s)| *y = s + bias);
                    }
                }
            }
        }
        n = (row + 1) * wp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector width this CPU has (AVX2 as well where it has
    /// AVX-512), on row tiles of one sample, against the sum in f64: short
    /// register tiles of channels (7 = 6 + 1 = 4 + 3), dilation,
    /// asymmetric padding, accumulating into the output.
    #[test]
    fn each_vector_width_matches_the_sum() {
        #[cfg(target_arch = "x86_64")]
        let levels: Vec<Level> = [
            (
                Level::Avx512,
                std::arch::is_x86_feature_detected!("avx512f"),
            ),
            (
                Level::Avx2,
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma"),
            ),
        ]
        .into_iter()
        .filter_map(|(l, has)| has.then_some(l))
        .collect();
        #[cfg(not(target_arch = "x86_64"))]
        let levels: Vec<Level> = Vec::new();
        let (c, h, w, o, kh, kw) = if cfg!(miri) {
            (2, 4, 5, 7, 2, 3)
        } else {
            (5, 9, 19, 7, 3, 2)
        };
        let (pt, pb, pl, pr, dil) = (2, 0, 1, 2, [2, 1]);
        let d = Direct {
            c,
            h,
            w,
            o,
            kh,
            kw,
            pad_top: pt,
            pad_left: pl,
            dilation: dil,
            ho: h + pt + pb - (kh - 1) * dil[0],
            wo: w + pl + pr - (kw - 1) * dil[1],
        };
        let value = |i: usize, m: usize| ((i * 37 + m) % 23) as f32 / 8.0 - 1.3;
        let x: Vec<f32> = (0..c * h * w).map(|i| value(i, 1)).collect();
        let wt: Vec<f32> = (0..o * c * kh * kw).map(|i| value(i, 5)).collect();
        let bias: Vec<f32> = (0..o).map(|i| value(i, 9)).collect();
        let before = |i: usize| value(i, 3);
        let plane = d.ho * d.wo;
        let want: Vec<f64> = (0..o * plane)
            .map(|i| {
                let (oc, y, xx) = (i / plane, i % plane / d.wo, i % d.wo);
                let mut s = f64::from(before(i)) + f64::from(bias[oc]);
                for ci in 0..c {
                    for (ki, kj) in (0..kh).flat_map(|a| (0..kw).map(move |b| (a, b))) {
                        let (yy, xs) = (y + ki * dil[0], xx + kj * dil[1]);
                        if yy < pt || yy - pt >= h || xs < pl || xs - pl >= w {
                            continue;
                        }
                        s += f64::from(x[(ci * h + yy - pt) * w + xs - pl])
                            * f64::from(wt[((oc * c + ci) * kh + ki) * kw + kj]);
                    }
                }
                s
            })
            .collect();
        for level in levels {
            let mut out: Vec<f32> = (0..o * plane).map(before).collect();
            let rows = 3;
            let mut pad = vec![f32::NAN; scratch_len(level, &d, rows)];
            for start in (0..d.ho).step_by(rows) {
                let part = start..(start + rows).min(d.ho);
                // SAFETY: the level was detected; `out` holds o planes.
                unsafe {
                    let out = out.as_mut_ptr();
                    conv_rows(
                        level,
                        &d,
                        &x,
                        &wt,
                        Some(&bias),
                        part,
                        out,
                        plane,
                        true,
                        &mut pad,
                    );
                }
            }
            for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(*g) - w).abs() < 1e-4,
                    "{level:?} at {i}: {g} != {w}"
                );
            }
        }
    }
}
