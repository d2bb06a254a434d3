//! `F.conv2d`: 2-D cross-correlation over `[N, C, H, W]` inputs with
//! stride, (asymmetric) zero padding, dilation and groups, as one op. The
//! CPU forward unfolds a tile of output rows of one sample's group at a
//! time into columns (im2col, `[C/g·kh·kw, rows·Wo]`, about 512 KB so the
//! GEMM reads them from L2) and multiplies them with the group's weight
//! (the GEMM kernel), the (sample, group, tile) parts split across the
//! helper pool; backward unfolds whole samples again (nothing but the input
//! and the weight is kept): `dW += dY·colsᵀ`,
//! `dX` folds `Wᵀ·dY` back (col2im), `db = Σ dY`. At stride 1 in f32 the
//! forward and `dX` skip the columns (`conv2d_direct.rs`). On the GPU the
//! op is composed of the gather, batched-matmul and scatter-add kernels.

use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::backend::cpu::gemm::{gemm, Gemm, Mat};
use crate::backend::Host;
use crate::error::{Error, Result};
use crate::tensor::{checked_numel, DType, Float, Tensor};

/// A 2-D convolution, inputs `[x, weight, bias]` (bias optional): `x` is
/// `[N, C, H, W]`, `weight` `[O, C/groups, kh, kw]`, `bias` `[O]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Steps between output positions (rows, columns).
    pub stride: [usize; 2],
    /// Zeros added before and after the rows, then the columns: `[top,
    /// bottom, left, right]`.
    pub padding: [usize; 4],
    /// Spacing between kernel taps (rows, columns).
    pub dilation: [usize; 2],
    /// Input and output channels split into this many independent groups.
    pub groups: usize,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// The sizes of one convolution: input, kernel and output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    groups: usize,
}

impl Geometry {
    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.groups
    }
    /// This geometry computing only the first `ho × wo` outputs (at most
    /// its own: the taps of the others are never read).
    pub(super) fn first_outputs(self, ho: usize, wo: usize) -> Self {
        debug_assert!(ho <= self.ho && wo <= self.wo);
        Self { ho, wo, ..self }
    }
    /// Rows of a group's column matrix (`C/g·kh·kw`).
    fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Output positions per channel.
    fn positions(&self) -> usize {
        self.ho * self.wo
    }
}

impl Conv2d {
    /// `conv1d` when the weight is 3-D (a row of one: `[N, C, L]` inputs),
    /// `conv2d` otherwise.
    fn name(w: &Tensor) -> &'static str {
        if w.ndim() == 3 {
            "conv1d"
        } else {
            "conv2d"
        }
    }

    fn geometry(&self, x: &Tensor, w: &Tensor) -> Result<Geometry> {
        self.geometry_of(x.shape(), w.shape())
    }

    /// [`geometry`](Self::geometry) from the input's and weight's shapes.
    pub(crate) fn geometry_of(&self, xs: &[usize], ws: &[usize]) -> Result<Geometry> {
        let op = if ws.len() == 3 { "conv1d" } else { "conv2d" };
        let err = |msg: String| Err(Error::shape(op, msg));
        // The 1-D form is the 2-D one on a single row.
        let rank = if ws.len() == 3 { 3 } else { 4 };
        if xs.len() != rank {
            return err(format!(
                "expected a {rank}-D input {}, got shape {:?}; add a batch dim with \
                 .unsqueeze(0)",
                if rank == 3 {
                    "[N, C, L]"
                } else {
                    "[N, C, H, W]"
                },
                xs
            ));
        }
        if ws.len() != 4 && ws.len() != 3 {
            return err(format!(
                "the weight must be 4-D [out_channels, in_channels/groups, kh, kw] (3-D for \
                 conv1d), got shape {:?}",
                ws
            ));
        }
        if rank == 3
            && (self.stride[0] != 1 || self.dilation[0] != 1 || self.padding[..2] != [0, 0])
        {
            return err(format!(
                "a 1-D convolution has one row: its row stride {}, dilation {} and padding \
                 {:?} must be 1, 1 and 0",
                self.stride[0],
                self.dilation[0],
                &self.padding[..2]
            ));
        }
        let s4 = |s: &[usize]| -> [usize; 4] {
            if s.len() == 3 {
                [s[0], s[1], 1, s[2]]
            } else {
                [s[0], s[1], s[2], s[3]]
            }
        };
        let ([n, c, h, wd], [o, cg, kh, kw]) = (s4(xs), s4(ws));
        let g = self.groups;
        if g == 0 || c % g != 0 || o % g != 0 || cg * g != c {
            return err(format!(
                "Given groups={g}, weight of size {:?}, expected input{:?} to have {} channels, \
                 but got {c} channels instead (in_channels and out_channels must both be \
                 divisible by groups)",
                ws,
                xs,
                cg * g
            ));
        }
        if self.stride.contains(&0) || self.dilation.contains(&0) {
            return err(format!(
                "stride {:?} and dilation {:?} must be positive",
                self.stride, self.dilation
            ));
        }
        let [pt, pb, pl, pr] = self.padding;
        let span = |k: usize, d: usize| d * (k.max(1) - 1) + 1;
        let (hp, wp) = (h + pt + pb, wd + pl + pr);
        if kh == 0 || kw == 0 || hp < span(kh, self.dilation[0]) || wp < span(kw, self.dilation[1])
        {
            return err(format!(
                "Calculated padded input size per channel: ({hp} x {wp}). Kernel size: \
                 ({} x {}) (with dilation {:?}). Kernel size can't be greater than actual \
                 input size; pad the input or use a smaller kernel",
                span(kh, self.dilation[0]),
                span(kw, self.dilation[1]),
                self.dilation
            ));
        }
        let ho = (hp - span(kh, self.dilation[0])) / self.stride[0] + 1;
        let wo = (wp - span(kw, self.dilation[1])) / self.stride[1] + 1;
        Ok(Geometry {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            ho,
            wo,
            groups: g,
        })
    }

    /// Fills `col` (`[C/g·kh·kw, Ho·Wo]`, row-major) with group `grp` of the
    /// sample `xs` (`[C, H, W]`, contiguous), zeros where the taps fall in
    /// the padding.
    fn im2col<T: Float>(&self, g: &Geometry, xs: &[T], grp: usize, col: &mut [T]) {
        self.im2col_rows(g, xs, grp, 0..g.ho, col)
    }

    /// [`im2col`](Self::im2col) for the output rows `rows` only: `col` is
    /// `[C/g·kh·kw, rows.len()·Wo]`, one tile of the full column matrix.
    fn im2col_rows<T: Float>(
        &self,
        g: &Geometry,
        xs: &[T],
        grp: usize,
        rows: std::ops::Range<usize>,
        col: &mut [T],
    ) {
        let [pt, _, pl, _] = self.padding;
        let (s, d) = (self.stride, self.dilation);
        let width = rows.len() * g.wo;
        let mut row = 0;
        for ci in grp * g.cg()..(grp + 1) * g.cg() {
            let plane = &xs[ci * g.h * g.w..][..g.h * g.w];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let dst = &mut col[row * width..][..width];
                    let cols = inside(g.wo, g.w, s[1], j * d[1], pl);
                    let x0 = (cols.start * s[1] + j * d[1]).wrapping_sub(pl);
                    if s == [1, 1] && g.wo == g.w && !cols.is_empty() {
                        // Output rows as wide as input rows, both strides 1:
                        // the tap's lines inside the input are one shifted
                        // run of the plane, copied at once, then the columns
                        // that read the padding zeroed.
                        // Lines `ra..rb` of the tile read input rows
                        // `y = oy + shift - pt` inside `0..h`.
                        let shift = (i * d[0]) as isize;
                        let (first, end) = (rows.start as isize, rows.end as isize);
                        let lo = (pt as isize - shift).max(first);
                        let hi = ((g.h + pt) as isize - shift).min(end);
                        let (ra, rb) = if hi > lo {
                            ((lo - first) as usize, (hi - first) as usize)
                        } else {
                            (0, 0)
                        };
                        dst[..ra * g.wo].fill(T::ZERO);
                        dst[rb * g.wo..].fill(T::ZERO);
                        if ra < rb {
                            let y0 = (lo + shift) as usize - pt;
                            let len = (rb - ra - 1) * g.wo + cols.len();
                            dst[ra * g.wo + cols.start..][..len]
                                .copy_from_slice(&plane[y0 * g.w + x0..][..len]);
                            for line in dst[ra * g.wo..rb * g.wo].chunks_exact_mut(g.wo) {
                                line[..cols.start].fill(T::ZERO);
                                line[cols.end..].fill(T::ZERO);
                            }
                        }
                        row += 1;
                        continue;
                    }
                    for (r, oy) in rows.clone().enumerate() {
                        let y = (oy * s[0] + i * d[0]) as isize - pt as isize;
                        let line = &mut dst[r * g.wo..][..g.wo];
                        if y < 0 || y >= g.h as isize {
                            line.fill(T::ZERO);
                            continue;
                        }
                        let src = &plane[y as usize * g.w..][..g.w];
                        line[..cols.start].fill(T::ZERO);
                        line[cols.end..].fill(T::ZERO);
                        let line = &mut line[cols.clone()];
                        if line.is_empty() {
                            // The tap is in the padding for every column
                            // (`x0` may then lie past the row).
                            continue;
                        }
                        if s[1] == 1 {
                            line.copy_from_slice(&src[x0..][..line.len()]);
                        } else {
                            for (k, v) in line.iter_mut().enumerate() {
                                *v = src[x0 + k * s[1]];
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }

    /// Adds the columns `col` back into group `grp` of the sample gradient
    /// `dxs` (`[C, H, W]`): im2col's adjoint.
    fn col2im<T: Float>(&self, g: &Geometry, col: &[T], grp: usize, dxs: &mut [T]) {
        let [pt, _, pl, _] = self.padding;
        let (s, d) = (self.stride, self.dilation);
        let mut row = 0;
        for ci in grp * g.cg()..(grp + 1) * g.cg() {
            let plane = &mut dxs[ci * g.h * g.w..][..g.h * g.w];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let src = &col[row * g.positions()..][..g.positions()];
                    let cols = inside(g.wo, g.w, s[1], j * d[1], pl);
                    let x0 = (cols.start * s[1] + j * d[1]).wrapping_sub(pl);
                    for oy in 0..g.ho {
                        let y = (oy * s[0] + i * d[0]) as isize - pt as isize;
                        if y < 0 || y >= g.h as isize {
                            continue;
                        }
                        let line = &mut plane[y as usize * g.w..][..g.w];
                        let taps = &src[oy * g.wo..][cols.clone()];
                        if taps.is_empty() {
                            continue;
                        }
                        if s[1] == 1 {
                            for (l, &v) in line[x0..][..taps.len()].iter_mut().zip(taps) {
                                *l += v;
                            }
                        } else {
                            for (k, &v) in taps.iter().enumerate() {
                                line[x0 + k * s[1]] += v;
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}

/// The output columns `ox < wo` whose tap `ox·s + off − pad` falls inside
/// a row of `w` elements (the rest read the padding): one range, so the
/// copy between its ends has no per-element test.
fn inside(wo: usize, w: usize, s: usize, off: usize, pad: usize) -> std::ops::Range<usize> {
    let lo = pad.saturating_sub(off).div_ceil(s);
    let hi = if w + pad > off {
        ((w + pad - off - 1) / s + 1).min(wo)
    } else {
        0
    };
    lo.min(hi)..hi
}

impl Op for Conv2d {
    const NAME: &'static str = "ConvolutionBackward";
    const OP: &'static str = "conv2d";
    /// The input and the weight.
    type Saved = (Tensor, Tensor);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (input, w) = (x[0], x[1]);
        let g = self.geometry(input, w)?;
        let dtype = w.dtype();
        if !dtype.is_float() || input.dtype() != dtype {
            return Err(Error::dtype(
                Self::name(w),
                format!(
                    "expected a float input and weight of one dtype, got {} and {}; convert \
                     the input with .to_dtype(DType::{dtype:?})",
                    input.dtype(),
                    dtype
                ),
            ));
        }
        if let Some(b) = x.get(2)
            && (b.shape() != [g.o] || b.dtype() != dtype)
        {
            return Err(Error::shape(
                Self::name(w),
                format!(
                    "the bias must be a {dtype} tensor of shape [{}], got a {} tensor of shape \
                     {:?}",
                    g.o,
                    b.dtype(),
                    b.shape()
                ),
            ));
        }
        for t in &x[1..] {
            crate::ops::same_device(Self::name(w), input, t)?;
        }
        let shape = if w.ndim() == 3 {
            crate::autograd::Shape::from_slice(&[g.n, g.o, g.wo])
        } else {
            crate::autograd::Shape::from_slice(&[g.n, g.o, g.ho, g.wo])
        };
        checked_numel(Self::name(w), &shape)?;
        Ok(Spec {
            shape,
            dtype,
            device: input.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (input, w, b) = (x[0], x[1], x.get(2).copied());
        let geo = self.geometry(input, w).expect("checked by spec");
        if input.device().is_cuda() {
            let y = super::composed::conv2d_forward(self, &geo_dims(&geo), input, w, b);
            return out.set(y.reshape(out.spec().shape.as_slice()));
        }
        let (xc, wc) = (input.contiguous(), w.contiguous());
        let bc = b.map(Tensor::contiguous);
        match w.dtype() {
            DType::F32 => forward_cpu::<f32>(self, &geo, &xc, &wc, bc.as_ref(), out),
            _ => forward_cpu::<f64>(self, &geo, &xc, &wc, bc.as_ref(), out),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].clone())
    }

    fn backward(&self, (x, w): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let geo = self.geometry(x, w).expect("checked by spec");
        if x.device().is_cuda() {
            return super::composed::conv2d_backward(self, &geo_dims(&geo), x, w, g, grads);
        }
        let (x, w, g) = (x.contiguous(), w.contiguous(), g.contiguous());
        let spec = |shape: &[usize]| Spec::shaped(shape, &g);
        macro_rules! run {
            ($t:ty) => {{
                if grads[0].needed() {
                    grads[0].add_into(spec(x.shape()), |out| {
                        input_grad::<$t>(self, &geo, &w, &g, None, out)
                    });
                }
                if grads[1].needed() {
                    grads[1].add_into(spec(w.shape()), |out| {
                        weight_grad::<$t>(self, &geo, &x, &g, out)
                    });
                }
                if grads.get(2).is_some_and(|s| s.needed()) {
                    grads[2].add_into(spec(&[geo.o]), |out| {
                        bias_grad::<$t>(geo.o, geo.positions(), &g, out)
                    });
                }
            }};
        }
        match g.dtype() {
            DType::F32 => run!(f32),
            _ => run!(f64),
        }
    }
}

/// The sizes the composed (GPU) path needs.
pub(crate) fn geo_dims(g: &Geometry) -> super::composed::Dims {
    super::composed::Dims {
        n: g.n,
        c: g.c,
        h: g.h,
        w: g.w,
        o: g.o,
        kh: g.kh,
        kw: g.kw,
        ho: g.ho,
        wo: g.wo,
        groups: g.groups,
    }
}

/// The elements a contiguous tensor views, from its buffer.
fn elems<'b, T: Host>(b: &'b crate::backend::Buffer, t: &Tensor) -> &'b [T] {
    &T::of(b)[t.layout().offset..][..t.numel()]
}

/// Runs `f(sample, its output slice)` for every sample, split across the
/// helper pool (each sample's output is its own); allocates nothing.
fn per_sample<T: Send>(out: &mut [T], per: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let n = out.len().checked_div(per).unwrap_or(0);
    let base = crate::backend::cpu::SharedPtr::new(out.as_mut_ptr());
    crate::backend::cpu::par_parts(n, |i| {
        // SAFETY: sample i's range `i·per..(i + 1)·per` lies inside `out`
        // (n·per <= out.len()), and no other part touches it.
        let part = unsafe { std::slice::from_raw_parts_mut(base.get().add(i * per), per) };
        f(i, part)
    });
}

/// The element types with a per-thread column scratch: the buffer grows to
/// the largest convolution seen and is reused, so a steady-state training
/// step allocates nothing for it.
pub(crate) trait ColScratch: Sized + Copy {
    /// Runs `f` on a scratch slice of `len` elements (its contents are
    /// whatever the last user left).
    fn with_col<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! col_scratch {
    ($t:ty) => {
        impl ColScratch for $t {
            fn with_col<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static COL: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                COL.with(|c| match c.try_borrow_mut() {
                    Ok(mut v) => {
                        if v.len() < len {
                            v.resize(len, 0.0);
                        }
                        f(&mut v[..len])
                    }
                    // Re-entered on this thread (work stealing inside a
                    // kernel): a buffer of its own.
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }
        }
    };
}
col_scratch!(f32);
col_scratch!(f64);

/// Elements of one forward tile's column matrix: about 512 KB of f32, so
/// the tile im2col writes is still in the core's L2 cache when the GEMM
/// reads it (a whole sample's columns, 7 MB for W6b, went out to memory
/// and back). Small under Miri, so its test crosses tile boundaries (but
/// not tiny: each tile is a GEMM call, slow there).
const TILE_ELEMS: usize = if cfg!(miri) { 512 } else { 1 << 17 };

/// Output rows per forward tile: as many whole rows as fit
/// [`TILE_ELEMS`], at least one; fewer where that would leave some of the
/// `width` threads without a part (a batch-1 input with deep channels on
/// a small map is one tile, which ran on one thread).
fn tile_rows(g: &Geometry, width: usize) -> usize {
    let fit = (TILE_ELEMS / (g.k() * g.wo).max(1)).clamp(1, g.ho.max(1));
    rows_per_tile(fit, g.ho, g.n * g.groups, width)
}

/// `fit` rows a tile, or fewer so that `blocks` blocks of `rows` output rows
/// give each of `width` threads a part (at least a row a tile).
fn rows_per_tile(fit: usize, rows: usize, blocks: usize, width: usize) -> usize {
    let tiles_wanted = width.div_ceil(blocks.max(1));
    fit.min(rows.div_ceil(tiles_wanted).max(1))
}

pub(crate) fn forward_cpu<T: Float + Host + Gemm + ColScratch + Send + Sync>(
    op: &Conv2d,
    geo: &Geometry,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out: &mut Out<'_>,
) {
    let g = *geo;
    let inputs = [x, w, b.unwrap_or(w)];
    out.host_slice::<T, 3>(inputs, |[xb, wb, bb], o, acc| {
        let (xs, ws) = (elems::<T>(xb, x), elems::<T>(wb, w));
        let bs = b.map(|b| elems::<T>(bb, b));
        let (sample_in, positions) = (g.c * g.h * g.w, g.positions());
        let block = g.og() * positions;
        assert_eq!(o.len(), g.n * g.groups * block, "conv2d: output size");
        if let Some((level, d)) = direct::forward_plan::<T>(op, &g) {
            let (xs, ws, bs) = (as_f32(xs), as_f32(ws), bs.map(as_f32));
            return direct::run(level, &d, g.n, g.groups, xs, ws, bs, as_f32_mut(o), acc);
        }
        // Parts are (sample, group, tile of output rows): each writes the
        // columns of its rows in its group's `og` output planes, disjoint
        // from every other part's.
        let rows = tile_rows(&g, crate::backend::cpu::pool::par_width());
        let tiles = g.ho.div_ceil(rows);
        let parts = g.n * g.groups * tiles;
        let base = crate::backend::cpu::SharedPtr::new(o.as_mut_ptr());
        crate::backend::cpu::par_parts(parts, |p| {
            let (ng, tile) = (p / tiles, p % tiles);
            let (n, grp) = (ng / g.groups, ng % g.groups);
            let oy = tile * rows..((tile + 1) * rows).min(g.ho);
            let (first, width) = (oy.start * g.wo, oy.len() * g.wo);
            // Block `ng` of `o` is `ng·block..(ng + 1)·block` (ng < n·groups,
            // o.len() checked above); within it this part touches columns
            // `first..first + width` of each of its `og` planes only.
            let plane_ptr = |oc: usize| {
                debug_assert!(oc < g.og() && first + width <= positions);
                // SAFETY: inside `o` (above).
                unsafe { base.get().add(ng * block + oc * positions + first) }
            };
            let mut add = acc;
            if let Some(bs) = bs {
                for oc in 0..g.og() {
                    let bias = bs[grp * g.og() + oc];
                    // SAFETY: this part's columns of plane `oc` (above).
                    let line = unsafe { std::slice::from_raw_parts_mut(plane_ptr(oc), width) };
                    line.iter_mut()
                        .for_each(|v| *v = if add { *v + bias } else { bias });
                }
                add = true;
            }
            if g.og() == 0 || width == 0 {
                return;
            }
            T::with_col(g.k() * width, |col| {
                let xs = &xs[n * sample_in..][..sample_in];
                op.im2col_rows(&g, xs, grp, oy.clone(), col);
                let wm = Mat::new(ws, grp * g.og() * g.k(), g.k(), 1);
                let cm = Mat::new(col, 0, width, 1);
                wm.assert_within("conv2d", g.og(), g.k());
                cm.assert_within("conv2d", g.k(), width);
                // SAFETY: the operands lie in live slices (checked above);
                // the og x width output block, row stride `positions`, is
                // this part's columns of its planes (above).
                unsafe { T::gemm(g.og(), width, g.k(), wm, cm, plane_ptr(0), positions, add) };
            })
        });
    });
}

/// `s` as the f32 slice it is.
fn as_f32<T: Float>(s: &[T]) -> &[f32] {
    assert!(T::DTYPE == DType::F32, "conv2d: internal error: not f32");
    // SAFETY: T is f32 (its dtype says so): same size, alignment and bits.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) }
}

/// [`as_f32`], mutable.
fn as_f32_mut<T: Float>(s: &mut [T]) -> &mut [f32] {
    assert!(T::DTYPE == DType::F32, "conv2d: internal error: not f32");
    // SAFETY: as as_f32.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) }
}

/// `dx (+)= fold(Wᵀ·dY) (+ bias per channel)`, sample by sample (the bias:
/// the transposed convolution's, whose forward this is).
pub(crate) fn input_grad<T: Float + Host + Gemm + ColScratch + Send + Sync>(
    op: &Conv2d,
    geo: &Geometry,
    w: &Tensor,
    dy: &Tensor,
    bias: Option<&Tensor>,
    out: &mut Out<'_>,
) {
    let g = *geo;
    out.host_slice::<T, 3>([w, dy, bias.unwrap_or(w)], |[wb, gb, bb], o, acc| {
        let (ws, gs) = (elems::<T>(wb, w), elems::<T>(gb, dy));
        let bs = bias.map(|b| elems::<T>(bb, b));
        if let Some((level, d)) = direct::input_grad_plan::<T>(op, &g) {
            let (ws, gs, bs) = (as_f32(ws), as_f32(gs), bs.map(as_f32));
            return direct::with_flipped(&g, ws, |wf| {
                direct::run(level, &d, g.n, g.groups, gs, wf, bs, as_f32_mut(o), acc)
            });
        }
        let sample_in = g.c * g.h * g.w;
        let sample_out = g.o * g.positions();
        per_sample(o, sample_in, |n, dx| {
            match bs {
                Some(bs) => {
                    for (plane, &b) in dx.chunks_exact_mut((g.h * g.w).max(1)).zip(bs) {
                        plane
                            .iter_mut()
                            .for_each(|v| *v = if acc { *v + b } else { b });
                    }
                }
                None if !acc => dx.iter_mut().for_each(|v| *v = T::ZERO),
                None => {}
            }
            let gy = &gs[n * sample_out..][..sample_out];
            T::with_col(g.k() * g.positions(), |col| {
                for grp in 0..g.groups {
                    let wm = Mat::new(ws, grp * g.og() * g.k(), g.k(), 1).t();
                    let gm = Mat::new(gy, grp * g.og() * g.positions(), g.positions(), 1);
                    // SAFETY: views of live slices (bounds checked by gemm); `col`
                    // is k x positions and ours.
                    unsafe {
                        gemm(
                            "conv2d backward (input)",
                            g.k(),
                            g.positions(),
                            g.og(),
                            wm,
                            gm,
                            col,
                            false,
                        )
                    };
                    op.col2im(&g, col, grp, dx);
                }
            });
        });
    });
}

/// `dW (+)= Σ_n dY·colsᵀ`.
pub(crate) fn weight_grad<T: Float + Host + Gemm + ColScratch + Send + Sync>(
    op: &Conv2d,
    geo: &Geometry,
    x: &Tensor,
    dy: &Tensor,
    out: &mut Out<'_>,
) {
    let g = *geo;
    out.host_slice::<T, 2>([x, dy], |[xb, gb], o, acc| {
        let (xs, gs) = (elems::<T>(xb, x), elems::<T>(gb, dy));
        let sample_in = g.c * g.h * g.w;
        let sample_out = g.o * g.positions();
        T::with_col(g.k() * g.positions(), |col| {
            let mut add = acc;
            for n in 0..g.n {
                let xs = &xs[n * sample_in..][..sample_in];
                for grp in 0..g.groups {
                    op.im2col(&g, xs, grp, col);
                    let gm = Mat::new(
                        gs,
                        n * sample_out + grp * g.og() * g.positions(),
                        g.positions(),
                        1,
                    );
                    let cm = Mat::new(col, 0, g.positions(), 1).t();
                    let dw = &mut o[grp * g.og() * g.k()..][..g.og() * g.k()];
                    // SAFETY: views of live slices (bounds checked by gemm); `dw`
                    // is og x k and ours.
                    unsafe {
                        gemm(
                            "conv2d backward (weight)",
                            g.og(),
                            g.k(),
                            g.positions(),
                            gm,
                            cm,
                            dw,
                            add,
                        )
                    };
                }
                add = true;
            }
        });
        if g.n == 0 && !acc {
            o.iter_mut().for_each(|v| *v = T::ZERO);
        }
    });
}

/// `db (+)= Σ_{n, y, x} dY` for a `dY` of `channels` planes of `plane`
/// elements per sample.
pub(crate) fn bias_grad<T: Float + Host>(
    channels: usize,
    plane: usize,
    dy: &Tensor,
    out: &mut Out<'_>,
) {
    out.host_slice::<T, 1>([dy], |[gb], o, acc| {
        let gs = elems::<T>(gb, dy);
        if !acc {
            o.iter_mut().for_each(|v| *v = T::ZERO);
        }
        for sample in gs.chunks_exact((channels * plane).max(1)) {
            for (oc, plane) in sample.chunks_exact(plane.max(1)).enumerate() {
                o[oc] += plane.iter().fold(T::ZERO, |a, &v| a + v);
            }
        }
    });
}

#[path = "conv2d_direct.rs"]
mod direct;
#[cfg(test)]
#[path = "conv2d_tests.rs"]
mod tests;
